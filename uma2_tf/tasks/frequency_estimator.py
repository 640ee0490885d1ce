"""Streaming item-frequency estimation (Yi et al., RecSys 2019, Algorithm 2) as a Keras layer.

    estimator = StreamingFrequencyEstimator()        # inside strategy.scope() when distributed
    estimator.update(item_ids)                       # once per training step, any-shape int64 ids
    p = estimator.probability(item_ids)              # p̂(y): P(y appears in one global batch)
    p = estimator(item_ids, training=True)           # the two at once (update, then probability)

Typical use is the log-Q correction of in-batch softmax: logits - log(p̂(y)).

Under MirroredStrategy / MultiWorkerMirroredStrategy each replica all-gathers the ids of every
replica and applies the identical update of the global batch, so the step counter counts global
steps and p̂ is per global batch, the same as one device fed the whole batch. Under
ParameterServerStrategy (one replica per worker, variables on the ps) each worker updates the
shared variables asynchronously with its own batch and t counts every worker's steps: the paper's
own setup, where p̂ is per worker batch.
"""
from __future__ import annotations

import uma2_tf  # noqa: F401

import tensorflow as tf
import tf_keras as keras


class StreamingFrequencyEstimator(keras.layers.Layer):
  """Estimates how often each item appears in a batch from the gap between its appearances.

  For every distinct hash bucket b = y mod H hit by the batch at global step t (counted from 1):

      Bgap[b] <- (1 - alpha) * Bgap[b] + alpha * (t - A[b]);   A[b] <- t

  and p̂(y) = 1 / Bgap[h(y)]. Ids repeated in a batch (or distinct ids sharing a bucket) count once:
  p̂ is the probability that the bucket is hit by one batch, not a count per batch.

  Args:
    hash_size: H, the number of buckets. Ids are dense non-negative ints; ids below H get a bucket
      each, larger ones share buckets (y mod H). 2**20 buckets take 12 MB (an int64 and a float32
      per bucket).
    alpha: the learning rate of the moving average of the gap; the paper's 0.01 averages about the
      last 1 / alpha = 100 appearances of an item: smaller is smoother but adapts more slowly.
    initial_gap: Bgap before an item is seen, so p̂ = 1 / initial_gap for unseen items. A bucket's
      first hit at step t averages it with t (A starts at 0).
  """

  def __init__(self, hash_size: int = 2**20, alpha: float = 0.01, initial_gap: float = 100.0,
               **kwargs):
    if hash_size < 1:
      raise ValueError(f"hash_size must be >= 1, got {hash_size}")
    if not 0.0 < alpha <= 1.0:
      raise ValueError(f"alpha must be in (0, 1], got {alpha}")
    if initial_gap <= 0.0:
      raise ValueError(f"initial_gap must be > 0, got {initial_gap}")
    # The estimates are float32 under a mixed global policy too.
    kwargs.setdefault("dtype", "float32")
    kwargs.setdefault("trainable", False)
    super().__init__(**kwargs)
    self.hash_size = int(hash_size)
    self.alpha = float(alpha)
    self.initial_gap = float(initial_gap)
    # Every replica computes the same update from the global batch; ONLY_FIRST_REPLICA broadcasts
    # the first replica's to every copy (and every worker's), so the copies cannot drift apart.
    sync = dict(trainable=False, synchronization=tf.VariableSynchronization.ON_WRITE,
                aggregation=tf.VariableAggregation.ONLY_FIRST_REPLICA)
    self.last_step = self.add_weight(name="last_step", shape=[self.hash_size], dtype=tf.int64,
                                     initializer="zeros", **sync)
    self.gap = self.add_weight(name="gap", shape=[self.hash_size], dtype=tf.float32,
                               initializer=keras.initializers.Constant(self.initial_gap), **sync)
    self.step = self.add_weight(name="step", shape=[], dtype=tf.int64, initializer="zeros", **sync)

  def _buckets(self, item_ids):
    return tf.math.floormod(tf.cast(item_ids, tf.int64), self.hash_size)

  def update(self, item_ids):
    """Counts one (global) step in which `item_ids` (int, any shape, may be empty) appeared.

    In a replica context of more than one replica, `item_ids` are the replica's share of the
    global batch: they are all-gathered first. Returns the update op of `step` (None eagerly).
    """
    ids = tf.reshape(self._buckets(item_ids), [-1])
    context = tf.distribute.get_replica_context()
    if context is not None and context.num_replicas_in_sync > 1:
      # Shares of different sizes are fine (all_gather concatenates them), but gathering only empty
      # shares crashes MultiWorkerMirrored's collectives (TF 2.20): each adds a -1, dropped after.
      ids = context.all_gather(tf.concat([ids, tf.constant([-1], tf.int64)], 0), axis=0)
      ids = tf.boolean_mask(ids, ids >= 0)
    buckets, _ = tf.unique(ids)  # one update per bucket: scatters without duplicate indices
    t = tf.identity(self.step) + 1
    gap = tf.gather(self.gap, buckets)
    seen = tf.cast(t - tf.gather(self.last_step, buckets), tf.float32)
    new_gap = (1.0 - self.alpha) * gap + self.alpha * seen
    self.gap.scatter_update(tf.IndexedSlices(new_gap, buckets))
    self.last_step.scatter_update(tf.IndexedSlices(tf.fill(tf.shape(buckets), t), buckets))
    return self.step.assign(t, read_value=False)

  def probability(self, item_ids):
    """p̂(y) = 1 / Bgap[y mod H]: float32 of the shape of `item_ids`."""
    return 1.0 / tf.gather(self.gap, self._buckets(item_ids))

  def call(self, item_ids, training=None):
    """`update(item_ids)` if `training` (a Python bool), then `probability(item_ids)`."""
    if training:
      with tf.control_dependencies([self.update(item_ids)]):
        return self.probability(item_ids)
    return self.probability(item_ids)

  def get_config(self):
    config = super().get_config()
    config.update(hash_size=self.hash_size, alpha=self.alpha, initial_gap=self.initial_gap)
    return config

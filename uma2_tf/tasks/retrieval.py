"""The softmax over shared candidates (in-batch, mixed) as a task, through `tfrs.tasks.Retrieval`.

    task = InBatchSoftmaxTask(SoftmaxConfig(logq="counts"), num_items, catalog.click_count)
    loss = task(query, candidates, candidate_ids, training=True)   # query [B, d], candidates [C, d]

Candidates are the batch's B positives (row i is query i's positive) followed by any extra ones
shared by the batch (mixed negative sampling: B' uniform corpus items). TFRS computes the logits
query·candidateᵀ / temperature, subtracts log Q_j from every column (logQ correction), masks the
other columns holding query i's own positive item (accidental hits, by id) and takes the softmax
cross-entropy, summed over the batch; this task divides the sum by the global batch, like
`UMA2Task`.

Q_j, the probability that one candidate slot holds item j, comes from `logq`:

- `none`: no correction (the in-batch softmax over-penalises popular items);
- `counts`: q_j = c_j / Σc from the catalog's training clicks (the chance a positive is item j);
- `streaming`: Yi et al.'s estimate p̂_j of the chance item j appears in a (global) batch,
  updated every training step (`frequency_estimator`), turned into a per-slot q_j =
  1 − (1 − p̂_j)^(1/B_global);
- with B' extra uniform candidates (mixed): Q*_j = (B·q_j + B'/N) / (B + B'), N the corpus size.

A constant factor on Q cancels in the softmax, so only the shape of q matters in-batch; the mix
needs q per slot.
"""
from __future__ import annotations

import uma2_tf  # noqa: F401

import dataclasses

import numpy as np
import tensorflow as tf
import tensorflow_recommenders as tfrs
import tf_keras as keras

from uma2_tf.tasks.frequency_estimator import StreamingFrequencyEstimator

LOGQ = ("none", "counts", "streaming")


@dataclasses.dataclass(frozen=True)
class SoftmaxConfig:
  """The in-batch / mixed softmax (used by `--negatives=in_batch|mixed`, ignored otherwise).

  Attributes:
    logq: the sampling-bias correction: `none`, `counts` (training clicks) or `streaming`
      (Yi et al.'s streaming frequency estimator, saved in checkpoints).
    temperature: logits are divided by it.
    remove_accidental_hits: mask the other candidates that are the query's own positive item.
    estimator_hash_size: buckets of the streaming estimator (item id mod size; no collision while
      the corpus is smaller).
    estimator_alpha: the streaming estimator's learning rate (the paper's 0.01).
    estimator_initial_gap: the step gap an item starts with before it is first seen.
  """

  logq: str = "counts"
  temperature: float = 1.0
  remove_accidental_hits: bool = True
  estimator_hash_size: int = 2 ** 20
  estimator_alpha: float = 0.01
  estimator_initial_gap: float = 100.0

  def __post_init__(self):
    if self.logq not in LOGQ:
      raise ValueError(f"logq must be one of {LOGQ}, got {self.logq!r}")
    if not self.temperature > 0:
      raise ValueError(f"temperature must be > 0, got {self.temperature}")
    if self.estimator_hash_size < 1:
      raise ValueError(f"estimator_hash_size must be >= 1, got {self.estimator_hash_size}")
    if not 0 < self.estimator_alpha <= 1:
      raise ValueError(f"estimator_alpha must be in (0, 1], got {self.estimator_alpha}")
    if not self.estimator_initial_gap >= 1:
      raise ValueError(f"estimator_initial_gap must be >= 1, got {self.estimator_initial_gap}")


class InBatchSoftmaxTask(keras.layers.Layer):
  """The in-batch (or mixed) softmax loss with logQ correction; a metric `loss_softmax`.

  Args:
    config: a `SoftmaxConfig`.
    num_items: the id vocabulary size (ids 1..num_items-1 are items).
    click_count: int[num_items] training clicks (needed by `logq="counts"`).
  """

  in_batch = True
  needs_nsdn = False

  def __init__(self, config: SoftmaxConfig = SoftmaxConfig(), num_items: int = 0,
               click_count=None, **kwargs):
    kwargs.setdefault("dtype", "float32")  # The loss stays float32 under mixed precision.
    super().__init__(**kwargs)
    self.config = config
    self.num_items = int(num_items)
    self.retrieval = tfrs.tasks.Retrieval(
        loss=keras.losses.CategoricalCrossentropy(from_logits=True,
                                                  reduction=keras.losses.Reduction.SUM),
        temperature=config.temperature, remove_accidental_hits=config.remove_accidental_hits)
    self.loss_metric = keras.metrics.Mean(name="loss_softmax")
    self.frequencies = self.estimator = None
    if config.logq == "counts":
      counts = np.asarray(click_count, np.float64)
      if counts.shape != (self.num_items,) or counts.sum() <= 0:
        raise ValueError("logq=counts needs the training click counts, one per item id, not all 0")
      self.frequencies = tf.constant(counts / counts.sum(), tf.float32)
    elif config.logq == "streaming":
      self.estimator = StreamingFrequencyEstimator(
          hash_size=config.estimator_hash_size, alpha=config.estimator_alpha,
          initial_gap=config.estimator_initial_gap, name="frequency_estimator")

  def slot_probabilities(self, candidate_ids, num_positives, training: bool = False):
    """Q_j of every candidate [C] (None without logQ); with `training`, the streaming estimator
    first counts the batch's positives."""
    if self.config.logq == "none":
      return None
    if self.estimator is not None:
      replicas = tf.distribute.get_strategy().num_replicas_in_sync
      if training:
        self.estimator.update(candidate_ids[:num_positives])
      p_batch = tf.clip_by_value(self.estimator.probability(candidate_ids), 0.0, 1.0)
      global_batch = tf.cast(num_positives * replicas, tf.float32)
      q = 1.0 - tf.pow(1.0 - p_batch, 1.0 / global_batch)
    else:
      q = tf.gather(self.frequencies, candidate_ids)
    num_extra = tf.shape(candidate_ids)[0] - num_positives
    b, b_extra = tf.cast(num_positives, tf.float32), tf.cast(num_extra, tf.float32)
    uniform = 1.0 / float(self.num_items - 1)
    return tf.stop_gradient((b * q + b_extra * uniform) / (b + b_extra))

  def call(self, query, candidates, candidate_ids, training: bool = False):
    """The loss averaged over the global batch's positives.

    Args:
      query: [B, d] one vector per positive.
      candidates: [C, d], C >= B; rows 0..B-1 the positives, then the shared extra candidates.
      candidate_ids: int64 [C] the candidates' item ids.
      training: update the streaming estimator (once per step).
    """
    query, candidates = tf.cast(query, tf.float32), tf.cast(candidates, tf.float32)
    num_positives = tf.shape(query)[0]
    probabilities = self.slot_probabilities(candidate_ids, num_positives, training)
    total = self.retrieval(
        query, candidates, candidate_sampling_probability=probabilities,
        candidate_ids=candidate_ids if self.config.remove_accidental_hits else None,
        compute_metrics=False, compute_batch_metrics=False)
    loss = total / tf.cast(num_positives, tf.float32)
    self.loss_metric.update_state(loss)
    replicas = tf.distribute.get_strategy().num_replicas_in_sync
    return loss / tf.cast(replicas, tf.float32)

"""The UMA² Keras model: any tower (GMM) + optional NSDN heads, trained through a loss task.

    tower = towers.build_tower("youtube_dnn", schema, catalog)
    model = UMA2Model(tower, UMA2Task(LossConfig()))           # UMA²
    gmm = UMA2Model(tower, UMA2Task(LossConfig(use_nsdn=False)))  # plain GMM, same code path
    softmax = UMA2Model(tower, InBatchSoftmaxTask(SoftmaxConfig(), num_items, click_count))
    remi = UMA2Model(mind, SampledSoftmaxTask(RemiConfig(ihn_beta=1.0)),
                     routing_regularizer=RoutingRegularizer(12800.0))   # REMI's IHN + RR
    model.compile(optimizer=keras.optimizers.Adam(1e-3))
    model.fit(samplers.make_training_dataset(dataset, SamplingConfig(), 512))
    outputs = model(batch)   # {"matching_logits": [B, 1+N], "p1": [B, 1+N], "p2": [B, 1+N]}

Slot 0 of every [B, 1+N] output is the positive, slots 1..N the negatives in `neg_items` order.
With the softmax task (in-batch / mixed samplers) the batch has no `neg_items`: the loss scores
every positive against the batch's distinct candidates, and the outputs are [B, 1].

Mixed precision: with `keras.mixed_precision.set_global_policy("mixed_float16")` (or
"mixed_bfloat16") before the model is built, the layers compute in 16 bits on float32 variables,
while the outputs, the loss and its metrics stay float32; under mixed_float16 `compile` wraps the
optimizer in a `LossScaleOptimizer`, which `train_step` applies.
"""
from __future__ import annotations

import uma2_tf  # noqa: F401

import tensorflow as tf
import tensorflow_recommenders as tfrs
import tf_keras as keras

from uma2_tf.data import batch_keys
from uma2_tf.data import schema as schema_lib
from uma2_tf.models.features import FeatureEmbeddings
from uma2_tf.models.nsdn import NSDN
from uma2_tf.tasks import UMA2Task
from uma2_tf.models.towers.base import Tower


class UMA2Model(tfrs.models.Model):
  """Two-tower matching model with propensity re-weighted negatives.

  Args:
    tower: the GMM (any `Tower`).
    task: the loss task: `UMA2Task` (a positive against its own negatives; its `needs_nsdn`
      decides whether the NSDN heads exist) or `InBatchSoftmaxTask` (a softmax over the batch's
      positives and any shared corpus items).
    share_embeddings: the heads read the tower's embedding tables (default) or their own copies.
    dedup_items: run the item tower once per distinct item of the batch (same outputs and
      gradients as once per slot, fewer FLOPs when items repeat).
    routing_regularizer: REMI's routing regulariser (`tasks.remi.RoutingRegularizer`), added to
      the loss on a multi-interest tower's routing matrix; None: no regulariser.
    nsdn: heads to use instead of new ones when the task needs them (another model's: the
      candidates of a sampler search share one tower and one pair of heads).
  """

  def __init__(self, tower: Tower, task: UMA2Task, share_embeddings: bool = True,
               dedup_items: bool = True, routing_regularizer=None, nsdn: NSDN | None = None,
               **kwargs):
    super().__init__(**kwargs)
    self.tower = tower
    self.dedup_items = dedup_items
    self.task = task
    self.routing_regularizer = routing_regularizer
    self.nsdn = None
    if task.needs_nsdn and nsdn is not None:
      self.nsdn = nsdn
    elif task.needs_nsdn:
      embeddings = tower.embeddings
      if not share_embeddings:
        embeddings = FeatureEmbeddings(embeddings.schema, embeddings.catalog,
                                       embeddings.id_dim, embeddings.feature_dim,
                                       name="nsdn_embeddings")
      self.nsdn = NSDN(embeddings, name="nsdn")
    # Positives trained on and the sampler's fill events among them (`batch_keys.FILL_EVENTS`),
    # summed over every replica and step: the run's sampling.json, counted while training instead
    # of by a second pass of the sampler. A weight, so a resumed run keeps counting from its backup.
    self.fill_event_counts = self.add_weight(
        name="fill_event_counts", shape=[1 + len(batch_keys.FILL_EVENTS)], dtype=tf.int64,
        initializer="zeros", trainable=False, synchronization=tf.VariableSynchronization.ON_READ,
        aggregation=tf.VariableAggregation.SUM)

  def fill_events(self) -> dict:
    """{"positives": n, "a_padded": k, ...} over every example trained on so far."""
    counts = [int(c) for c in self.fill_event_counts.numpy()]
    return {"positives": counts[0], **dict(zip(batch_keys.FILL_EVENTS, counts[1:]))}

  def _forward(self, features, training):
    items = features[batch_keys.POS_ITEM][:, tf.newaxis]
    if batch_keys.NEG_ITEMS in features:  # In-batch samplers give positives only.
      items = tf.concat([items, features[batch_keys.NEG_ITEMS]], axis=1)
    # With shared tables the embedding vectors are looked up once and fed to both the tower and
    # the heads, instead of a second lookup (and a second sparse gradient) for the heads.
    shared = self.nsdn is not None and self.nsdn.embeddings is self.tower.embeddings
    user_vec = self.tower.embeddings.user_vector(features) if shared else None
    user, routing = self._user(features, training, user_vec)  # [B, d] (or [B, K, d])
    if self.dedup_items:
      # A batch's B·(1+N) slots repeat items (popular positives, A/B of the same request, random
      # negatives drawn from a corpus not much larger than the batch): the item tower, most of a
      # step's FLOPs, runs once per distinct item and its outputs are gathered back per slot.
      unique, index = tf.unique(tf.reshape(items, [-1]))
      index = tf.reshape(index, tf.shape(items))  # [B, 1+N] -> row of `unique`
      unique_vec = self.tower.embeddings.item_vector(unique) if shared else None
      unique_emb = self.tower.item_embedding(unique, training=training, item_vector=unique_vec)
      item_emb = tf.gather(unique_emb, index)  # [B, 1+N, d]
      # The heads' item half runs per distinct item as well (NSDN's `item_index`).
      item_vec, item_index = unique_vec, index
    else:
      item_vec = self.tower.embeddings.item_vector(items) if shared else None
      item_emb = self.tower.item_embedding(items, training=training,
                                           item_vector=item_vec)  # [B, 1+N, d]
      item_index = None
    out = {"user_embedding": user, "item_embedding": item_emb, "routing": routing,
           "matching_logits": self.tower.matching_logits(features, user, item_emb,
                                                         training=training)}
    if self.nsdn is not None:
      if not shared:
        user_vec = self.nsdn.embeddings.user_vector(features)
        item_vec = self.nsdn.embeddings.item_vector(unique if self.dedup_items else items)
      out["er_logits"], out["re_logits"] = self.nsdn(user_vec, item_vec, item_index=item_index)
    return out

  def _user(self, features, training, user_vector=None):
    """The user embedding and, when the routing regulariser needs it, the routing matrix."""
    if self.routing_regularizer is None:
      return self.tower.user_embedding(features, training=training, user_vector=user_vector), None
    user, routing = self.tower.interest_routing(features, training=training,
                                                user_vector=user_vector)
    if routing is None:
      raise ValueError(f"the routing regulariser needs a multi-interest tower; "
                       f"{self.tower.name} has no routing matrix")
    return user, routing

  def _routing_loss(self, features, user, routing):
    """λ·RR of the batch (0 without the regulariser), scaled per replica like the task's loss."""
    if routing is None:
      return tf.constant(0.0)
    real = tf.not_equal(features[schema_lib.HISTORY], schema_lib.PAD_ID)
    return self.routing_regularizer(routing, real, width=int(user.shape[-1]))

  def call(self, features, training=False):
    out = self._forward(features, training)
    result = {"matching_logits": out["matching_logits"]}
    if self.nsdn is not None:
      # The heads compute in the compute dtype; evaluation reads float32 propensities.
      result["p1"] = tf.sigmoid(tf.cast(out["er_logits"], tf.float32))
      result["p2"] = tf.sigmoid(tf.cast(out["re_logits"], tf.float32))
    return result

  def compute_loss(self, features, training=False):
    if training and batch_keys.FILL_EVENTS_KEY in features:
      events = tf.cast(features[batch_keys.FILL_EVENTS_KEY], tf.int64)
      self.fill_event_counts.assign_add(tf.concat(
          [tf.shape(events, out_type=tf.int64)[:1], tf.reduce_sum(events, axis=0)], axis=0))
    if self.task.in_batch:
      return self._in_batch_loss(features, training)
    out = self._forward(features, training)
    logits = out["matching_logits"]
    loss = self.task(logits[:, 0], logits[:, 1:], features[batch_keys.NEG_SPACE],
                     features[batch_keys.NEG_MASK], out.get("er_logits"), out.get("re_logits"),
                     features[batch_keys.NEG_RECALLED], features[batch_keys.NEG_EXPOSED])
    aux = self.tower.auxiliary_loss(features, out["user_embedding"], out["item_embedding"])
    replicas = tf.distribute.get_strategy().num_replicas_in_sync
    routing_loss = self._routing_loss(features, out["user_embedding"], out["routing"])
    return loss + aux / tf.cast(replicas, tf.float32) + routing_loss

  def _in_batch_loss(self, features, training):
    """The softmax of every positive against the batch's positives and its shared corpus items."""
    positives = features[batch_keys.POS_ITEM]
    candidate_ids = positives
    if batch_keys.CORPUS_ITEMS in features:
      candidate_ids = tf.concat([positives, features[batch_keys.CORPUS_ITEMS]], axis=0)
    # The item tower runs once per distinct candidate (popular positives repeat in a batch).
    unique, index = tf.unique(candidate_ids)
    candidates = tf.gather(self.tower.item_embedding(unique, training=training), index)  # [C, d]
    user, routing = self._user(features, training)
    positive_embedding = candidates[:tf.shape(positives)[0]]
    query = self.tower.training_query(features, user, positive_embedding, training=training)
    loss = self.task(query, candidates, candidate_ids, training=training)
    aux = self.tower.auxiliary_loss(features, user, positive_embedding[:, tf.newaxis])
    replicas = tf.distribute.get_strategy().num_replicas_in_sync
    return loss + aux / tf.cast(replicas, tf.float32) + self._routing_loss(features, user, routing)

  def train_step(self, inputs):
    """TFRS's step, with loss scaling when the optimizer is a `LossScaleOptimizer`.

    `compile` wraps the optimizer in one under mixed_float16, but TFRS's step neither scales the
    loss nor unscales the gradients, so small float16 gradients would flush to zero. Without one
    the step is TFRS's, op for op.
    """
    scaling = isinstance(self.optimizer, keras.mixed_precision.LossScaleOptimizer)
    with tf.GradientTape() as tape:
      loss = self.compute_loss(inputs, training=True)
      regularization_loss = tf.reduce_sum([tf.reduce_sum(term) for term in self.losses])
      total_loss = loss + regularization_loss
      target = self.optimizer.get_scaled_loss(total_loss) if scaling else total_loss
    gradients = tape.gradient(target, self.trainable_variables)
    if scaling:
      gradients = self.optimizer.get_unscaled_gradients(gradients)
    self.optimizer.apply_gradients(zip(gradients, self.trainable_variables))

    metrics = {metric.name: metric.result() for metric in self.metrics}
    metrics["loss"] = loss
    metrics["regularization_loss"] = regularization_loss
    metrics["total_loss"] = total_loss
    return metrics

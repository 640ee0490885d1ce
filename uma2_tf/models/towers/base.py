"""The interface of a two-tower model (GMM): anything with `user_embedding` / `item_embedding`.

UMA² is model-agnostic: `UMA2Model` wraps any `Tower`. A new tower family is one module with a
`Tower` subclass, registered in `uma2_tf.models.towers.TOWERS`.

    u = tower.user_embedding(batch)                 # [B, d]
    v = tower.item_embedding(batch["neg_items"])    # [B, N, d]
    scores = tower.matching_logits(batch, u, v)     # [B, N]
"""
from __future__ import annotations

import uma2_tf  # noqa: F401

from typing import Sequence

import tensorflow as tf
import tf_keras as keras

from uma2_tf.models.features import FeatureEmbeddings


def mlp(hidden: Sequence[int], output_dim: int, name: str) -> keras.Sequential:
  """ReLU layers then a linear output layer (an inner product needs signed, unbounded vectors)."""
  layers = [keras.layers.Dense(h, activation="relu", name=f"{name}_{i}")
            for i, h in enumerate(hidden)]
  layers.append(keras.layers.Dense(output_dim, name=f"{name}_out"))
  return keras.Sequential(layers, name=name)


def as_float32(x):
  """A tower's final embeddings in float32 (a no-op unless the layers compute in 16 bits)."""
  return tf.cast(x, tf.float32)


def fixed_history_shape(layer: keras.layers.Layer, input_shape) -> tuple[int, int]:
  """(L, d) of a history input [B, L, d] a layer sizes its weights by; ValueError if unknown."""
  length, width = input_shape[1], input_shape[2]
  if length is None or width is None:
    raise ValueError(f"{type(layer).__name__} needs a fixed history length and width, got shape "
                     f"{input_shape}")
  return length, width


def check_history_length(layer: keras.layers.Layer, history, built_length: int) -> None:
  """ValueError if `history` [B, L, ...] is longer than the L the layer's weights were built for
  (slicing them would otherwise fail deep inside the graph)."""
  length = history.shape[1]
  if length is not None and length > built_length:
    raise ValueError(f"history of length {length} is longer than the {built_length} the "
                     f"{layer.name} layer was built for")


class Tower(keras.Model):
  """Interface of a two-tower model. Subclasses build `self.embeddings` and the two towers.

  `auxiliary_loss` lets a tower add its own training loss (e.g. DAT's adaptive-mimic loss, ESAM's
  domain adaptation); it is given the batch (with its sampling labels: `neg_space`, `neg_mask`,
  ...), the user embeddings and the item embeddings of every slot [B, 1+N, d] (slot 0 the
  positive), and returns a scalar already averaged over positives.

  `matching_logits` scores every slot: [B, 1+N]. The default is the inner product; a multi-interest
  tower (MIND), whose `user_embedding` is [B, K, d], picks or mixes its interests here (e.g. its
  label-aware attention on the positive). At retrieval a [B, K, d] user embedding means K queries
  per user whose results merge by score (`metrics.top_k_items`). `num_interests` is that K (1 for a
  single-vector tower); export serves single-vector towers only.

  Under Keras mixed precision (`mixed_float16` / `mixed_bfloat16`) the layers compute in 16 bits,
  but `user_embedding` / `item_embedding` return float32 (`as_float32`): the scores, the losses,
  evaluation and export then read float32 whatever the policy.

  `user_vector` / `item_vector`, when given, are `self.embeddings`' vectors of the same inputs,
  already computed by a caller that shares the tables (the NSDN heads): the tower uses them instead
  of looking the embeddings up a second time. A tower that does not embed through
  `self.embeddings` ignores them.
  """

  embeddings: FeatureEmbeddings
  num_interests: int = 1

  def user_embedding(self, features, training: bool = False, user_vector=None):
    raise NotImplementedError

  def interest_routing(self, features, training: bool = False, user_vector=None):
    """(user_embedding, routing): routing is a multi-interest tower's item-to-interest matrix
    A [B, K, L] over the L history positions (0 at padding), None for a single-vector tower.

    REMI's routing regulariser (`tasks.remi.RoutingRegularizer`) reads A; a multi-interest tower
    computes both in one pass, so it overrides this and `user_embedding` returns its first half.
    """
    return self.user_embedding(features, training=training, user_vector=user_vector), None

  def item_embedding(self, item_ids, training: bool = False, item_vector=None):
    raise NotImplementedError

  def matching_logits(self, features, user_embedding, item_embedding, training: bool = False):
    del features, training
    return tf.einsum("bd,bnd->bn", user_embedding, item_embedding)

  def training_query(self, features, user_embedding, positive_embedding, training: bool = False):
    """The one vector per positive [B, d] a softmax over shared candidates scores them with.

    The candidates of an in-batch softmax are shared by the batch, so a positive needs a single
    query; a single-vector tower's is its user embedding, a multi-interest tower's its interests
    read out for the positive (`positive_embedding` [B, d]), as in `matching_logits`.
    """
    del features, positive_embedding, training
    return user_embedding

  def auxiliary_loss(self, features, user_embedding, item_embedding):
    del features, user_embedding, item_embedding
    return tf.constant(0.0)

  def call(self, features, training=False):
    return self.user_embedding(features, training=training)


class MultiInterestTower(Tower):
  """A tower with K interests per user (MIND, ComiRec): `interest_routing` computes them with
  their routing matrix, `training_query` reads them out for the positive (attention or the hard
  readout), and every slot is scored with that one query.

  The item side is shared: an item is the mean of its field embeddings (one width, so the fields
  average; the history is embedded the same way) through `item_tower`. A subclass's `__init__`
  sets `embeddings`, `item_tower`, `num_item_fields` and `embedding_dim`.
  """

  embeddings: FeatureEmbeddings
  item_tower: keras.layers.Layer
  num_item_fields: int
  embedding_dim: int

  def pooled_items(self, item_ids, item_vector=None):
    """e_i: the mean of each item's field embeddings, [..., embedding_dim]."""
    if item_vector is None:
      item_vector = self.embeddings.item_vector(item_ids)
    shape = tf.concat([tf.shape(item_vector)[:-1], [self.num_item_fields, self.embedding_dim]], 0)
    return tf.reduce_mean(tf.reshape(item_vector, shape), axis=-2)

  def item_embedding(self, item_ids, training: bool = False, item_vector=None):
    return as_float32(self.item_tower(self.pooled_items(item_ids, item_vector), training=training))

  def user_embedding(self, features, training: bool = False, user_vector=None):
    return self.interest_routing(features, training=training, user_vector=user_vector)[0]

  def matching_logits(self, features, user_embedding, item_embedding, training: bool = False):
    query = self.training_query(features, user_embedding, item_embedding[:, 0], training)
    return tf.einsum("bd,bnd->bn", query, item_embedding)

"""Factorization Machine (Rendle, 2010) written as a two-tower model, a competitor of the paper's
Table 1.

    tower = FM(schema, catalog, factor_dim=32)
    u = tower.user_embedding(batch)                 # [B, 33] = [sum of user factors, 1]
    v = tower.item_embedding(batch["neg_items"])    # [B, N, 33]: [sum of item factors, item-only]
    scores = tf.einsum("bd,bnd->bn", u, v)          # FM score minus the user's constant terms

Fields, each with one k-wide factor vector v_f (`factor_dim` = k):
- user side: the user id, each user feature, and the history as one field whose vector is the mean
  of its item-id vectors (padding id 0 excluded; zeros for an empty history) — a multi-hot field
  with values 1/|history|, whose cross terms with any other field are exactly <mean, v_g>;
- item side: the item id and each catalog item feature, each with a factor vector and a scalar
  linear weight w_g.

The FM score over all fields is

    y = w0 + sum_f w_f + sum_{f<g} <v_f, v_g>.

Split by side, the pairs are user x user, item x item and user x item, and the user x item sum is
the single inner product <sum_user v_f, sum_item v_g>. The user-only terms (w0, user linear
weights, user x user pairs) are the same for every item of a user and do not change a user's
ranking, so the model drops them (it has no w0 and no user linear weights). The item-only terms,
item linear weights and item x item pairs 1/2 sum_k [(sum_g v_gk)^2 - sum_g v_gk^2], become one
extra dimension:

    user_embedding = [sum_user v_f, 1]
    item_embedding = [sum_item v_g, sum_item w_g + item x item pairs]
    <user_embedding, item_embedding> = y - (w0 + user linear + user x user pairs).

So retrieval by inner product ranks a user's items exactly as the full FM does. Training uses this
inner product as the logit: the model trained is FM without a per-user bias.

The factor vectors are the tables of `self.embeddings` (a `FeatureEmbeddings` with every field
k-wide), so the NSDN heads can share them and `user_vector` / `item_vector` (its concatenated field
vectors) are used as given.
"""
from __future__ import annotations

import uma2_tf  # noqa: F401

import tensorflow as tf
import tf_keras as keras

from uma2_tf import distribute
from uma2_tf.data import schema as schema_lib
from uma2_tf.models.features import FeatureEmbeddings
from uma2_tf.models.towers.base import Tower, as_float32


def _fields(vector, num_fields: int, width: int):
  """[..., F * k] concatenated field vectors -> [..., F, k]."""
  return tf.reshape(vector, tf.concat([tf.shape(vector)[:-1], [num_fields, width]], axis=0))


class FM(Tower):
  """Two-tower factorization machine; see the module docstring for the exact split of the score.

  Args:
    schema: the dataset's id spaces and feature vocabularies.
    catalog: the item catalog (item features are looked up in it by item id).
    factor_dim: k, the width of every field's factor vector; the embeddings are k + 1 wide.
  """

  def __init__(self, schema: schema_lib.LogSchema, catalog: schema_lib.ItemCatalog,
               factor_dim: int = 32, name: str = "fm", **kwargs):
    super().__init__(name=name, **kwargs)
    self.factor_dim = factor_dim
    # One width for ids and features: every field's vector is a factor vector of the same FM.
    self.embeddings = FeatureEmbeddings(schema, catalog, factor_dim, factor_dim, name="embeddings")
    self.num_user_fields = 2 + len(schema.user_features)  # user id, features, history
    self.num_item_fields = 1 + len(schema.item_features)  # item id, features
    # Linear weights start at 0, as in Rendle's FM (the factors carry the random start).
    self.item_id_weight = keras.layers.Embedding(
        schema.num_items, 1, embeddings_initializer="zeros", name="item_id_weight")
    self.item_feature_weights = {
        name: keras.layers.Embedding(size, 1, embeddings_initializer="zeros",
                                     name=f"item_{name}_weight")
        for name, size in schema.item_features.items()}
    self._catalog_columns = {name: tf.constant(catalog.features[name], tf.int64)
                             for name in schema.item_features}
    distribute.build_tables(self.item_id_weight, *self.item_feature_weights.values())

  def user_embedding(self, features, training=False, user_vector=None):
    if user_vector is None:
      user_vector = self.embeddings.user_vector(features)
    factors = tf.reduce_sum(_fields(user_vector, self.num_user_fields, self.factor_dim), axis=-2)
    return as_float32(tf.concat([factors, tf.ones_like(factors[..., :1])], axis=-1))

  def item_embedding(self, item_ids, training=False, item_vector=None):
    if item_vector is None:
      item_vector = self.embeddings.item_vector(item_ids)
    fields = _fields(item_vector, self.num_item_fields, self.factor_dim)
    factors = tf.reduce_sum(fields, axis=-2)
    # The item x item pairs by Rendle's O(Fk) identity:
    # sum_{f<g} <v_f, v_g> = 1/2 sum_k [(sum_f v_fk)^2 - sum_f v_fk^2].
    squares = tf.reduce_sum(tf.square(fields), axis=-2)
    pairs = 0.5 * tf.reduce_sum(tf.square(factors) - squares, axis=-1)
    linear = self.item_id_weight(item_ids)[..., 0]
    for name, weight in self.item_feature_weights.items():
      linear += weight(tf.gather(self._catalog_columns[name], item_ids))[..., 0]
    return as_float32(tf.concat([factors, (linear + pairs)[..., tf.newaxis]], axis=-1))

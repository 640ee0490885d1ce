"""Embedding of the raw id and categorical fields, shared by towers and propensity heads.

    embeddings = FeatureEmbeddings(schema, catalog)
    u = embeddings.user_vector(batch)              # [B, user_dim]: user id, user features, history
    v = embeddings.item_vector(batch["neg_items"]) # [B, N, item_dim]: item id + catalog features

Items are identified by id only: their features (category, author, popularity bucket, ...) are
looked up in the catalog inside the model, so the input pipeline stays light and the item tower can
embed the whole corpus from `range(num_items)`.
"""
from __future__ import annotations

import uma2_tf  # noqa: F401

import tensorflow as tf
import tf_keras as keras

from uma2_tf import distribute
from uma2_tf.data import schema as schema_lib


class FeatureEmbeddings(keras.layers.Layer):
  """Embedding tables for user/item ids and every categorical field of the schema.

  Args:
    schema: the dataset's id spaces and feature vocabularies.
    catalog: the item catalog (its feature columns become constant lookup tables).
    id_dim: width of the user-id and item-id embeddings.
    feature_dim: width of each categorical feature's embedding.
  """

  def __init__(self, schema: schema_lib.LogSchema, catalog: schema_lib.ItemCatalog,
               id_dim: int = 32, feature_dim: int = 16, **kwargs):
    super().__init__(**kwargs)
    self.schema = schema
    self.catalog = catalog
    self.id_dim = id_dim
    self.feature_dim = feature_dim
    self.user_id = keras.layers.Embedding(schema.num_users, id_dim,
                                          embeddings_initializer=embedding_initializer(),
                                          name="user_id")
    self.item_id = keras.layers.Embedding(schema.num_items, id_dim,
                                          embeddings_initializer=embedding_initializer(),
                                          name="item_id")
    self.user_features = {
        name: keras.layers.Embedding(size, feature_dim,
                                     embeddings_initializer=embedding_initializer(),
                                     name=f"user_{name}")
        for name, size in schema.user_features.items()}
    self.item_features = {
        name: keras.layers.Embedding(size, feature_dim,
                                     embeddings_initializer=embedding_initializer(),
                                     name=f"item_{name}")
        for name, size in schema.item_features.items()}
    self._catalog_columns = {name: tf.constant(catalog.features[name], tf.int64)
                             for name in schema.item_features}
    distribute.build_tables(self.user_id, self.item_id, *self.user_features.values(),
                            *self.item_features.values())

  @property
  def user_dim(self) -> int:
    return 2 * self.id_dim + self.feature_dim * len(self.user_features)

  @property
  def item_dim(self) -> int:
    return self.id_dim + self.feature_dim * len(self.item_features)

  def history_vector(self, history):
    """Mean of the history's item-id embeddings, padding (id 0) excluded; zeros if empty."""
    embedded = self.item_id(history)
    # In the embeddings' dtype: the compute dtype (float16 / bfloat16) under mixed precision.
    mask = tf.cast(tf.not_equal(history, schema_lib.PAD_ID), embedded.dtype)[..., tf.newaxis]
    summed = tf.reduce_sum(embedded * mask, axis=-2)
    return summed / tf.maximum(tf.reduce_sum(mask, axis=-2), 1.0)

  def user_vector(self, features):
    parts = [self.user_id(features[schema_lib.USER_ID])]
    parts += [layer(features[name]) for name, layer in self.user_features.items()]
    parts.append(self.history_vector(features[schema_lib.HISTORY]))
    return tf.concat(parts, axis=-1)

  def item_vector(self, item_ids):
    parts = [self.item_id(item_ids)]
    parts += [layer(tf.gather(self._catalog_columns[name], item_ids))
              for name, layer in self.item_features.items()]
    return tf.concat(parts, axis=-1)

  def call(self, features):
    return self.user_vector(features)


def embedding_initializer():
  # A fresh initializer per table: one shared instance would give every table the same values.
  return keras.initializers.RandomNormal(stddev=0.05)

"""YouTube DNN, the UMA² paper's baseline GMM.

    tower = YoutubeDNN(schema, catalog)
    u = tower.user_embedding(batch)                 # [B, 32]
"""
from __future__ import annotations

import uma2_tf  # noqa: F401

from typing import Sequence

from uma2_tf.data import schema as schema_lib
from uma2_tf.models.features import FeatureEmbeddings
from uma2_tf.models.towers.base import Tower, as_float32, mlp


class YoutubeDNN(Tower):
  """YouTube DNN (Covington et al., 2016) as the UMA² paper's baseline GMM.

  User tower: user id, demographics and the mean-pooled embeddings of the clicked-item history.
  Item tower: item id and the catalog's item features (category, author, popularity bucket).
  Both MLPs are 512-256-128-32 with ReLU (the last layer linear), output 32-d; score = inner
  product.
  """

  def __init__(self, schema: schema_lib.LogSchema, catalog: schema_lib.ItemCatalog,
               hidden: Sequence[int] = (512, 256, 128), output_dim: int = 32,
               id_dim: int = 32, feature_dim: int = 16, name: str = "youtube_dnn", **kwargs):
    super().__init__(name=name, **kwargs)
    self.embeddings = FeatureEmbeddings(schema, catalog, id_dim, feature_dim, name="embeddings")
    self.user_tower = mlp(hidden, output_dim, "user_tower")
    self.item_tower = mlp(hidden, output_dim, "item_tower")

  def user_embedding(self, features, training=False, user_vector=None):
    if user_vector is None:
      user_vector = self.embeddings.user_vector(features)
    return as_float32(self.user_tower(user_vector, training=training))

  def item_embedding(self, item_ids, training=False, item_vector=None):
    if item_vector is None:
      item_vector = self.embeddings.item_vector(item_ids)
    return as_float32(self.item_tower(item_vector, training=training))

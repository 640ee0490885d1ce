"""DAT, the Dual Augmented Two-tower model: YouTube DNN with augmented vectors and the
adaptive-mimic loss.

    tower = DAT(schema, catalog, amm_weight=0.5)
    aux = tower.auxiliary_loss(batch, user_embedding, item_embedding)
"""
from __future__ import annotations

import uma2_tf  # noqa: F401

import tensorflow as tf
import tf_keras as keras

from uma2_tf import distribute
from uma2_tf.data import batch_keys
from uma2_tf.data import schema as schema_lib
from uma2_tf.models.features import embedding_initializer
from uma2_tf.models.towers.base import as_float32
from uma2_tf.models.towers.youtube_dnn import YoutubeDNN


class DAT(YoutubeDNN):
  """Dual Augmented Two-tower (Yu et al., 2021, "A Dual Augmented Two-tower Model for Online
  Large-scale Recommendation").

  Each user and each item gets an augmented vector (an id-keyed embedding) that enters its own
  tower's input, and that is trained by the adaptive-mimic mechanism to imitate the *other* tower's
  output on positive pairs, so information crosses the towers before the final inner product:

      loss_amm = lambda_amm * mean over positives of
                 ||n(a_u) - n(stop_gradient(v_pos))||^2 + ||n(a_v_pos) - n(stop_gradient(u))||^2

  with n the L2 normalisation. The paper's towers output normalised vectors; here scores are raw
  inner products (DESIGN.md §2), whose norms grow as training fits, so the mimic targets are
  normalised instead — otherwise the mimic loss chases the growing norm and dominates training.
  (The paper's category-alignment loss is for category-imbalanced corpora and is not included.)
  """

  def __init__(self, schema, catalog, hidden=(512, 256, 128), output_dim: int = 32,
               id_dim: int = 32, feature_dim: int = 16, amm_weight: float = 0.5,
               name: str = "dat", **kwargs):
    super().__init__(schema, catalog, hidden, output_dim, id_dim, feature_dim, name=name, **kwargs)
    self.amm_weight = amm_weight
    self.user_augment = keras.layers.Embedding(schema.num_users, output_dim,
                                               embeddings_initializer=embedding_initializer(),
                                               name="user_augment")
    self.item_augment = keras.layers.Embedding(schema.num_items, output_dim,
                                               embeddings_initializer=embedding_initializer(),
                                               name="item_augment")
    distribute.build_tables(self.user_augment, self.item_augment)

  def user_embedding(self, features, training=False, user_vector=None):
    if user_vector is None:
      user_vector = self.embeddings.user_vector(features)
    x = tf.concat([user_vector, self.user_augment(features[schema_lib.USER_ID])], axis=-1)
    return as_float32(self.user_tower(x, training=training))

  def item_embedding(self, item_ids, training=False, item_vector=None):
    if item_vector is None:
      item_vector = self.embeddings.item_vector(item_ids)
    x = tf.concat([item_vector, self.item_augment(item_ids)], axis=-1)
    return as_float32(self.item_tower(x, training=training))

  def auxiliary_loss(self, features, user_embedding, item_embedding):
    positive_embedding = item_embedding[:, 0]
    # The augmented vectors come in the compute dtype; the loss is float32 like the embeddings.
    a_u = tf.cast(self.user_augment(features[schema_lib.USER_ID]), tf.float32)
    a_v = tf.cast(self.item_augment(features[batch_keys.POS_ITEM]), tf.float32)
    unit = lambda x: tf.math.l2_normalize(x, axis=-1)  # noqa: E731
    mimic_u = tf.reduce_sum(tf.square(unit(a_u) - unit(tf.stop_gradient(positive_embedding))),
                            axis=-1)
    mimic_v = tf.reduce_sum(tf.square(unit(a_v) - unit(tf.stop_gradient(user_embedding))), axis=-1)
    return self.amm_weight * tf.reduce_mean(mimic_u + mimic_v)

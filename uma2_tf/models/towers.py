"""Two-tower matching models (GMM): anything with `user_embedding` / `item_embedding`.

UMA² is model-agnostic: `UMA2Model` wraps any `Tower`. A new tower is one subclass registered in
`TOWERS`; the trainer picks it by name.

    tower = YoutubeDNN(schema, catalog)
    u = tower.user_embedding(batch)                 # [B, 32]
    v = tower.item_embedding(batch["neg_items"])    # [B, N, 32]
    scores = tf.einsum("bd,bnd->bn", u, v)
"""
from __future__ import annotations

import uma2_tf  # noqa: F401

from typing import Sequence

import tensorflow as tf
import tf_keras as keras

from uma2_tf import distribute
from uma2_tf.data import schema as schema_lib
from uma2_tf.models.features import FeatureEmbeddings, embedding_initializer


def mlp(hidden: Sequence[int], output_dim: int, name: str) -> keras.Sequential:
  """ReLU layers then a linear output layer (an inner product needs signed, unbounded vectors)."""
  layers = [keras.layers.Dense(h, activation="relu", name=f"{name}_{i}") for i, h in enumerate(hidden)]
  layers.append(keras.layers.Dense(output_dim, name=f"{name}_out"))
  return keras.Sequential(layers, name=name)


def as_float32(x):
  """A tower's final embeddings in float32 (a no-op unless the layers compute in 16 bits)."""
  return tf.cast(x, tf.float32)


class Tower(keras.Model):
  """Interface of a two-tower model. Subclasses build `self.embeddings` and the two towers.

  `auxiliary_loss` lets a tower add its own training loss (e.g. DAT's adaptive-mimic loss, ESAM's
  domain adaptation); it is given the batch (with its sampling labels: `neg_space`, `neg_mask`, ...),
  the user embeddings and the item embeddings of every slot [B, 1+N, d] (slot 0 the positive), and
  returns a scalar already averaged over positives.

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

  def item_embedding(self, item_ids, training: bool = False, item_vector=None):
    raise NotImplementedError

  def matching_logits(self, features, user_embedding, item_embedding, training: bool = False):
    del features, training
    return tf.einsum("bd,bnd->bn", user_embedding, item_embedding)

  def auxiliary_loss(self, features, user_embedding, item_embedding):
    del features, user_embedding, item_embedding
    return tf.constant(0.0)

  def call(self, features, training=False):
    return self.user_embedding(features, training=training)


class YoutubeDNN(Tower):
  """YouTube DNN (Covington et al., 2016) as the UMA² paper's baseline GMM.

  User tower: user id, demographics and the mean-pooled embeddings of the clicked-item history.
  Item tower: item id and the catalog's item features (category, author, popularity bucket).
  Both MLPs are 512-256-128-32 with ReLU (the last layer linear), output 32-d; score = inner product.
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
                                               embeddings_initializer=embedding_initializer(), name="user_augment")
    self.item_augment = keras.layers.Embedding(schema.num_items, output_dim,
                                               embeddings_initializer=embedding_initializer(), name="item_augment")
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
    from uma2_tf.data import sampling
    positive_embedding = item_embedding[:, 0]
    # The augmented vectors come in the compute dtype; the loss is float32 like the embeddings.
    a_u = tf.cast(self.user_augment(features[schema_lib.USER_ID]), tf.float32)
    a_v = tf.cast(self.item_augment(features[sampling.POS_ITEM]), tf.float32)
    unit = lambda x: tf.math.l2_normalize(x, axis=-1)  # noqa: E731
    mimic_u = tf.reduce_sum(tf.square(unit(a_u) - unit(tf.stop_gradient(positive_embedding))), axis=-1)
    mimic_v = tf.reduce_sum(tf.square(unit(a_v) - unit(tf.stop_gradient(user_embedding))), axis=-1)
    return self.amm_weight * tf.reduce_mean(mimic_u + mimic_v)


# The paper's competitors live in their own modules (they subclass `Tower`, defined above) and
# register here, so `--tower` and `TrainConfig` know every tower by name.
from uma2_tf.models import fm, mind  # noqa: E402

TOWERS = {"youtube_dnn": YoutubeDNN, "dat": DAT, "fm": fm.FM, "mind": mind.MIND}


def _esam(base: str):
  """ESAM on the `base` tower (uma2_tf/models/esam.py), imported when first built: esam.py
  imports this module, so importing it here would depend on which of the two is imported first."""
  def build(schema, catalog, **kwargs):
    from uma2_tf.models import esam
    return esam.build(base, schema, catalog, **kwargs)
  return build


TOWERS.update(esam_youtube_dnn=_esam("youtube_dnn"), esam_dat=_esam("dat"))


def build_tower(name: str, schema, catalog, **kwargs) -> Tower:
  if name not in TOWERS:
    raise ValueError(f"unknown tower {name!r}; known towers: {sorted(TOWERS)}")
  return TOWERS[name](schema, catalog, **kwargs)

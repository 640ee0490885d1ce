"""MIND: Multi-Interest Network with Dynamic routing (Li et al., CIKM 2019, arXiv 1904.08030), a
competitor of the paper's Table 1.

    tower = MIND(schema, catalog, num_interests=4)
    u = tower.user_embedding(batch)                        # [B, K, 32]: K interests per user
    v = tower.item_embedding(items)                        # [B, 1+N, 32], slot 0 the positive
    logits = tower.matching_logits(batch, u, v)            # [B, 1+N], label-aware attention
    ids, scores = metrics.top_k_items(u_all, v_all, k=200) # K queries per user, merged by max

Embedding & pooling: an item's vector e_i is the mean of its field embeddings (item id and each
catalog feature, all `embedding_dim` wide), as the paper averages an item's id, category, brand...;
the user profile is the concatenation of the user-id and user-feature embeddings.

Multi-interest extractor (B2I dynamic routing, the paper's Algorithm 1), per user with behaviours
(history items) i and interest capsules j = 1..K':

    K'  = max(1, min(K, floor(log2 |history|)))     (`dynamic_interests`; else K' = K)
    b_ij ~ N(0, sigma^2), fixed: drawn once at build time, never trained
    repeat r times (`routing_iterations`, paper 3):
      w_ij = softmax_j(b_ij)                        over the K' interests, for each behaviour i
      z_j  = sum_i w_ij S e_i                       S shared by all behaviours and interests
      u_j  = squash(z_j) = |z_j|^2 / (1 + |z_j|^2) * z_j / |z_j|
      b_ij = b_ij + <u_j, S e_i>

Padding behaviours (id 0) get w_ij = 0, so they contribute nothing. b_ij is indexed by the history
position i (the history is a fixed-length, right-padded list); the random start is what lets
capsules that share S diverge, and a fixed one keeps a user's embedding deterministic. Gradients
flow through every routing iteration (the paper stops none).

Each capsule u_j is concatenated with the profile embedding and passed through a ReLU MLP (linear
last layer) to d: `user_embedding` is [B, K, d]. Interests beyond K' are copies of interest 1, which
leaves the retrieval by the best interest (`metrics.top_k_items`, the paper's max_k <v_k, e_i>)
unchanged, and are masked out of the attention below. The item embedding is e_i through a linear
map to d (`item_hidden` adds ReLU layers).

Label-aware attention (training), with the positive (slot 0) as the label item e:

    a_k = pow(<v_k, e>, p)          (`attention="power"`, the paper's formula, p = 2)
    a_k = p * <v_k, e>              (`attention="scaled"`, a monotone alternative)
    v_u = sum_k softmax_k(a_k) v_k,  logits = <v_u, e_n> for every slot n.
    v_u = v_k*, k* = argmax_k <v_k, e>   (`attention="argmax"`, ComiRec's hard readout: p unused)

"power" is the paper's pow(V_u^T e, p) taken literally, as common implementations (DeepCTR) do:
with an even p an interest pointing away from the label (negative <v_k, e>) gets weight too. Its
limits are the paper's: p = 0 gives uniform weights, a large p attends to the interest with the
largest |<v_k, e>|. "scaled" reads p as an inverse temperature, so a large p attends to the interest
with the largest <v_k, e>, the one retrieval uses. "argmax" is that limit, the hard readout of the
ComiRec reference code (which trains its MIND baseline with it too): only the chosen interest gets a
gradient.

`interest_routing` returns the interests with A [B, K, L], the last routing iteration's w_ij
transposed: column i of a real behaviour sums to 1 over the K' active interests; padding columns and
the rows of inactive interests are 0.
"""
from __future__ import annotations

import uma2_tf  # noqa: F401

from typing import Optional, Sequence

import tensorflow as tf
import tf_keras as keras

from uma2_tf.data import schema as schema_lib
from uma2_tf.models.features import FeatureEmbeddings
from uma2_tf.models.towers.base import (MultiInterestTower, as_float32, check_history_length,
                                        fixed_history_shape, mlp)

ATTENTION_MODES = ("power", "scaled", "argmax")


def squash(z, epsilon: float = 1e-9):
  """The capsule nonlinearity |z|^2 / (1 + |z|^2) * z / |z| over the last axis (0 at z = 0)."""
  # In float32 whatever z's dtype: float16 rounds epsilon to 0, and sqrt(0) makes an empty
  # history's capsule (z = 0) NaN.
  z32 = tf.cast(z, tf.float32)
  norm2 = tf.reduce_sum(tf.square(z32), axis=-1, keepdims=True)
  return tf.cast(z32 * (norm2 / (1.0 + norm2)) / tf.sqrt(norm2 + epsilon), z.dtype)


def active_interests(history, num_interests: int, dynamic: bool):
  """bool [B, K]: interest j is used iff j < K' (the paper's K'_u; all K when not `dynamic`)."""
  batch = tf.shape(history)[0]
  if not dynamic:
    return tf.ones([batch, num_interests], tf.bool)
  count = tf.reduce_sum(tf.cast(tf.not_equal(history, schema_lib.PAD_ID), tf.int32), axis=-1)
  # min(K, floor(log2 n)) counted exactly in integers, #{j in 1..K : 2^j <= n}: a float log2
  # rounds log2(8) to 2.9999998 on some inputs.
  powers = tf.constant([2 ** j for j in range(1, num_interests + 1)], tf.int32)
  used = tf.maximum(1, tf.reduce_sum(tf.cast(count[:, tf.newaxis] >= powers, tf.int32), axis=-1))
  return tf.sequence_mask(used, num_interests)


class B2IRouting(keras.layers.Layer):
  """Behaviour-to-interest dynamic routing: behaviours [B, H, D] -> interest capsules [B, K, C].

  Args:
    num_interests: K, the number of interest capsules.
    capsule_dim: C, the width of a capsule (the shared bilinear map S is D x C).
    iterations: routing iterations r.
    init_stddev: sigma of the fixed initial routing logits b_ij ~ N(0, sigma^2).
  """

  def __init__(self, num_interests: int, capsule_dim: int, iterations: int = 3,
               init_stddev: float = 1.0, **kwargs):
    super().__init__(**kwargs)
    if num_interests < 1 or capsule_dim < 1 or iterations < 1:
      raise ValueError(f"B2IRouting needs num_interests, capsule_dim and iterations >= 1, got "
                       f"{num_interests}, {capsule_dim}, {iterations}")
    self.num_interests = num_interests
    self.capsule_dim = capsule_dim
    self.iterations = iterations
    self.init_stddev = init_stddev

  def build(self, input_shape):
    history_length, width = fixed_history_shape(self, input_shape)
    self.bilinear = self.add_weight(name="bilinear", shape=[width, self.capsule_dim],
                                    initializer=keras.initializers.GlorotUniform())
    # One logit per (history position, interest), not trained (the paper initialises them randomly
    # so that capsules sharing S do not all come out equal).
    self.initial_logits = self.add_weight(
        name="initial_logits", shape=[history_length, self.num_interests], trainable=False,
        initializer=keras.initializers.RandomNormal(stddev=self.init_stddev))
    super().build(input_shape)

  def call(self, behaviours, real, active: Optional[tf.Tensor] = None,
           return_weights: bool = False):
    """behaviours [B, H, D], real [B, H] (1 a real item, 0 padding), active bool [B, K] or None
    (all interests) -> capsules [B, K, C], and with `return_weights` also the last iteration's
    routing weights w_ij [B, H, K] (0 at padding and at inactive interests)."""
    check_history_length(self, behaviours, self.initial_logits.shape[0])
    mapped = tf.einsum("bhd,dc->bhc", behaviours, self.bilinear)  # S e_i for every behaviour
    logits = tf.broadcast_to(self.initial_logits[:tf.shape(behaviours)[1]][tf.newaxis],
                             [tf.shape(behaviours)[0], tf.shape(behaviours)[1], self.num_interests])
    # (Not named `mask`: Keras gives that argument a meaning of its own.)
    real = tf.cast(real, behaviours.dtype)[..., tf.newaxis]
    capsules = weights = None
    for iteration in range(self.iterations):
      masked = logits
      if active is not None:  # Unused interests take no share of any behaviour.
        masked = tf.where(active[:, tf.newaxis, :], logits, -float("inf"))
      weights = tf.nn.softmax(masked, axis=-1) * real  # over interests, per behaviour; padding 0
      capsules = squash(tf.einsum("bhk,bhc->bkc", weights, mapped))
      if iteration + 1 < self.iterations:  # The last update would not be read.
        logits = logits + tf.einsum("bkc,bhc->bhk", capsules, mapped)
    return (capsules, weights) if return_weights else capsules


def label_aware_weights(interests, label, power: float, mode: str = "power", active=None):
  """softmax_k of pow(<v_k, e>, p) ("power") or p <v_k, e> ("scaled").

  interests [B, K, d], label [B, d], active bool [B, K] or None (all) -> weights [B, K].
  """
  scores = tf.einsum("bkd,bd->bk", interests, label)
  if mode == "power":
    # pow(x, 0) is 1 but its gradient 0 * x^-1 is NaN at x = 0: p = 0 means uniform weights.
    scores = tf.zeros_like(scores) if power == 0 else tf.pow(scores, power)
  elif mode == "scaled":
    scores = power * scores
  elif mode == "argmax":
    raise ValueError("attention='argmax' has no weights to mix with: use hard_readout")
  else:
    raise ValueError(f"attention must be one of {ATTENTION_MODES}, got {mode!r}")
  if active is not None:
    scores = tf.where(active, scores, -float("inf"))
  return tf.nn.softmax(scores, axis=-1)


def hard_readout(interests, label, active=None):
  """The interest with the largest inner product with the label: v_k*, k* = argmax_k <v_k, e>.

  interests [B, K, d], label [B, d], active bool [B, K] or None (all) -> [B, d]. The choice has no
  gradient: a loss on the readout trains the chosen interest only. Ties go to the lowest k.
  """
  scores = tf.einsum("bkd,bd->bk", interests, label)
  if active is not None:
    scores = tf.where(active, scores, tf.cast(-float("inf"), scores.dtype))
  return tf.gather(interests, tf.argmax(scores, axis=-1, output_type=tf.int32), batch_dims=1)


class MIND(MultiInterestTower):
  """Multi-interest two-tower model; see the module docstring for the formulas.

  Args:
    schema: the dataset's id spaces and feature vocabularies.
    catalog: the item catalog.
    num_interests: K, the most interests per user.
    dynamic_interests: K'_u = max(1, min(K, floor(log2 |history|))) interests per user (the
      paper's); else always K.
    routing_iterations: r, iterations of the B2I routing (paper: 3).
    routing_init_stddev: sigma of the fixed random initial routing logits.
    attention: "power" (the paper's pow(<v_k, e>, p)), "scaled" (p <v_k, e>) or "argmax" (the
      interest with the largest <v_k, e>, ComiRec's hard readout).
    attention_power: p; a whole number for "power" (a negative base has no real fractional power).
    hidden: the user MLP's ReLU layers (the same as YouTube DNN's by default).
    item_hidden: ReLU layers of the item side before its linear map to `output_dim`.
    output_dim: d, the width of interests and item embeddings.
    embedding_dim: width of every id and feature embedding (one width so item fields average).
    capsule_dim: width of the interest capsules.
  """

  def __init__(self, schema: schema_lib.LogSchema, catalog: schema_lib.ItemCatalog,
               num_interests: int = 4, dynamic_interests: bool = True, routing_iterations: int = 3,
               routing_init_stddev: float = 1.0, attention: str = "power",
               attention_power: float = 2.0, hidden: Sequence[int] = (512, 256, 128),
               item_hidden: Sequence[int] = (), output_dim: int = 32, embedding_dim: int = 32,
               capsule_dim: int = 32, name: str = "mind", **kwargs):
    super().__init__(name=name, **kwargs)
    if attention not in ATTENTION_MODES:
      raise ValueError(f"attention must be one of {ATTENTION_MODES}, got {attention!r}")
    if attention == "power" and float(attention_power) != int(attention_power):
      raise ValueError(f"attention='power' needs a whole attention_power, got {attention_power}")
    if attention_power < 0:
      raise ValueError(f"attention_power must be >= 0, got {attention_power}")
    self.num_interests = num_interests
    self.dynamic_interests = dynamic_interests
    self.attention = attention
    self.attention_power = float(attention_power)
    self.embedding_dim = embedding_dim
    self.embeddings = FeatureEmbeddings(schema, catalog, embedding_dim, embedding_dim,
                                        name="embeddings")
    self.num_item_fields = 1 + len(schema.item_features)
    self.profile_dim = embedding_dim * (1 + len(schema.user_features))
    self.routing = B2IRouting(num_interests, capsule_dim, routing_iterations, routing_init_stddev,
                              name="routing")
    self.user_tower = mlp(hidden, output_dim, "user_tower")
    self.item_tower = mlp(item_hidden, output_dim, "item_tower")

  def profile(self, features, user_vector=None):
    """User id and user-feature embeddings, concatenated: [B, profile_dim]."""
    if user_vector is not None:
      # `FeatureEmbeddings.user_vector` is [user id, user features..., history mean]: the profile
      # is its head.
      return user_vector[:, :self.profile_dim]
    parts = [self.embeddings.user_id(features[schema_lib.USER_ID])]
    parts += [layer(features[name]) for name, layer in self.embeddings.user_features.items()]
    return tf.concat(parts, axis=-1)

  def interests(self, features):
    """The routing's capsules [B, K, C], which interests the user has, bool [B, K], and the last
    iteration's routing weights [B, H, K]."""
    history = features[schema_lib.HISTORY]
    active = active_interests(history, self.num_interests, self.dynamic_interests)
    capsules, weights = self.routing(self.pooled_items(history),
                                     tf.not_equal(history, schema_lib.PAD_ID),
                                     active if self.dynamic_interests else None,
                                     return_weights=True)
    return capsules, active, weights

  def interest_routing(self, features, training=False, user_vector=None):
    """(interests [B, K, d], A [B, K, L]): A is the last routing iteration's w_ij transposed."""
    capsules, active, weights = self.interests(features)
    profile = self.profile(features, user_vector)
    profile = tf.repeat(profile[:, tf.newaxis], self.num_interests, axis=1)
    out = self.user_tower(tf.concat([capsules, profile], axis=-1), training=training)  # [B, K, d]
    # Unused interests repeat interest 1: retrieval by the best interest ignores a duplicate.
    interests = as_float32(tf.where(active[..., tf.newaxis], out, out[:, :1]))
    return interests, as_float32(tf.transpose(weights, [0, 2, 1]))

  def training_query(self, features, user_embedding, positive_embedding, training=False):
    """The interests mixed by label-aware attention on the positive (or the best one, "argmax"):
    [B, d]."""
    del training
    active = active_interests(features[schema_lib.HISTORY], self.num_interests,
                              self.dynamic_interests)
    if self.attention == "argmax":
      return hard_readout(user_embedding, positive_embedding, active)
    weights = label_aware_weights(user_embedding, positive_embedding, self.attention_power,
                                  self.attention, active)
    return tf.einsum("bk,bkd->bd", weights, user_embedding)

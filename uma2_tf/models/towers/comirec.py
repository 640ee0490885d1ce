"""ComiRec-SA and ComiRec-DR: the multi-interest extractors of ComiRec ("Controllable Multi-Interest
Framework for Recommendation", Cen et al., KDD 2020, arXiv 2005.09347), beside MIND.

    tower = ComiRecSA(schema, catalog, num_interests=4)    # or ComiRecDR(...)
    u = tower.user_embedding(batch)                        # [B, K, 32]: K interests per user
    u, a = tower.interest_routing(batch)                   # and A [B, K, L], 0 at padding
    v = tower.item_embedding(items)                        # [B, 1+N, 32], slot 0 the positive
    logits = tower.matching_logits(batch, u, v)            # [B, 1+N], hard readout on slot 0
    ids, scores = metrics.top_k_items(u_all, v_all, k=200) # K queries per user, merged by max

Item side (MIND's): e_i is the mean of item i's field embeddings, mapped to d by `item_tower`
(linear; `item_hidden` adds ReLU layers). The history, a right-padded list of L ids (0 = padding,
newest last), goes through the same map, H = [h_1..h_L] [B, L, d], so the interests, built from the
h_i, live in the item embeddings' space. Neither extractor reads the user id or user features:
ComiRec's interests come from the behaviour sequence alone.

ComiRec-SA (self-attentive), the paper's Eq. 1-2:

    A = softmax_L(W2 tanh(W1 (H + P)^T))    [B, K, L], over the user's real positions
    V = A H                                 [B, K, d]

W1 is d_a x d (`attention_dim`, the reference's 4d), W2 K x d_a, both without bias (the paper and
REMI; the THUDM TensorFlow code's dense layers have biases, W2's cancels in the softmax). P [L, d]
are trained positional embeddings added to the attention input only, not to the H that V averages,
as the reference does (`add_pos=True`); `positional=False` drops them. Positions count from the
oldest item, so padding after the newest does not move them. Each row of A sums to 1 over the real
positions and is exactly 0 at padding; an empty history has A = 0 and V = 0 (the reference's
-2^32 fill would spread A evenly over the padding there).

ComiRec-DR (dynamic routing), the THUDM code's `CapsuleNetwork` with `bilinear_type=2`:

    h_{j|i} = W_ij h_i                      one d x d map per position i and interest j
    b_ij = 0
    repeat r times (`routing_iterations`, reference 3):
      c_ij = softmax_j(b_ij)                over the K interests, for each behaviour i; 0 at padding
      v_j  = squash(sum_i c_ij h_{j|i})
      b_ij = b_ij + <h_{j|i}, v_j>

As in the reference, every iteration but the last reads stop_gradient(h_{j|i}), so the c_ij carry no
gradient: the parameters learn only through the last iteration's v_j. The initial logits are the
reference's zeros (its random start is MIND's, `bilinear_type=0`), so the embeddings are
deterministic, as serving needs; the per-(position, interest) maps W_ij already make the capsules
differ. W_ij ~ N(0, sigma^2) with the reference's sigma = 1 (`bilinear_stddev`). A [B, K, L] is c
transposed: each real position's column sums to 1 over the interests, padding columns are 0, and
it has no gradient. Where the two references differ we follow THUDM's code and the paper: REMI's
PyTorch port softmaxes b over the positions (`dim=-1`) instead of the interests.

Training readout (both, the references' `hard_readout`): the interest with the largest inner product
with the positive e, v_k* with k* = argmax_k <v_k, e>, scores every slot; only v_k* gets a gradient.
"""
from __future__ import annotations

import uma2_tf  # noqa: F401

from typing import Optional, Sequence

import tensorflow as tf
import tf_keras as keras

from uma2_tf.data import schema as schema_lib
from uma2_tf.models.features import FeatureEmbeddings, embedding_initializer
from uma2_tf.models.towers.base import (MultiInterestTower, as_float32, check_history_length,
                                        fixed_history_shape, mlp)
from uma2_tf.models.towers.mind import hard_readout, squash

# Fills the attention logits of padding before the softmax: finite, so that an all-padding row
# gives a uniform softmax (then zeroed) rather than the NaN of a softmax over -inf only.
_PADDING_LOGIT = -1e9


class SelfAttentiveExtractor(keras.layers.Layer):
  """ComiRec-SA's extractor: history [B, L, d], real [B, L] -> (V [B, K, d], A [B, K, L] float32).

  Args:
    num_interests: K, the number of attention heads (one interest each).
    attention_dim: d_a, the width of W1 (default 4d, the reference's).
    positional: add trained positional embeddings to the attention input.
  """

  def __init__(self, num_interests: int, attention_dim: Optional[int] = None,
               positional: bool = True, **kwargs):
    super().__init__(**kwargs)
    if num_interests < 1 or (attention_dim is not None and attention_dim < 1):
      raise ValueError(f"SelfAttentiveExtractor needs num_interests and attention_dim >= 1, got "
                       f"{num_interests}, {attention_dim}")
    self.num_interests = num_interests
    self.attention_dim = attention_dim
    self.positional = positional

  def build(self, input_shape):
    length, width = fixed_history_shape(self, input_shape)
    self.length = length
    hidden = self.attention_dim or 4 * width
    self.w1 = self.add_weight(name="w1", shape=[width, hidden],
                              initializer=keras.initializers.GlorotUniform())
    self.w2 = self.add_weight(name="w2", shape=[hidden, self.num_interests],
                              initializer=keras.initializers.GlorotUniform())
    self.positions = None
    if self.positional:
      # The scale of the history embeddings, so that neither term drowns the other at the start.
      self.positions = self.add_weight(name="positions", shape=[length, width],
                                       initializer=embedding_initializer())
    super().build(input_shape)

  def call(self, history, real):
    # (Not named `mask`: Keras gives that argument a meaning of its own.)
    check_history_length(self, history, self.length)
    inputs = history
    if self.positions is not None:
      inputs = history + self.positions[:tf.shape(history)[1]]
    hidden = tf.tanh(tf.einsum("bld,da->bla", inputs, self.w1))
    logits = tf.einsum("bla,ak->bkl", hidden, self.w2)
    # In float32: a 16-bit softmax would round the padding fill to -inf.
    real = tf.cast(real, tf.bool)[:, tf.newaxis, :]
    logits = tf.where(real, tf.cast(logits, tf.float32), _PADDING_LOGIT)
    weights = tf.nn.softmax(logits, axis=-1) * tf.cast(real, tf.float32)
    return tf.einsum("bkl,bld->bkd", tf.cast(weights, history.dtype), history), weights


class CapsuleRouting(keras.layers.Layer):
  """ComiRec-DR's extractor: history [B, L, d], real [B, L] -> (V [B, K, d], A [B, K, L] float32).

  Args:
    num_interests: K, the number of interest capsules.
    iterations: routing iterations r.
    bilinear_stddev: sigma of the initial maps W_ij ~ N(0, sigma^2).
  """

  def __init__(self, num_interests: int, iterations: int = 3, bilinear_stddev: float = 1.0,
               **kwargs):
    super().__init__(**kwargs)
    if num_interests < 1 or iterations < 1:
      raise ValueError(f"CapsuleRouting needs num_interests and iterations >= 1, got "
                       f"{num_interests}, {iterations}")
    self.num_interests = num_interests
    self.iterations = iterations
    self.bilinear_stddev = bilinear_stddev

  def build(self, input_shape):
    length, width = fixed_history_shape(self, input_shape)
    self.length = length
    # bilinear[i, j] maps behaviour i to interest j's space: W_ij h_i = bilinear[i, j] @ h_i.
    self.bilinear = self.add_weight(
        name="bilinear", shape=[length, self.num_interests, width, width],
        initializer=keras.initializers.RandomNormal(stddev=self.bilinear_stddev))
    super().build(input_shape)

  def call(self, history, real):
    check_history_length(self, history, self.length)
    mapped = tf.einsum("bld,lkcd->bklc", history, self.bilinear[:tf.shape(history)[1]])
    # The routing only picks the c_ij; the reference trains the maps through the last sum alone.
    frozen = tf.stop_gradient(mapped)
    real = tf.cast(real, mapped.dtype)[:, tf.newaxis, :]
    logits = tf.zeros_like(mapped[..., 0])  # [B, K, L]
    capsules = weights = None
    for iteration in range(self.iterations):
      last = iteration + 1 == self.iterations
      weights = tf.nn.softmax(logits, axis=1) * real  # over interests, per behaviour; padding 0
      capsules = squash(tf.einsum("bkl,bklc->bkc", weights, mapped if last else frozen))
      if not last:
        logits = logits + tf.einsum("bklc,bkc->bkl", frozen, capsules)
    return capsules, as_float32(weights)


class ComiRec(MultiInterestTower):
  """The item side, history embedding and hard readout shared by ComiRec-SA and ComiRec-DR; a
  subclass builds `self.extractor`, a layer (H [B, L, d], real [B, L]) -> (V, A)."""

  extractor: keras.layers.Layer

  def __init__(self, schema: schema_lib.LogSchema, catalog: schema_lib.ItemCatalog,
               num_interests: int, item_hidden: Sequence[int], output_dim: int,
               embedding_dim: int, name: str, **kwargs):
    super().__init__(name=name, **kwargs)
    self.num_interests = num_interests
    self.embedding_dim = embedding_dim
    self.embeddings = FeatureEmbeddings(schema, catalog, embedding_dim, embedding_dim,
                                        name="embeddings")
    self.num_item_fields = 1 + len(schema.item_features)
    self.item_tower = mlp(item_hidden, output_dim, "item_tower")

  def interest_routing(self, features, training=False, user_vector=None):
    """(interests V [B, K, d], A [B, K, L]); `user_vector` is ignored (it holds only the history's
    mean, and the extractors read every history item)."""
    del user_vector
    history = features[schema_lib.HISTORY]
    embedded = self.item_tower(self.pooled_items(history), training=training)  # H [B, L, d]
    interests, routing = self.extractor(embedded, tf.not_equal(history, schema_lib.PAD_ID))
    return as_float32(interests), as_float32(routing)

  def training_query(self, features, user_embedding, positive_embedding, training=False):
    """The interest closest to the positive by inner product: [B, d]."""
    del features, training
    return hard_readout(user_embedding, positive_embedding)


class ComiRecSA(ComiRec):
  """ComiRec with the self-attentive extractor; see the module docstring for the formulas.

  Args:
    schema: the dataset's id spaces and feature vocabularies.
    catalog: the item catalog.
    num_interests: K, the interests (attention heads) per user.
    attention_dim: d_a, the width of the attention's hidden layer W1 (default 4 * output_dim).
    positional: add trained positional embeddings to the attention input (the reference's).
    item_hidden: ReLU layers of the item side before its linear map to `output_dim`.
    output_dim: d, the width of interests and item embeddings.
    embedding_dim: width of every id and feature embedding (one width so item fields average).
  """

  def __init__(self, schema: schema_lib.LogSchema, catalog: schema_lib.ItemCatalog,
               num_interests: int = 4, attention_dim: Optional[int] = None,
               positional: bool = True, item_hidden: Sequence[int] = (), output_dim: int = 32,
               embedding_dim: int = 32, name: str = "comirec_sa", **kwargs):
    super().__init__(schema, catalog, num_interests, item_hidden, output_dim, embedding_dim, name,
                     **kwargs)
    self.extractor = SelfAttentiveExtractor(num_interests, attention_dim, positional,
                                            name="self_attention")


class ComiRecDR(ComiRec):
  """ComiRec with dynamic routing; see the module docstring for the formulas.

  Args:
    schema: the dataset's id spaces and feature vocabularies.
    catalog: the item catalog.
    num_interests: K, the interest capsules per user.
    routing_iterations: r, iterations of the dynamic routing (reference: 3).
    bilinear_stddev: sigma of the initial per-position, per-interest maps W_ij (reference: 1).
    item_hidden: ReLU layers of the item side before its linear map to `output_dim`.
    output_dim: d, the width of interests and item embeddings.
    embedding_dim: width of every id and feature embedding (one width so item fields average).
  """

  def __init__(self, schema: schema_lib.LogSchema, catalog: schema_lib.ItemCatalog,
               num_interests: int = 4, routing_iterations: int = 3,
               bilinear_stddev: float = 1.0, item_hidden: Sequence[int] = (),
               output_dim: int = 32, embedding_dim: int = 32, name: str = "comirec_dr", **kwargs):
    super().__init__(schema, catalog, num_interests, item_hidden, output_dim, embedding_dim, name,
                     **kwargs)
    self.extractor = CapsuleRouting(num_interests, routing_iterations, bilinear_stddev,
                                    name="routing")

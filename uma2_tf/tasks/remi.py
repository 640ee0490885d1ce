"""REMI's two training terms (Xie et al., RecSys 2023): interest-aware hard negatives (IHN) on a
sampled softmax, and the routing regulariser (RR) of multi-interest towers.

    task = SampledSoftmaxTask(RemiConfig(ihn_beta=1.0))
    loss = task(query, candidates, candidate_ids)  # rows 0..B-1 positives, then M shared ones
    rr = RoutingRegularizer(rr_lambda=100.0)
    loss += rr(routing, real)                          # routing [B, K, L], real [B, L] (1 = item)

**IHN.** Every positive i is scored against the M negatives shared by the batch (uniform corpus
draws, `--negatives=sampled`): s⁺ = <q_i, e_pos>, s_j = <q_i, e_j>. Each negative is re-weighted
by w_j = e^{β s_j} / mean_k e^{β s_k}, a Monte-Carlo estimate that turns uniform draws into draws
from e^{β s}, the hard negatives of the query's interest:

    L_i = -log( e^{s⁺} / (e^{s⁺} + Σ_j w_j e^{s_j}) ),   averaged over the positives.

β = 0 is the plain sampled softmax. Computed in log space: log w_j = β s_j − logmeanexp(β s), so
a large β never overflows. As the reference code, the gradient flows through w_j
(`ihn_stop_gradient` stops it). Negatives that are the positive's own item (accidental hits) are
left out of both the sum and the mean (`remove_accidental_hits`).

**RR.** A multi-interest tower's routing matrix A [K, L] (item-to-interest weights over the L
history positions) is pushed away from collapse onto a few items:

    Ā_k = mean of A_k over the user's real positions,
    C = (A − Ā)(A − Ā)ᵀ / d,    RR_u = ‖diag(C)‖²,     L = mean_u RR_u · λ

with padded positions left out of Ā and of the deviations (the reference code counts them). The
reduction is the **mean over users** (the reference sums over its batch of 128, so its λ = 100 is
λ = 12800 here); d is the interests' width.
"""
from __future__ import annotations

import uma2_tf  # noqa: F401

import dataclasses

import tensorflow as tf
import tf_keras as keras


@dataclasses.dataclass(frozen=True)
class RemiConfig:
  """REMI's terms (`--ihn_beta`, `--rr_lambda`); both 0 (off) by default.

  Attributes:
    ihn_beta: β of the interest-aware hard negatives (0: the plain sampled softmax); needs
      `--negatives=sampled`.
    ihn_stop_gradient: stop the gradient through the IHN weights w_j (the reference does not).
    rr_lambda: λ of the routing regulariser, on the mean over users (0: off); needs a
      multi-interest tower.
    remove_accidental_hits: leave out sampled negatives that are the positive's own item.
  """

  ihn_beta: float = 0.0
  ihn_stop_gradient: bool = False
  rr_lambda: float = 0.0
  remove_accidental_hits: bool = True

  def __post_init__(self):
    if not self.ihn_beta >= 0:
      raise ValueError(f"ihn_beta must be >= 0, got {self.ihn_beta}")
    if not self.rr_lambda >= 0:
      raise ValueError(f"rr_lambda must be >= 0, got {self.rr_lambda}")


# A left-out negative's logit: so low that its e^s is 0 in the sum and in the mean's numerator;
# finite, not -inf, so a row with every negative left out gives 0 - 0, not inf - inf.
_EXCLUDED = -1e9


def ihn_log_weights(negative_logits, beta: float, negative_mask=None):
  """log w_j [B, M] = β s_j − log mean_k e^{β s_k} over the kept negatives (0 where left out)."""
  negative_logits = tf.cast(negative_logits, tf.float32)
  kept = _kept(negative_logits, negative_mask)
  scaled = tf.where(kept, beta * negative_logits, _EXCLUDED)
  count = tf.maximum(tf.reduce_sum(tf.cast(kept, tf.float32), axis=-1, keepdims=True), 1.0)
  log_mean = tf.reduce_logsumexp(scaled, axis=-1, keepdims=True) - tf.math.log(count)
  return tf.where(kept, scaled - log_mean, 0.0)


def ihn_loss(positive_logits, negative_logits, beta: float, negative_mask=None,
             stop_gradient: bool = False):
  """L_IHN per positive [B] from s⁺ [B] and s [B, M]; `negative_mask` [B, M] (1 = a negative)."""
  positive_logits = tf.cast(positive_logits, tf.float32)
  negative_logits = tf.cast(negative_logits, tf.float32)
  kept = _kept(negative_logits, negative_mask)
  weighted = negative_logits
  if beta:
    log_weights = ihn_log_weights(negative_logits, beta, negative_mask)
    if stop_gradient:
      log_weights = tf.stop_gradient(log_weights)
    weighted = negative_logits + log_weights
  logits = tf.concat([positive_logits[:, tf.newaxis], tf.where(kept, weighted, _EXCLUDED)], axis=-1)
  return tf.reduce_logsumexp(logits, axis=-1) - positive_logits


def _kept(negative_logits, negative_mask):
  if negative_mask is None:
    return tf.ones_like(negative_logits, tf.bool)
  return tf.cast(negative_mask, tf.bool)


def routing_regularization(routing, real, width: int):
  """RR_u [B] = ‖diag(C_u)‖², C = (A − Ā)(A − Ā)ᵀ / width over the real positions.

  routing [B, K, L], real [B, L] (1 a history item, 0 padding), width d.
  """
  routing = tf.cast(routing, tf.float32)
  real = tf.cast(real, tf.float32)[:, tf.newaxis, :]  # [B, 1, L]
  count = tf.maximum(tf.reduce_sum(real, axis=-1, keepdims=True), 1.0)
  mean = tf.reduce_sum(routing * real, axis=-1, keepdims=True) / count  # Ā [B, K, 1]
  deviation = (routing - mean) * real
  diagonal = tf.reduce_sum(tf.square(deviation), axis=-1) / float(width)  # diag(C) [B, K]
  return tf.reduce_sum(tf.square(diagonal), axis=-1)


class SampledSoftmaxTask(keras.layers.Layer):
  """The sampled softmax over M negatives shared by the batch, with IHN; a metric `loss_softmax`.

  Called like `InBatchSoftmaxTask` (the model passes the batch's positives, then the shared corpus
  items), but a positive is scored against the shared negatives only, not the batch's other
  positives. Uniform draws need no logQ correction (Q is a constant, which cancels).
  """

  in_batch = True
  needs_nsdn = False

  def __init__(self, config: RemiConfig = RemiConfig(), **kwargs):
    kwargs.setdefault("dtype", "float32")  # The loss stays float32 under mixed precision.
    super().__init__(**kwargs)
    self.config = config
    self.loss_metric = keras.metrics.Mean(name="loss_softmax")

  def call(self, query, candidates, candidate_ids, training: bool = False):
    """The loss averaged over the global batch's positives.

    Args:
      query: [B, d] one vector per positive.
      candidates: [B + M, d]: rows 0..B-1 the positives (row i query i's), then M shared negatives.
      candidate_ids: int64 [B + M] their item ids.
      training: unused (nothing is updated per step).
    """
    del training
    query, candidates = tf.cast(query, tf.float32), tf.cast(candidates, tf.float32)
    num_positives = tf.shape(query)[0]
    positive_logits = tf.reduce_sum(query * candidates[:num_positives], axis=-1)
    negative_logits = tf.linalg.matmul(query, candidates[num_positives:], transpose_b=True)
    mask = None
    if self.config.remove_accidental_hits:
      mask = tf.not_equal(candidate_ids[:num_positives, tf.newaxis],
                          candidate_ids[tf.newaxis, num_positives:])
    per_positive = ihn_loss(positive_logits, negative_logits, self.config.ihn_beta, mask,
                            self.config.ihn_stop_gradient)
    loss = tf.reduce_mean(per_positive)
    self.loss_metric.update_state(loss)
    replicas = tf.distribute.get_strategy().num_replicas_in_sync
    return loss / tf.cast(replicas, tf.float32)


class RoutingRegularizer(keras.layers.Layer):
  """λ · mean over users of RR_u; a metric `loss_rr` (the unscaled mean)."""

  def __init__(self, rr_lambda: float, **kwargs):
    kwargs.setdefault("dtype", "float32")
    super().__init__(**kwargs)
    if not rr_lambda > 0:
      raise ValueError(f"RoutingRegularizer needs rr_lambda > 0, got {rr_lambda}")
    self.rr_lambda = float(rr_lambda)
    self.loss_metric = keras.metrics.Mean(name="loss_rr")

  def call(self, routing, real, width: int):
    """routing [B, K, L], real [B, L], width d of the interests -> λ · mean RR, per replica."""
    value = tf.reduce_mean(routing_regularization(routing, real, width))
    self.loss_metric.update_state(value)
    replicas = tf.distribute.get_strategy().num_replicas_in_sync
    return self.rr_lambda * value / tf.cast(replicas, tf.float32)

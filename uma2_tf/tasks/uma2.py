"""The UMA² loss (paper eq. 2, DESIGN.md §2) as a TFRS-style task: a Keras layer owning the loss.

    task = UMA2Task(LossConfig())
    loss = task(pos_logits, neg_logits, neg_space, neg_mask,
                er_logits=er, re_logits=re, recalled=recalled, exposed=exposed)

With B positives in the (global) batch, s the matching logits and m the padding mask:

    loss = [ Σ BCE(s_pos, 1)
           + λ1 Σ_A m·w_A·BCE(s, 0)      w_A = 1 / max(p1·p2, floor)
           + λ2 Σ_B m·w_B·BCE(s, 0)      w_B = 1 / p1
           + λ3 Σ_C m·BCE(s, 0)
           + λ4 Σ_{valid slots, positive included} BCE(p1, recalled)
           + λ5 Σ_{valid recalled slots} BCE(p2, exposed) ] / B

- p1, p2 are the heads' probabilities at the negative, clipped to [propensity_floor, 1] (and A's
  product too, so no weight exceeds 1 / floor: 20 by default), and enter the weights through
  `stop_gradient`: the propensities are learned by their own tasks only.
- `weight_normalization="self_normalized"` divides the weights of each space by their mean over
  the valid slots of that space in the batch.
- Every term is a per-example sum (paper eq. 2 sums over samples) averaged over the B positives:
  dividing by B, not by a slot count, keeps λ's meaning fixed when the ratio changes.
- `use_nsdn=False` is the plain GMM: no propensity heads, no auxiliary terms, and each negative
  weighted by its space's static `space_weights` (w_A, w_B, w_C), all 1 by default:

      loss = [ Σ BCE(s_pos, 1) + λ1 Σ_A m·w_A·BCE(s, 0) + λ2 Σ_B m·w_B·BCE(s, 0)
                               + λ3 Σ_C m·w_C·BCE(s, 0) ] / B

  `sos_loss_config()` = `LossConfig(use_nsdn=False, space_weights=(1, 1, SOS_RANDOM_WEIGHT))` is
  the paper's ablation UMA²_SOS (sample optimisation: weighted random negatives mixed with real
  ones instead of NSDN). A static weight multiplies the same per-space sum as its λ, so
  (1, 1, w) trains exactly like λ3·w: the field names the SOS configuration for what it is (a
  weight per sample of the random space) and the `loss_space_*` metrics include it. With NSDN the
  propensity weights replace it, so it must stay (1, 1, 1) unless `propensity_weights=False`.
- `propensity_weights=False` (with NSDN) is the multi-task ablation: the heads and their ER, RE
  terms train as in eq. 2, but every negative weighs its static `space_weights` entry (1 by default)
  instead of w_A, w_B: the loss is the GMM's above plus λ4·ER + λ5·RE, so the auxiliary tasks can
  shape the shared embeddings while nothing is re-weighted.
- Under `tf.distribute`, each replica divides its sums by its own B and the total by the number of
  replicas; replicas get equal shares of the global batch, so the gradients the optimizer sums over
  replicas are exactly the global batch's (tests/test_distributed.py). Only `self_normalized`
  means are per replica.
- Under Keras mixed precision the loss stays float32: the task's dtype policy is float32 whatever
  the global one, and the logits are cast to float32 on the way in.
"""
from __future__ import annotations

import uma2_tf  # noqa: F401

import dataclasses

import tensorflow as tf
import tf_keras as keras

from uma2_tf.data.batch_keys import SPACE_A, SPACE_B, SPACE_C

WEIGHT_NORMALIZATIONS = ("none", "self_normalized")
TERMS = ("positive", "space_a", "space_b", "space_c", "er", "re")
# UMA²_SOS's weight of a random (C) negative. At the default A:B:C = 1:4:20, 0.25 = (1 + 4) / 20
# gives the 20 random negatives of a positive the same total weight as its 5 real ones (A and B),
# so neither kind dominates the negative half of the loss; the real ones, rarer and harder, still
# count 4x as much each. `sos_random_weight(ratio)` is the same rule for another ratio.
SOS_RANDOM_WEIGHT = 0.25


@dataclasses.dataclass(frozen=True)
class LossConfig:
  """Knobs of the UMA² loss. Defaults: the paper's loss with the choices of DESIGN.md §2.

  Attributes:
    lambdas: λ1..λ5, the weights of the A, B, C, ER and RE terms.
    propensity_floor: lower bound of p1, p2 and p1·p2 in the weights (no weight exceeds 1/floor).
    weight_normalization: `none`, or `self_normalized` (each space's weights over their batch mean).
    use_nsdn: train the NSDN propensity heads (ER, RE terms); False is the plain GMM.
    propensity_weights: with NSDN, weight the A and B negatives by the inverse propensities; False
      keeps the heads and their ER/RE terms but weights negatives by `space_weights` (multi-task
      ablation).
    space_weights: static weights of an A, B, C negative when no propensity weights apply (SOS:
      `sos_loss_config`).
  """

  lambdas: tuple[float, float, float, float, float] = (1.0, 1.0, 1.0, 1.0, 1.0)
  propensity_floor: float = 0.05
  weight_normalization: str = "none"
  use_nsdn: bool = True
  propensity_weights: bool = True
  space_weights: tuple[float, float, float] = (1.0, 1.0, 1.0)

  def __post_init__(self):
    if len(self.lambdas) != 5 or any(weight < 0 for weight in self.lambdas):
      raise ValueError(f"lambdas must be five non-negative numbers λ1..λ5, got {self.lambdas}")
    if len(self.space_weights) != 3 or not all(0 <= w < float("inf") for w in self.space_weights):
      raise ValueError(f"space_weights must be three non-negative numbers (A, B, C), "
                       f"got {self.space_weights}")
    if not self.propensity_weights and not self.use_nsdn:
      raise ValueError("propensity_weights=False needs use_nsdn=True: without NSDN there are no "
                       "propensity weights to switch off")
    if not self.propensity_weights and self.weight_normalization != "none":
      raise ValueError(f"weight_normalization={self.weight_normalization!r} normalises the "
                       "propensity weights, and propensity_weights=False has none: use "
                       "weight_normalization='none'")
    if self.uses_propensity_weights and tuple(self.space_weights) != (1.0, 1.0, 1.0):
      raise ValueError(f"space_weights {self.space_weights} need use_nsdn=False or "
                       "propensity_weights=False: the propensity weights replace them (leave "
                       "them 1,1,1)")
    if not 0.0 < self.propensity_floor <= 1.0:
      raise ValueError(f"propensity_floor must be in (0, 1], got {self.propensity_floor}")
    if self.weight_normalization not in WEIGHT_NORMALIZATIONS:
      raise ValueError(f"weight_normalization must be one of {WEIGHT_NORMALIZATIONS}, "
                       f"got {self.weight_normalization!r}")

  @property
  def uses_propensity_weights(self) -> bool:
    """Whether the A and B negatives are weighted by the NSDN heads' inverse propensities."""
    return self.use_nsdn and self.propensity_weights


def sos_random_weight(ratio=(1, 4, 20)) -> float:
  """The C weight that gives a positive's random negatives the total weight of its real ones."""
  a, b, c = ratio
  if c <= 0:
    raise ValueError(f"the ratio has no C negatives to weight: {ratio}")
  return (a + b) / c


def sos_loss_config(random_weight: float = SOS_RANDOM_WEIGHT, **kwargs) -> LossConfig:
  """UMA²_SOS: no propensity heads; A and B negatives weight 1, C negatives `random_weight`."""
  return LossConfig(use_nsdn=False, space_weights=(1.0, 1.0, random_weight), **kwargs)


class UMA2Task(keras.layers.Layer):
  """Computes the UMA² loss and tracks each of its terms as a metric."""

  in_batch = False  # Scores a positive against its own negatives, not against the batch.

  def __init__(self, config: LossConfig = LossConfig(), **kwargs):
    # float32 under a mixed global policy too, or Keras would cast the logits (the first
    # argument) to float16 before the loss sees them.
    kwargs.setdefault("dtype", "float32")
    super().__init__(**kwargs)
    self.config = config
    self.term_metrics = {name: keras.metrics.Mean(name=f"loss_{name}") for name in TERMS}
    self.weight_metrics = {name: keras.metrics.Mean(name=f"mean_weight_{name}")
                           for name in ("a", "b")}

  @property
  def needs_nsdn(self) -> bool:
    """Whether the model must have the NSDN heads this loss reads."""
    return self.config.use_nsdn

  def static_weights(self, neg_space):
    """Per-slot weights [B, N] without propensity weights: each slot's `space_weights` entry."""
    w_a, w_b, w_c = (float(w) for w in self.config.space_weights)
    return tf.where(neg_space == SPACE_A, w_a, tf.where(neg_space == SPACE_B, w_b, w_c))

  def negative_weights(self, neg_space, neg_mask, er_logits, re_logits):
    """Per-slot weights [B, N] of the negatives under NSDN (1 for C)."""
    floor = self.config.propensity_floor
    p1 = tf.clip_by_value(tf.sigmoid(tf.stop_gradient(er_logits)), floor, 1.0)
    p2 = tf.clip_by_value(tf.sigmoid(tf.stop_gradient(re_logits)), floor, 1.0)
    is_a = tf.cast(neg_space == SPACE_A, tf.float32) * neg_mask
    is_b = tf.cast(neg_space == SPACE_B, tf.float32) * neg_mask
    # The floor bounds every weight by 1 / floor: A's product of two propensities included.
    w_a, w_b = 1.0 / tf.maximum(p1 * p2, floor), 1.0 / p1
    if self.config.weight_normalization == "self_normalized":
      # A space with no valid slot has mean 0; its weights are unused, so only avoid 0/0.
      w_a = w_a / tf.maximum(_masked_mean(w_a, is_a), 1e-12)
      w_b = w_b / tf.maximum(_masked_mean(w_b, is_b), 1e-12)
    ones = tf.ones_like(w_a)
    return tf.where(is_a > 0, w_a, tf.where(is_b > 0, w_b, ones))

  def terms(self, pos_logits, neg_logits, neg_space, neg_mask, er_logits=None, re_logits=None,
            recalled=None, exposed=None):
    """Each term of the loss, before λ and replica scaling: {name: scalar}.

    Args:
      pos_logits: [B] matching logits of the positives.
      neg_logits: [B, N] matching logits of the negatives.
      neg_space: [B, N] int, SPACE_A / SPACE_B / SPACE_C.
      neg_mask: [B, N] float, 0 for padded slots.
      er_logits, re_logits: [B, 1 + N] propensity-head logits, slot 0 the positive (NSDN only).
      recalled, exposed: [B, N] float labels of the negatives (NSDN only).
    """
    # The loss boundary: logits of any compute dtype, loss arithmetic in float32.
    pos_logits, neg_logits, er_logits, re_logits = (
        None if x is None else tf.cast(x, tf.float32)
        for x in (pos_logits, neg_logits, er_logits, re_logits))
    neg_mask = tf.cast(neg_mask, tf.float32)
    num_pos = tf.cast(tf.shape(pos_logits)[0], tf.float32)
    neg_bce = tf.nn.softplus(neg_logits)  # BCE(s, 0)
    out = {"positive": tf.reduce_sum(tf.nn.softplus(-pos_logits)) / num_pos}  # BCE(s, 1)
    if self.config.uses_propensity_weights:
      weights = self.negative_weights(neg_space, neg_mask, er_logits[:, 1:], re_logits[:, 1:])
    else:
      weights = self.static_weights(neg_space)
    for name, space in (("space_a", SPACE_A), ("space_b", SPACE_B), ("space_c", SPACE_C)):
      in_space = tf.cast(neg_space == space, tf.float32) * neg_mask
      out[name] = tf.reduce_sum(in_space * weights * neg_bce) / num_pos
    if self.config.use_nsdn:
      ones = tf.ones_like(pos_logits)[:, tf.newaxis]
      mask = tf.concat([ones, neg_mask], axis=1)
      recalled_all = tf.concat([ones, tf.cast(recalled, tf.float32)], axis=1)
      exposed_all = tf.concat([ones, tf.cast(exposed, tf.float32)], axis=1)
      er = tf.nn.sigmoid_cross_entropy_with_logits(labels=recalled_all, logits=er_logits)
      re = tf.nn.sigmoid_cross_entropy_with_logits(labels=exposed_all, logits=re_logits)
      out["er"] = tf.reduce_sum(er * mask) / num_pos
      out["re"] = tf.reduce_sum(re * mask * recalled_all) / num_pos
      # The weights used, static ones too: a multi-task run's mean_weight_a/b read 1, not the
      # propensity weights it does not apply.
      self._track_weights(weights, neg_space, neg_mask)
    else:
      out["er"] = out["re"] = tf.constant(0.0)
    return out

  def call(self, pos_logits, neg_logits, neg_space, neg_mask, er_logits=None, re_logits=None,
           recalled=None, exposed=None):
    if self.config.use_nsdn and any(x is None for x in (er_logits, re_logits, recalled, exposed)):
      raise ValueError("UMA2Task with use_nsdn needs er_logits, re_logits, recalled and exposed")
    terms = self.terms(pos_logits, neg_logits, neg_space, neg_mask, er_logits, re_logits,
                       recalled, exposed)
    l1, l2, l3, l4, l5 = self.config.lambdas
    total = (terms["positive"] + l1 * terms["space_a"] + l2 * terms["space_b"]
             + l3 * terms["space_c"] + l4 * terms["er"] + l5 * terms["re"])
    for name, value in terms.items():
      self.term_metrics[name].update_state(value)
    replicas = tf.distribute.get_strategy().num_replicas_in_sync
    return total / tf.cast(replicas, tf.float32)

  def _track_weights(self, weights, neg_space, neg_mask):
    for name, space in (("a", SPACE_A), ("b", SPACE_B)):
      in_space = tf.cast(neg_space == space, tf.float32) * neg_mask
      self.weight_metrics[name].update_state(weights, sample_weight=in_space)


def _masked_mean(values, mask):
  return tf.reduce_sum(values * mask) / tf.maximum(tf.reduce_sum(mask), 1.0)

"""ESAM (Chen et al., SIGIR 2020, "ESAM: Discriminative Domain Adaptation with Non-Displayed Items
to Improve Long-Tail Performance") on top of any tower: the UMA² paper's ESAM competitors.

    tower = ESAM(YoutubeDNN(schema, catalog))     # or towers.build_tower("esam_youtube_dnn", ...)
    model = UMA2Model(tower, UMA2Task(LossConfig(use_nsdn=False)))
    aux = tower.auxiliary_loss(batch, user_embedding, item_embedding)  # what compute_loss adds
    terms = esam_terms(batch, item_embedding, logits)                  # {"da", "dc", "st"}

ESAM regards displayed items as a source domain (their feedback is known) and non-displayed items
as a target domain (no feedback), and adds three losses on the item tower's output so that what
is learnt on the displayed items transfers to the rest of the corpus. In a batch, every slot
[B, 1+N] of `item_embedding` (slot 0 the positive) falls in one of them, padded slots
(`neg_mask` 0) in none:

    source s: displayed      the positive (clicked) and A negatives (displayed, not clicked)
    target t: not displayed  B and C negatives

With v̂ = v / ||v|| (ESAM normalises the item vectors), L the embedding width, and q(r) the query
of slot r (its request, `request_id`; the example itself when the batch has no request id):

    L_DA   = (1/L²) ||Cov_s − Cov_t||_F²,   Cov_x = (1/n_x) Σ_{r∈x} v̂_r v̂_rᵀ

    L_DC^c = (1/B) [ Σ_{r∈s} max(0, ||v̂_r − c_{q(r)}^{y_r}||² − m1)
                   + Σ_q    max(0, m2 − ||c_q^click − c_q^shown||²) ]
             c_q^y = mean of v̂ over the batch's source slots of query q with label y
             (y = click: positives; y = shown: A negatives)

    L_DC^p = Σ_{r∈t} δ_r · (−Sc_r log Sc_r) / Σ_{r∈t} δ_r,
             Sc_r = σ(s(u, r)),  δ_r = [Sc_r < p1 or Sc_r > p2]

    auxiliary_loss = base.auxiliary_loss + λ_DA·L_DA + λ_DC·L_DC^c + λ_ST·L_DC^p

How it follows the paper, and where it had to choose:
- Cov = DᵀD, the correlation of the L attributes (paper: Cov(D)_jk = h_jᵀh_k over the columns of
  D ∈ R^{n×L}, not centred; the authors' released code subtracts the means, CORAL-style, which
  is not what the paper writes). The paper draws as many target items as source items per batch;
  here the two domains have different sizes (1+A vs B+C slots) and padded slots vary, so each
  Cov is divided by its number of valid rows n_x: L_DA then does not grow with the batch or the
  sampling ratio. 0 when either domain has no valid slot in the batch.
- Centres are per query, as the paper's c_q^k: the batch mean of the normalised embeddings of
  that query's items of that class, recomputed every batch with the gradient flowing through
  them; no moving average (neither the paper's formula nor the released code keeps one). A
  query is a request (`request_id`): the sampler emits a request's clicks as consecutive
  examples, so a batch mostly holds all of them, and a request's clicks and all their A
  negatives form its two classes. The hinge is per item, as the paper writes (the released code
  puts it on the sum). A class with no valid slot in a query has no centre: its slots contribute
  nothing and that query's separation term is 0, so a batch without A slots has no separation
  term (its clicked items still pull to their centre).
  Sums are divided by B, the positives of the batch, like the terms of the UMA² task.
- Self-training (L_DC^p) is implemented: it is cheap (the matching logits of the target slots)
  and the paper specifies it fully. −Sc log Sc falls towards Sc = 0 below 1/e and towards 1
  above it, so confident target items are pushed further to their pseudo-label; the items in
  [p1, p2] are left alone. It is a mean over the batch's confident target slots, 0 if none.
- m1 = 0.2, m2 = 0.9, p1 = 0.2, p2 = 0.8 are the values of the authors' released code. The
  paper tunes the λ's per dataset; defaults here: λ_DA = 1000 ≈ L² for the 32-d towers, so
  λ_DA·L_DA ≈ ||Cov_s − Cov_t||_F² ∈ [0, 2] (both are trace-1 PSD matrices), the order of one
  BCE term; λ_DC = λ_ST = 1. (On `tiny` the two domains start nearly aligned,
  ||Cov_s − Cov_t||_F² ≈ 0.015 at initialisation, and L_DA stays small either way.)

ESAM is a wrapper: user/item embeddings, matching logits, the embedding tables and the base
tower's own auxiliary loss (DAT's mimic loss) are the base tower's.
"""
from __future__ import annotations

import uma2_tf  # noqa: F401

import tensorflow as tf
import tf_keras as keras

from uma2_tf.data import batch_keys
from uma2_tf.data import schema as schema_lib
from uma2_tf.models.towers.base import Tower

TERMS = ("da", "dc", "st")
# Constructor arguments of `ESAM` a factory takes out of the kwargs before building the base.
ESAM_ARGS = ("da_weight", "dc_weight", "st_weight", "intra_margin", "inter_margin",
             "pseudo_low", "pseudo_high")


def slot_masks(features):
  """Source / target masks [B, 1+N] of every slot (slot 0 the positive), padded slots 0."""
  neg_mask = tf.cast(features[batch_keys.NEG_MASK], tf.float32)
  neg_space = features[batch_keys.NEG_SPACE]
  is_a = tf.cast(neg_space == batch_keys.SPACE_A, tf.float32) * neg_mask
  ones = tf.ones_like(neg_mask[:, :1])
  source = tf.concat([ones, is_a], axis=1)
  target = tf.concat([tf.zeros_like(ones), neg_mask - is_a], axis=1)
  return source, target, is_a


def correlation_alignment(unit, source, target):
  """L_DA of unit-norm embeddings [B, M, L] and slot masks [B, M]."""
  dim = tf.cast(tf.shape(unit)[-1], tf.float32)
  n_s, n_t = tf.reduce_sum(source), tf.reduce_sum(target)
  cov_s = tf.einsum("bml,bmk,bm->lk", unit, unit, source) / tf.maximum(n_s, 1.0)
  cov_t = tf.einsum("bml,bmk,bm->lk", unit, unit, target) / tf.maximum(n_t, 1.0)
  both = tf.cast((n_s > 0) & (n_t > 0), tf.float32)
  return both * tf.reduce_sum(tf.square(cov_s - cov_t)) / (dim * dim)


def center_clustering(unit, is_a, query_ids, intra_margin, inter_margin):
  """L_DC^c of unit-norm embeddings [B, 1+N, L], the A mask [B, N] and query ids [B]."""
  positive, negatives = unit[:, 0], unit[:, 1:]
  num_pos = tf.cast(tf.shape(unit)[0], tf.float32)
  # same[i, j]: examples i and j belong to the same query; row i then sums over i's query.
  same = tf.cast(tf.equal(query_ids[:, tf.newaxis], query_ids[tf.newaxis, :]), tf.float32)
  examples = tf.reduce_sum(same, axis=1)                                    # [B], >= 1
  c_click = tf.matmul(same, positive) / examples[:, tf.newaxis]             # [B, L]
  a_sum = tf.einsum("bnl,bn->bl", negatives, is_a)
  a_count = tf.linalg.matvec(same, tf.reduce_sum(is_a, axis=1))             # [B]
  c_shown = tf.matmul(same, a_sum) / tf.maximum(a_count, 1.0)[:, tf.newaxis]
  hinge = lambda x: tf.maximum(x, 0.0)  # noqa: E731
  intra = tf.reduce_sum(hinge(tf.reduce_sum(tf.square(positive - c_click), -1) - intra_margin))
  dist_a = tf.reduce_sum(tf.square(negatives - c_shown[:, tf.newaxis]), -1)
  intra += tf.reduce_sum(is_a * hinge(dist_a - intra_margin))
  # Once per query: each of its examples carries 1/examples of it; none without an A centre.
  has_a = tf.cast(a_count > 0, tf.float32)
  inter = hinge(inter_margin - tf.reduce_sum(tf.square(c_click - c_shown), -1))
  inter = tf.reduce_sum(has_a * inter / examples)
  return (intra + inter) / num_pos


def pseudo_label_entropy(logits, target, low, high):
  """L_DC^p of the matching logits [B, M] over the target slots [B, M]."""
  score = tf.sigmoid(logits)
  confident = target * tf.cast((score < low) | (score > high), tf.float32)
  entropy = score * tf.nn.softplus(-logits)  # −Sc·log Sc, with log σ(s) = −softplus(−s).
  return tf.reduce_sum(confident * entropy) / tf.maximum(tf.reduce_sum(confident), 1.0)


def esam_terms(features, item_embedding, logits, intra_margin: float = 0.2,
               inter_margin: float = 0.9, pseudo_low: float = 0.2, pseudo_high: float = 0.8):
  """The three ESAM losses of a batch, unweighted: {"da": L_DA, "dc": L_DC^c, "st": L_DC^p}.

  Args:
    features: the batch, with `neg_space`, `neg_mask` and (optionally) `request_id`.
    item_embedding: [B, 1+N, L] item embeddings of every slot, slot 0 the positive.
    logits: [B, 1+N] matching logits of the same slots.
  """
  unit = tf.math.l2_normalize(item_embedding, axis=-1)
  source, target, is_a = slot_masks(features)
  if schema_lib.REQUEST_ID in features:
    query_ids = features[schema_lib.REQUEST_ID]
  else:
    query_ids = tf.range(tf.shape(item_embedding)[0])
  return {"da": correlation_alignment(unit, source, target),
          "dc": center_clustering(unit, is_a, query_ids, intra_margin, inter_margin),
          "st": pseudo_label_entropy(logits, target, pseudo_low, pseudo_high)}


class ESAM(Tower):
  """A base tower trained with ESAM's domain-adaptation losses (see the module docstring).

  Args:
    base: the tower whose embeddings and scores ESAM adapts.
    da_weight, dc_weight, st_weight: λ_DA, λ_DC, λ_ST.
    intra_margin, inter_margin: m1, m2 of the centre-wise clustering.
    pseudo_low, pseudo_high: p1, p2 of the self-training.
  """

  def __init__(self, base: Tower, da_weight: float = 1000.0, dc_weight: float = 1.0,
               st_weight: float = 1.0, intra_margin: float = 0.2, inter_margin: float = 0.9,
               pseudo_low: float = 0.2, pseudo_high: float = 0.8, name: str = "esam", **kwargs):
    super().__init__(name=name, **kwargs)
    if min(da_weight, dc_weight, st_weight, intra_margin, inter_margin) < 0:
      raise ValueError("ESAM weights and margins must be >= 0")
    if not 0.0 <= pseudo_low <= pseudo_high <= 1.0:
      raise ValueError(f"ESAM needs 0 <= pseudo_low <= pseudo_high <= 1, "
                       f"got {pseudo_low}, {pseudo_high}")
    self.base = base
    self.term_weights = {"da": da_weight, "dc": dc_weight, "st": st_weight}
    self.margins = dict(intra_margin=intra_margin, inter_margin=inter_margin,
                        pseudo_low=pseudo_low, pseudo_high=pseudo_high)
    self.term_metrics = {name: keras.metrics.Mean(name=f"loss_esam_{name}") for name in TERMS}

  @property
  def embeddings(self):
    return self.base.embeddings

  @property
  def num_interests(self):
    return getattr(self.base, "num_interests", 1)

  def user_embedding(self, features, training=False, user_vector=None):
    return self.base.user_embedding(features, training=training, user_vector=user_vector)

  def item_embedding(self, item_ids, training=False, item_vector=None):
    return self.base.item_embedding(item_ids, training=training, item_vector=item_vector)

  def matching_logits(self, features, user_embedding, item_embedding, training=False):
    return self.base.matching_logits(features, user_embedding, item_embedding, training=training)

  def auxiliary_loss(self, features, user_embedding, item_embedding):
    logits = self.matching_logits(features, user_embedding, item_embedding)
    terms = esam_terms(features, item_embedding, logits, **self.margins)
    for name, value in terms.items():
      self.term_metrics[name].update_state(value)
    total = self.base.auxiliary_loss(features, user_embedding, item_embedding)
    for name, value in terms.items():
      total += self.term_weights[name] * value
    return total


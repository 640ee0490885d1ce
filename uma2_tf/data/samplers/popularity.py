"""Popularity^α over the corpus: the distribution corpus negatives are drawn from, drawn in-graph.

    probs = popularity_probabilities(catalog.click_count, alpha=0.75)   # float64[num_items]
    corpus = CorpusDistribution.popularity(catalog.click_count, alpha=0.75)
    corpus = CorpusDistribution.uniform(num_items)
    items = corpus.draw([num_positives, 30], seed)                       # int64 ids >= 1

P(j) = (c_j + smoothing)^α / Σ_k (c_k + smoothing)^α over the items 1..num_items-1 (0 is padding),
c_j the item's training clicks or exposures. α = 0.75 is word2vec's default, 1 the unigram, 0
uniform, α < 0 favours the tail. The sampler adds 1 to every count (`smoothing=1`): with α < 0 an
item never clicked would otherwise have infinite weight, and with α > 0 zero weight, never drawn.
The draw is an inverse-CDF lookup (`tf.searchsorted`) with stateless random numbers, so it runs
inside the tf.data graph per positive, which TF's `fixed_unigram_candidate_sampler` (one shared
draw per call, stateful) does not.
"""
from __future__ import annotations

import numpy as np

POPULARITY_SOURCES = ("clicks", "exposures")


def popularity_probabilities(counts, alpha: float, smoothing: float = 1.0) -> np.ndarray:
  """P(item) ∝ (count + smoothing)^alpha over ids 1.. (entry 0, the padding id, is 0)."""
  counts = np.asarray(counts, np.float64)
  if counts.ndim != 1 or len(counts) < 2:
    raise ValueError(f"counts must be 1-D with the padding id 0 and at least one item, "
                     f"got shape {counts.shape}")
  base = counts[1:] + smoothing
  if np.any(base <= 0) and alpha <= 0:
    raise ValueError(f"popularity^{alpha} needs positive counts (add smoothing): an item has "
                     f"count + smoothing = {base.min()}")
  weights = base ** alpha
  probs = np.zeros(len(counts))
  probs[1:] = weights / weights.sum()
  return probs


def catalog_counts(catalog, source: str) -> np.ndarray:
  """The catalog's per-item training clicks (`clicks`) or exposures (`exposures`)."""
  if source not in POPULARITY_SOURCES:
    raise ValueError(f"popularity source must be one of {POPULARITY_SOURCES}, got {source!r}")
  return catalog.click_count if source == "clicks" else catalog.exposure_count


class CorpusDistribution:
  """Draws item ids 1..num_items-1 in-graph, uniformly or by given probabilities.

  Args:
    probabilities: float64[num_items] with entry 0 (padding) 0, or None for uniform.
    num_items: id vocabulary size.
  """

  def __init__(self, num_items: int, probabilities=None):
    self.num_items = int(num_items)
    if probabilities is not None and len(probabilities) != self.num_items:
      raise ValueError(f"probabilities need one entry per item id ({self.num_items}), "
                       f"got {len(probabilities)}")
    self._probabilities = None if probabilities is None else np.asarray(probabilities, np.float64)
    self._cdf = None
    if self._probabilities is not None:
      import tensorflow as tf
      self._cdf = tf.constant(np.cumsum(self._probabilities[1:]), tf.float64)

  @classmethod
  def uniform(cls, num_items: int) -> "CorpusDistribution":
    return cls(num_items)

  @classmethod
  def popularity(cls, counts, alpha: float, smoothing: float = 1.0) -> "CorpusDistribution":
    return cls(len(counts), popularity_probabilities(counts, alpha, smoothing))

  def probabilities(self) -> np.ndarray:
    """P(item) of one draw: float64[num_items], entry 0 is 0."""
    if self._probabilities is not None:
      return self._probabilities.copy()
    probs = np.full(self.num_items, 1.0 / (self.num_items - 1))
    probs[0] = 0.0
    return probs

  def draw(self, shape, seed):
    """int64 item ids of `shape` (a shape tensor or list), i.i.d. from the distribution."""
    import tensorflow as tf

    if self._cdf is None:
      return tf.random.stateless_uniform(shape, seed, minval=1, maxval=self.num_items,
                                         dtype=tf.int64)
    u = tf.random.stateless_uniform(shape, seed, dtype=tf.float64)
    idx = tf.searchsorted(self._cdf, tf.reshape(u, [-1]), side="right", out_type=tf.int64)
    # Rounding can leave the last cdf entry a hair under 1.
    idx = tf.minimum(idx, self.num_items - 2)
    return tf.reshape(idx + 1, shape)

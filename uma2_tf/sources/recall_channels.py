"""Draws shared by the simulator's legacy pipelines (`simulator`, `learned_pipeline`).

    by_category = CategoryItems(item_category, weights, num_categories)
    items = by_category.draw(categories, rng)       # an item of each category, ∝ weights
    categories = choose_among(source, count, rng)   # `count` entries of each row's non-zero ones
    items = pick_from_pool(pool, rows, count, rng)  # `count` distinct pool items per row
"""
from __future__ import annotations

import numpy as np


class CategoryItems:
  """Weighted draws of an item within given categories by one `searchsorted`: items sorted by
  category, each category's normalised cumulative weight shifted by its index, queried at
  `category + u`.

  Attributes:
    has_items: bool[num_categories + 1], whether a category has an item of positive weight.
  """

  def __init__(self, item_category: np.ndarray, weights: np.ndarray, num_categories: int):
    """`item_category`, `weights`: [num_items + 1] (row 0, the padding id, is never drawn)."""
    items = np.arange(1, len(item_category))
    self.items = items[np.argsort(item_category[1:], kind="stable")]
    cats = item_category[self.items]
    w = np.asarray(weights, np.float64)[self.items]
    cum = np.cumsum(w)
    start = np.searchsorted(cats, cats, side="left")
    before = np.where(start > 0, cum[start - 1], 0.0)
    totals = np.zeros(num_categories + 1)
    np.add.at(totals, cats, w)
    self.key = cats + (cum - before) / totals[cats]
    self.has_items = totals > 0

  def draw(self, categories: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """An item of each entry of `categories` (any shape; categories with items only)."""
    position = np.searchsorted(self.key, categories + rng.random(categories.shape), side="right")
    return self.items[np.minimum(position, len(self.items) - 1)]


def choose_among(source: np.ndarray, count: int, rng: np.random.Generator) -> np.ndarray:
  """[R, count] entries drawn uniformly with replacement among the non-zero entries of each row of
  `source` [R, S] (a row of zeros gives zeros)."""
  valid = source > 0
  keys = np.where(valid[:, None, :], rng.random((len(source), count, source.shape[1])), -1.0)
  return np.take_along_axis(source, keys.argmax(2), 1)


def pick_from_pool(pool: np.ndarray, rows: int, count: int, rng: np.random.Generator) -> np.ndarray:
  """[rows, count] distinct entries of `pool` per row, uniformly."""
  pick = np.argsort(rng.random((rows, len(pool))), axis=1)[:, :count]
  return pool[pick]

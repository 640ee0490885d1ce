"""Draws shared by the simulator's legacy pipelines (`simulator`, `learned_pipeline`).

    by_category = CategoryItems(item_category, weights, num_categories)
    items = by_category.draw(categories, rng)       # an item of each category, ∝ weights
    categories = choose_among(source, count, rng)   # `count` entries of each row's non-zero ones
    items = pick_from_pool(pool, rows, count, rng)  # `count` distinct pool items per row
    candidates = recall(config, users, history, rng, RecallSources(...))  # the four channels
"""
from __future__ import annotations

import dataclasses
from typing import Callable

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


@dataclasses.dataclass(frozen=True)
class RecallSources:
  """What a legacy pipeline's recall reads: the parts both pipelines share, and as functions the
  parts where one reads the world and the other its own models.

  Attributes:
    popular: the popular channel's pool of item ids.
    item_category: category of each item id [num_items + 1] (0 for the padding id).
    by_category: weighted draws of an item within a category.
    fill_cold: (users, source [R, W], cold bool[R], rng) -> the source categories of the users
      with no click yet filled in.
    any_category: (shape, rng) -> categories standing in for those with no item.
    score_pool: (users, pool [R, P], rng) -> the old model's scores [R, P] of the pool's items.
  """

  popular: np.ndarray
  item_category: np.ndarray
  by_category: CategoryItems
  fill_cold: Callable[..., np.ndarray]
  any_category: Callable[..., np.ndarray]
  score_pool: Callable[..., np.ndarray]


def recall(config, users: np.ndarray, history: np.ndarray, rng: np.random.Generator,
           sources: RecallSources) -> np.ndarray:
  """Candidate ids [R, recall_size_max] of the channels `config` (a `SimulatorConfig`) sizes:
  popular, history (items of the categories of the user's last clicks), old model (the best
  scored of a random pool), random. Duplicates and already-clicked items are not yet removed."""
  c = config
  n = len(users)
  channels = []
  if c.recall_popular:
    channels.append(pick_from_pool(sources.popular, n, c.recall_popular, rng))
  if c.recall_history:
    source = sources.item_category[history[:, -c.history_window:]]  # 0 where history is padding.
    cold = ~source.any(1)
    if cold.any():
      source = sources.fill_cold(users, source, cold, rng)
    chosen = choose_among(source, c.recall_history, rng)
    chosen = np.where(sources.by_category.has_items[chosen], chosen,
                      sources.any_category(chosen.shape, rng))
    channels.append(sources.by_category.draw(chosen, rng))
  if c.recall_old_model:
    pool = rng.integers(1, c.num_items + 1, (n, c.old_model_pool))
    scores = sources.score_pool(users, pool, rng)
    top = np.argpartition(-scores, c.recall_old_model - 1, axis=1)[:, :c.recall_old_model]
    channels.append(np.take_along_axis(pool, top, 1))
  if c.recall_random:
    channels.append(rng.integers(1, c.num_items + 1, (n, c.recall_random)))
  return np.concatenate(channels, axis=1)

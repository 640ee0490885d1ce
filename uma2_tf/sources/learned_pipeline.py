"""A legacy pipeline that learned from its own logs: it recalls and ranks without the true affinity.

The simulator's default pipeline (`simulator._LegacyPipeline`) reads the true affinity through
noise. This one is what a real system runs: an implicit-feedback matrix factorisation for the
old-model recall channel and a logistic ranker, both fitted on the clicks and exposures of the
rounds before, refit after every round. Its inputs are only what a real system has: the item
metadata (category, author) and the logs it wrote. The true affinity reaches it only through the
clicks.

    pipeline = LearnedPipeline(config, item_category, item_author, rng)
    recalled, n_recalled, exposed, features = pipeline.serve(users, history, rng)
    clicked = ...                                  # drawn by the world
    pipeline.observe(users, exposed, clicked, features)
    pipeline.refit()                               # after each round

Channels (sizes as in `SimulatorConfig`): popular = the most clicked items so far; history = items
of the categories of the user's recent clicks, weighted by clicks + 1 (cold users: categories by
their share of all clicks); old model = the MF's top items over a random pool; random. Before the
first refit the MF factors are small random vectors and the ranker's weights 0 (ties broken at
random): day 1 is served as a cold-started system would.
"""
from __future__ import annotations

import numpy as np

from uma2_tf.sources import recall_channels

# The ranker's features, logged at serving time for every exposed item (what it saw then).
FEATURES = ("mf_score", "log_clicks", "ctr", "history_category_share", "history_author_share",
            "cold_user")
_CTR_PRIOR_EXPOSURES = 20.0  # Pseudo-exposures pulling a rarely shown item's CTR to the mean.
_NEWTON_STEPS = 4


class LearnedPipeline:
  """Recall (4 channels) -> logistic ranking -> exposure, refit on its own logs."""

  def __init__(self, config, item_category: np.ndarray, item_author: np.ndarray,
               rng: np.random.Generator):
    c = self.config = config
    self.item_category = np.asarray(item_category, np.int64)
    self.item_author = np.asarray(item_author, np.int64)
    self.num_items = c.num_items
    dim = c.learned_mf_dim
    self.user_factors = np.zeros((c.num_users + 1, dim))
    self.item_factors = 0.01 * rng.standard_normal((c.num_items + 1, dim))
    self.item_factors[0] = 0
    self.ranker_weights = np.zeros(len(FEATURES) + 1)  # Last: the bias.
    self.feature_mean = np.zeros(len(FEATURES))
    self.feature_std = np.ones(len(FEATURES))
    # Fixed random priorities break ties among equally clicked items (all of them on day 1).
    self._tie_priority = rng.random(c.num_items + 1)
    self.click_count = np.zeros(c.num_items + 1)
    self.exposure_count = np.zeros(c.num_items + 1)
    self._clicks: list[tuple[np.ndarray, np.ndarray]] = []  # (users, items) per observed chunk.
    self._pending_clicks: list[tuple[np.ndarray, np.ndarray]] = []
    self._logged: list[tuple[np.ndarray, np.ndarray]] = []  # (features, labels) of exposures.
    self._pending_exposed: list[np.ndarray] = []
    self._rebuild_channels()

  # ---- serving ---------------------------------------------------------------------------------

  def recall(self, users: np.ndarray, history: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Candidate ids [R, recall_size_max] (duplicates and already-clicked items not yet removed)."""
    # Built per call: the channels' pools and the factors change at every refit.
    sources = recall_channels.RecallSources(
        self.popular, self.item_category, self.by_category, fill_cold=self._fill_cold,
        any_category=lambda shape, rng: self._draw(self.category_cdf, shape, rng),
        score_pool=lambda users, pool, rng: np.einsum(
            "rd,rpd->rp", self.user_factors[users], self.item_factors[pool]))
    return recall_channels.recall(self.config, users, history, rng, sources)

  def _fill_cold(self, users, source, cold, rng):
    # No click yet: a category by its share of all clicks stands in.
    source[cold, 0] = self._draw(self.category_cdf, int(cold.sum()), rng)
    return source

  def features(self, users: np.ndarray, history: np.ndarray, items: np.ndarray) -> np.ndarray:
    """The ranker's raw features [R, C, len(FEATURES)] of candidates `items` [R, C]."""
    mf = np.einsum("rd,rcd->rc", self.user_factors[users], self.item_factors[items])
    clicks, shown = self.click_count[items], self.exposure_count[items]
    mean_ctr = self.click_count.sum() / max(self.exposure_count.sum(), 1.0)
    ctr = (clicks + _CTR_PRIOR_EXPOSURES * mean_ctr) / (shown + _CTR_PRIOR_EXPOSURES)
    has = history > 0
    length = np.maximum(has.sum(1), 1)[:, None]
    hist_cat = np.where(has, self.item_category[history], -1)
    hist_author = np.where(has, self.item_author[history], -1)
    cat_share = (self.item_category[items][:, :, None] == hist_cat[:, None, :]).sum(2) / length
    author_share = (self.item_author[items][:, :, None] == hist_author[:, None, :]).sum(2) / length
    cold = np.broadcast_to(~has.any(1)[:, None], items.shape)
    return np.stack([mf, np.log1p(clicks), ctr, cat_share, author_share, cold], axis=-1)

  def serve(self, users: np.ndarray, history: np.ndarray, rng: np.random.Generator):
    """One request per user: (recalled [R, C] ranked with 0 padding, n_recalled [R], exposed
    [R, E] with 0 padding, the exposed items' logged features [R, E, len(FEATURES)])."""
    candidates = self.recall(users, history, rng)
    candidates.sort(axis=1)
    duplicate = np.zeros(candidates.shape, bool)
    duplicate[:, 1:] = candidates[:, 1:] == candidates[:, :-1]
    seen = (candidates[:, :, None] == history[:, None, :]).any(2)
    valid = ~duplicate & ~seen
    raw = self.features(users, history, candidates)
    score = self.score(raw)
    score[~valid] = -np.inf
    # Highest score first; equal scores (an unfitted ranker's) in random order.
    order = np.lexsort((rng.random(score.shape), -score), axis=-1)
    recalled = np.where(np.take_along_axis(valid, order, 1),
                        np.take_along_axis(candidates, order, 1), 0)
    e = self.config.exposure_size
    exposed = recalled[:, :e]
    logged = np.take_along_axis(raw, order[:, :e, None], 1)
    return recalled, valid.sum(1), exposed, logged

  def score(self, raw: np.ndarray) -> np.ndarray:
    """The ranker's logit of raw features [..., len(FEATURES)]."""
    standard = (raw - self.feature_mean) / self.feature_std
    return standard @ self.ranker_weights[:-1] + self.ranker_weights[-1]

  # ---- learning from the logs ------------------------------------------------------------------

  def observe(self, users: np.ndarray, exposed: np.ndarray, clicked: np.ndarray,
              logged: np.ndarray) -> None:
    """Records one served chunk's outcome; the models use it from the next `refit` on."""
    shown = exposed > 0
    self._logged.append((logged[shown], clicked[shown].astype(np.float64)))
    self._pending_exposed.append(exposed[shown])
    hit = shown & (clicked > 0)
    self._pending_clicks.append((np.broadcast_to(users[:, None], exposed.shape)[hit], exposed[hit]))

  def refit(self) -> None:
    """Folds the logs observed since the last refit in and refits the MF and the ranker."""
    for items in self._pending_exposed:
      self.exposure_count += np.bincount(items, minlength=self.num_items + 1)
    for clicks in self._pending_clicks:
      self.click_count += np.bincount(clicks[1], minlength=self.num_items + 1)
    self._clicks += self._pending_clicks
    self._pending_exposed, self._pending_clicks = [], []
    if self._clicks:
      users = np.concatenate([u for u, _ in self._clicks])
      items = np.concatenate([i for _, i in self._clicks])
      for _ in range(self.config.learned_mf_iterations):
        self.user_factors = self._als_half(self.item_factors, users, items, len(self.user_factors))
        self.item_factors = self._als_half(self.user_factors, items, users, len(self.item_factors))
    if self._logged:
      self._fit_ranker(np.concatenate([f for f, _ in self._logged]),
                       np.concatenate([y for _, y in self._logged]))
    self._rebuild_channels()

  def _als_half(self, fixed: np.ndarray, rows: np.ndarray, cols: np.ndarray,
                num_rows: int) -> np.ndarray:
    """One half-step of implicit ALS (Hu, Koren & Volinsky 2008): every row's factors given the
    other side's. Preference 1 with confidence 1 + α per click, 0 with confidence 1 elsewhere."""
    alpha, reg = self.config.learned_mf_confidence, self.config.learned_mf_regularization
    dim = fixed.shape[1]
    lhs = np.broadcast_to(fixed[1:].T @ fixed[1:] + reg * np.eye(dim), (num_rows, dim, dim)).copy()
    rhs = np.zeros((num_rows, dim))
    # A pair clicked n times has confidence 1 + α n and preference 1: group the repeats first.
    pairs, count = np.unique(rows.astype(np.int64) * len(fixed) + cols, return_counts=True)
    rows, cols = pairs // len(fixed), pairs % len(fixed)
    for start in range(0, len(rows), 65536):  # Bounded memory: [chunk, dim, dim] at a time.
      r, f = rows[start:start + 65536], fixed[cols[start:start + 65536]]
      n = count[start:start + 65536, None]
      unique, first = np.unique(r, return_index=True)  # `pairs` is sorted, so rows are too.
      lhs[unique] += np.add.reduceat(alpha * n[:, :, None] * f[:, :, None] * f[:, None, :], first,
                                     axis=0)
      rhs[unique] += np.add.reduceat((1 + alpha * n) * f, first, axis=0)
    factors = np.linalg.solve(lhs, rhs[..., None])[..., 0]
    factors[0] = 0  # The padding id.
    return factors

  def _fit_ranker(self, raw: np.ndarray, labels: np.ndarray) -> None:
    """L2-regularised logistic regression by Newton steps, warm-started, standardised features."""
    self.feature_mean = raw.mean(0)
    self.feature_std = np.maximum(raw.std(0), 1e-6)
    x = np.concatenate([(raw - self.feature_mean) / self.feature_std,
                        np.ones((len(raw), 1))], axis=1)
    l2 = self.config.learned_ranker_l2 * np.r_[np.ones(len(FEATURES)), 0.0]  # Bias unpenalised.
    w = self.ranker_weights
    for _ in range(_NEWTON_STEPS):
      p = 0.5 * (1.0 + np.tanh(0.5 * (x @ w)))  # The sigmoid, without exp's overflow.
      gradient = x.T @ (p - labels) + l2 * w
      hessian = (x * (p * (1 - p))[:, None]).T @ x + np.diag(l2 + 1e-9)
      w = w - np.linalg.solve(hessian, gradient)
    self.ranker_weights = w

  def _rebuild_channels(self) -> None:
    """The popular pool, the category draws and the within-category draws from the counts."""
    c = self.config
    order = np.lexsort((-self._tie_priority[1:], -self.click_count[1:]))
    self.popular = order[:c.popular_pool] + 1
    self.by_category = recall_channels.CategoryItems(self.item_category, self.click_count + 1.0,
                                                     c.num_categories)
    # Cold users' categories: by their share of the clicks so far (+1 each, so all are possible).
    category_clicks = np.bincount(self.item_category, weights=self.click_count,
                                  minlength=c.num_categories + 1)
    share = np.where(self.by_category.has_items, category_clicks + 1.0, 0.0)
    self.category_cdf = np.cumsum(share) / share.sum()

  @staticmethod
  def _draw(cdf: np.ndarray, shape, rng: np.random.Generator) -> np.ndarray:
    return np.minimum(np.searchsorted(cdf, rng.random(shape), side="right"), len(cdf) - 1)

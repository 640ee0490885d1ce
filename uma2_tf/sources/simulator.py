"""A simulated recommender: a world with true affinity, and the logs its legacy pipeline writes.

This is the generative process of DESIGN.md §4, in numpy, deterministic from one seed:

1. **World.** Items have a category (Zipf over categories), an author (authors write in one
   category), a latent vector near their category's centre and a heavy-tailed popularity bias.
   Users have 1-3 interest categories, a latent vector built from them, and demographic fields
   (age, gender, region) that correlate with their main interest.
   True affinity: `a(u, i) = <z_u, z_i> / sqrt(d) + beta * pop_i`.
2. **Legacy pipeline**, which a new model knows nothing about. Each request:
   recall = union of four channels - popular items, items of the user's recent history categories,
   an "old model" (top of a noisy affinity over a random candidate pool) and a few random items -
   minus what the user already clicked; ranking by `a + noise`; the top-E exposed in that order;
   click ~ Bernoulli(sigmoid(alpha * a - click_bias - position_effect * position)).
   That pipeline (`legacy_pipeline="noisy_truth"`) reads the true affinity through noise (an
   infinite noise makes a channel or the ranking uniformly random). `legacy_pipeline="learned"`
   (`learned_pipeline.LearnedPipeline`) recalls and ranks with models fitted on the logs of the
   earlier rounds instead: the true affinity enters only through the clicks.
3. **Time.** Days 1..N, each in `rounds_per_day` rounds; in a round each user makes a request with
   probability `requests_per_user_day / rounds_per_day`, and histories grow with the round's clicks
   before the next round. Days 1..N-1 are the train split, day N the test split.

    config = CONFIGS["tiny"]
    world, log = simulate(config)
    stats = compute_stats(log, config)
    world.true_top_k(np.array([1, 2, 3]), k=100)    # the oracle's retrieval

The simulation runs in chunks of `chunk_size` requests so memory stays bounded at the `paper`
scale (see `CONFIGS`). Every knob is a field of `SimulatorConfig`.
"""
from __future__ import annotations

import dataclasses
import os
from typing import Iterator, Mapping

import numpy as np

from uma2_tf.data import schema as schema_lib
from uma2_tf import atomic_files
from uma2_tf.sources import recall_channels

WORLD_FILE = "world.npz"
USER_FEATURES = ("age", "gender", "region")
ITEM_FEATURES = ("category", "author", "pop_bucket")
NUM_POP_BUCKETS = 10
LEGACY_PIPELINES = ("noisy_truth", "learned")


@dataclasses.dataclass(frozen=True)
class SimulatorConfig:
  """Every knob of the simulated world and its legacy pipeline.

  World:
    num_users, num_items: real ids are 1..num_users and 1..num_items (0 is padding).
    num_categories: item categories; their sizes follow Zipf(`category_zipf`).
    authors_per_category: authors writing in each category.
    latent_dim: d of the latent vectors.
    category_spread: std of an item's latent around its category centre (centres have unit-variance
      coordinates).
    user_interest_noise: std of a user's latent around the mean of their interest centres.
    max_interests: users have 1..max_interests interest categories.
    popularity_sigma: std of the log-normal popularity bias `pop_i` (its exp is heavy-tailed).
    popularity_beta: beta, the weight of `pop_i` in the true affinity.
    num_ages, num_regions: demographic vocabularies (gender has 2 values).
    demographic_correlation: probability that a user's age and gender follow their main interest
      (else uniform).
  Legacy pipeline:
    recall_popular: items recalled from the `popular_pool` most popular items (uniformly among
      them).
    recall_history: items recalled from the categories of the user's last `history_window` clicks
      (the interest categories for users without clicks), weighted by exp(pop_i).
    recall_old_model: the top items of a noisy affinity (user latent + N(0, old_model_noise)) over
      `old_model_pool` random items; `inf` noise: `recall_old_model` random items of the pool.
    recall_random: uniformly random items.
    exposure_size: E, items exposed per request (fewer only if the recall is smaller).
    ranking_noise: std of the noise the ranker adds to the true affinity (`inf`: random order).
    click_alpha, click_bias, position_effect: click ~
      Bernoulli(sigmoid(alpha a - bias - effect pos)).
    history_length: clicks kept per user (newest last) and written in each record.
    legacy_pipeline: `noisy_truth` (the channels and ranker above read the true affinity) or
      `learned` (`learned_pipeline`: counts, an implicit MF and a logistic ranker fitted on the
      earlier rounds' logs; the knobs below).
    learned_mf_dim, learned_mf_iterations, learned_mf_confidence, learned_mf_regularization: the
      learned old model's factors, ALS sweeps per refit, confidence α of a click and L2.
    learned_ranker_l2: L2 of the learned logistic ranker.
  Time:
    num_days: N; days 1..N-1 train, day N test.
    rounds_per_day, requests_per_user_day: see the module docstring.
  Other:
    seed: the same seed gives byte-identical logs.
    chunk_size: requests simulated at once. It bounds memory; the world and who requests when do not
      depend on it, the draws within requests do (it is part of what the seed reproduces).
  """

  num_users: int = 20000
  num_items: int = 10000
  num_categories: int = 50
  authors_per_category: int = 20
  latent_dim: int = 16
  category_spread: float = 0.6
  user_interest_noise: float = 0.4
  max_interests: int = 3
  popularity_sigma: float = 1.0
  popularity_beta: float = 0.5
  num_ages: int = 7
  num_regions: int = 20
  demographic_correlation: float = 0.7

  recall_popular: int = 30
  popular_pool: int = 200
  recall_history: int = 50
  history_window: int = 10
  recall_old_model: int = 60
  old_model_pool: int = 1500
  old_model_noise: float = 0.8
  recall_random: int = 10
  exposure_size: int = 10
  ranking_noise: float = 0.5
  click_alpha: float = 1.5
  click_bias: float = 9.0
  position_effect: float = 0.08
  history_length: int = 50
  legacy_pipeline: str = "noisy_truth"
  learned_mf_dim: int = 16
  learned_mf_iterations: int = 3
  learned_mf_confidence: float = 10.0
  learned_mf_regularization: float = 1.0
  learned_ranker_l2: float = 1.0

  num_days: int = 8
  rounds_per_day: int = 2
  requests_per_user_day: float = 0.8

  seed: int = 2024
  chunk_size: int = 2048

  def __post_init__(self):
    positive_ints = ("num_users", "num_items", "num_categories", "authors_per_category",
                     "latent_dim", "max_interests", "num_ages", "num_regions", "popular_pool",
                     "history_window", "old_model_pool", "exposure_size", "history_length",
                     "rounds_per_day", "chunk_size", "learned_mf_dim", "learned_mf_iterations")
    for name in positive_ints:
      if int(getattr(self, name)) < 1:
        raise ValueError(f"SimulatorConfig.{name} must be >= 1, got {getattr(self, name)}")
    for name in ("recall_popular", "recall_history", "recall_old_model", "recall_random"):
      if int(getattr(self, name)) < 0:
        raise ValueError(f"SimulatorConfig.{name} must be >= 0, got {getattr(self, name)}")
    if self.num_days < 2:
      raise ValueError(f"SimulatorConfig.num_days must be >= 2 (train days and a test day), "
                       f"got {self.num_days}")
    if self.num_categories > self.num_items:
      raise ValueError(f"SimulatorConfig.num_categories ({self.num_categories}) exceeds num_items "
                       f"({self.num_items})")
    if self.recall_popular > self.popular_pool or self.popular_pool > self.num_items:
      raise ValueError(f"SimulatorConfig: need recall_popular <= popular_pool <= num_items, got "
                       f"{self.recall_popular}, {self.popular_pool}, {self.num_items}")
    if self.recall_old_model > self.old_model_pool or self.old_model_pool > self.num_items:
      raise ValueError(f"SimulatorConfig: need recall_old_model <= old_model_pool <= num_items, "
                       f"got {self.recall_old_model}, {self.old_model_pool}, {self.num_items}")
    if self.recall_size_max < self.exposure_size:
      raise ValueError(f"SimulatorConfig: the recall channels ({self.recall_size_max} items) "
                       f"cannot fill an exposure of {self.exposure_size}")
    if not 0 < self.requests_per_user_day <= self.rounds_per_day:
      raise ValueError(f"SimulatorConfig.requests_per_user_day must be in (0, rounds_per_day="
                       f"{self.rounds_per_day}], got {self.requests_per_user_day}")
    for name in ("old_model_noise", "ranking_noise", "learned_mf_confidence",
                 "learned_mf_regularization", "learned_ranker_l2"):
      if not getattr(self, name) >= 0:  # NaN fails too; inf is allowed (no information).
        raise ValueError(f"SimulatorConfig.{name} must be >= 0 (inf allowed), "
                         f"got {getattr(self, name)}")
    if self.legacy_pipeline not in LEGACY_PIPELINES:
      raise ValueError(f"SimulatorConfig.legacy_pipeline must be one of {LEGACY_PIPELINES}, "
                       f"got {self.legacy_pipeline!r}")
    if not 0 <= self.demographic_correlation <= 1:
      raise ValueError(f"SimulatorConfig.demographic_correlation must be in [0, 1], got "
                       f"{self.demographic_correlation}")

  @property
  def recall_size_max(self) -> int:
    return self.recall_popular + self.recall_history + self.recall_old_model + self.recall_random

  @property
  def schema(self) -> schema_lib.LogSchema:
    return schema_lib.LogSchema(
        num_users=self.num_users + 1, num_items=self.num_items + 1,
        user_features={"age": self.num_ages + 1, "gender": 3, "region": self.num_regions + 1},
        item_features={"category": self.num_categories + 1,
                       "author": self.num_categories * self.authors_per_category + 1,
                       "pop_bucket": NUM_POP_BUCKETS + 1})


CONFIGS: Mapping[str, SimulatorConfig] = {
    # For tests: builds in seconds.
    "tiny": SimulatorConfig(num_users=600, num_items=1000, num_categories=12,
                            authors_per_category=5, recall_popular=10, popular_pool=50,
                            recall_history=20, recall_old_model=25, old_model_pool=300,
                            recall_random=5, exposure_size=8, num_days=4,
                            requests_per_user_day=1.0, chunk_size=512),
    # For `make train`: ~1.1e5 train positives, builds in about a minute on 2 cores.
    "default": SimulatorConfig(),
    # Paper Table 2 scale: 1.63M users, 283K items. Measured: 569K train requests, 953K train
    # positives (Table 2: ~949K), 24.8M samples with 25 negatives each; built in 10 min 21 s on
    # 2 cores with 2.1 GB peak memory
    # (`/usr/bin/time -v python -m pipelines.simulate --config=paper`).
    "paper": SimulatorConfig(num_users=1_630_000, num_items=283_000, num_categories=300,
                             authors_per_category=60, old_model_pool=3000,
                             requests_per_user_day=0.05, rounds_per_day=1, chunk_size=4096),
    # `default` served by a pipeline learned from its own logs (no true affinity but the clicks').
    "learned": SimulatorConfig(legacy_pipeline="learned"),
}


@dataclasses.dataclass(frozen=True)
class World:
  """The ground truth of a simulated dataset (row 0 of every array is the padding id).

  Attributes:
    user_latent: float32[num_users + 1, d].
    item_latent: float32[num_items + 1, d].
    item_popularity: float32[num_items + 1], pop_i (log-normal popularity is exp(pop_i)).
    popularity_beta: beta of the affinity.
    item_category, item_author: int64[num_items + 1].
    user_interests: int64[num_users + 1, max_interests], interest categories, 0-padded.
    user_features: name -> int64[num_users + 1] (age, gender, region).
  """

  user_latent: np.ndarray
  item_latent: np.ndarray
  item_popularity: np.ndarray
  popularity_beta: float
  item_category: np.ndarray
  item_author: np.ndarray
  user_interests: np.ndarray
  user_features: Mapping[str, np.ndarray]

  @property
  def num_items(self) -> int:
    return int(self.item_latent.shape[0]) - 1

  def true_affinity(self, user_ids: np.ndarray, item_ids: np.ndarray | None = None) -> np.ndarray:
    """a(u, i) for every user of `user_ids` and every item (or `item_ids`): [len(users), items]."""
    items = self.item_latent if item_ids is None else self.item_latent[item_ids]
    pop = self.item_popularity if item_ids is None else self.item_popularity[item_ids]
    d = self.item_latent.shape[1]
    return (self.user_latent[user_ids] @ items.T) / np.float32(np.sqrt(d)) + \
        np.float32(self.popularity_beta) * pop

  def true_top_k(self, user_ids: np.ndarray, k: int, chunk_size: int = 1024) -> np.ndarray:
    """The k items of highest true affinity per user (padding excluded), equal affinities by lower
    id first: int64[len(users), k]."""
    if not 0 < k <= self.num_items:
      raise ValueError(f"true_top_k: k must be in 1..{self.num_items}, got {k}")
    import tensorflow as tf  # Only here: the simulator itself is numpy.

    user_ids = np.asarray(user_ids, np.int64)
    out = np.empty((len(user_ids), k), np.int64)
    for start in range(0, len(user_ids), chunk_size):
      scores = self.true_affinity(user_ids[start:start + chunk_size])[:, 1:]
      # top_k uses both cores where numpy's argpartition used one: 4.6x faster on the paper's
      # 283K items (the test day's oracle took 217 s); the same items but for the order of ties.
      out[start:start + chunk_size] = tf.math.top_k(scores, k).indices.numpy() + 1
    return out

  def save(self, directory: str) -> None:
    atomic_files.atomic_savez(
        os.path.join(directory, WORLD_FILE), user_latent=self.user_latent,
        item_latent=self.item_latent, item_popularity=self.item_popularity,
        popularity_beta=np.float64(self.popularity_beta), item_category=self.item_category,
        item_author=self.item_author, user_interests=self.user_interests,
        **{f"user_feature/{k}": v for k, v in self.user_features.items()})

  @classmethod
  def load(cls, directory: str) -> "World":
    path = os.path.join(directory, WORLD_FILE)
    if not os.path.exists(path):
      raise FileNotFoundError(f"{path}: no {WORLD_FILE}; "
                              f"only simulated datasets have a true affinity")
    with np.load(path) as z:
      return cls(user_latent=z["user_latent"], item_latent=z["item_latent"],
                 item_popularity=z["item_popularity"], popularity_beta=float(z["popularity_beta"]),
                 item_category=z["item_category"], item_author=z["item_author"],
                 user_interests=z["user_interests"],
                 user_features={k.split("/", 1)[1]: z[k] for k in z.files
                                if k.startswith("user_feature/")})


@dataclasses.dataclass
class RequestLog:
  """All requests of a simulation, columnar. List fields are ragged: `values` plus `offsets`
  (`offsets[r]:offsets[r+1]` is request r's slice)."""

  request_id: np.ndarray
  day: np.ndarray
  user_id: np.ndarray
  lists: Mapping[str, tuple[np.ndarray, np.ndarray]]  # field -> (values, offsets)

  def __len__(self) -> int:
    return int(self.request_id.shape[0])

  def lengths(self, field: str) -> np.ndarray:
    return np.diff(self.lists[field][1])

  def list_of(self, field: str, r: int) -> np.ndarray:
    values, offsets = self.lists[field]
    return values[offsets[r]:offsets[r + 1]]

  def records(self, world: World, days: tuple[int, int]) -> Iterator[dict]:
    """Request records (DESIGN.md §4) of the days in [days[0], days[1]], as numpy int64 dicts."""
    features = {name: world.user_features[name] for name in USER_FEATURES}
    for r in np.flatnonzero((self.day >= days[0]) & (self.day <= days[1])):
      user = int(self.user_id[r])
      yield {schema_lib.REQUEST_ID: int(self.request_id[r]), schema_lib.DAY: int(self.day[r]),
             schema_lib.USER_ID: user, **{name: int(col[user]) for name, col in features.items()},
             **{field: self.list_of(field, r).astype(np.int64) for field in schema_lib.LIST_FIELDS}}


def build_world(config: SimulatorConfig, rng: np.random.Generator) -> World:
  """Draws the users, the items and their latents (step 1 of the module docstring)."""
  n_items, n_users, d, n_cat = (config.num_items, config.num_users, config.latent_dim,
                                config.num_categories)
  centres = rng.standard_normal((n_cat + 1, d)).astype(np.float32)
  centres[0] = 0
  category_share = 1.0 / np.arange(1, n_cat + 1) ** 1.1
  category = np.concatenate([[0], rng.choice(np.arange(1, n_cat + 1), size=n_items,
                                             p=category_share / category_share.sum())])
  author = np.zeros(n_items + 1, np.int64)
  author[1:] = (category[1:] - 1) * config.authors_per_category + \
      rng.integers(1, config.authors_per_category + 1, n_items)
  item_latent = centres[category] + config.category_spread * \
      rng.standard_normal((n_items + 1, d)).astype(np.float32)
  item_latent[0] = 0
  popularity = (config.popularity_sigma * rng.standard_normal(n_items + 1)).astype(np.float32)
  popularity[0] = 0

  # Interests: drawn like item categories, so big categories have many fans.
  num_interests = rng.integers(1, config.max_interests + 1, n_users + 1)
  interests = rng.choice(np.arange(1, n_cat + 1), size=(n_users + 1, config.max_interests),
                         p=category_share / category_share.sum())
  interests[np.arange(config.max_interests)[None, :] >= num_interests[:, None]] = 0
  interests[0] = 0
  user_latent = centres[interests].sum(1) / num_interests[:, None].astype(np.float32) + \
      config.user_interest_noise * rng.standard_normal((n_users + 1, d)).astype(np.float32)
  user_latent[0] = 0

  user_features = user_demographics(config, interests[:, 0], rng)
  return World(user_latent=user_latent.astype(np.float32),
               item_latent=item_latent.astype(np.float32), item_popularity=popularity,
               popularity_beta=config.popularity_beta, item_category=category.astype(np.int64),
               item_author=author, user_interests=interests.astype(np.int64),
               user_features={k: v.astype(np.int64) for k, v in user_features.items()})


def user_demographics(config: SimulatorConfig, main_interest: np.ndarray,
                      rng: np.random.Generator) -> dict[str, np.ndarray]:
  """Age, gender and region (int64[num_users + 1], row 0 padding) correlated with each user's main
  interest category `main_interest` (int64[num_users + 1]); shared by every way of making a
  world."""
  main = main_interest
  n = len(main)
  follows = rng.random(n) < config.demographic_correlation
  age = np.where(follows, (main * 7919) % config.num_ages + 1,
                 rng.integers(1, config.num_ages + 1, n))
  gender = np.where(follows, main % 2 + 1, rng.integers(1, 3, n))
  region = np.where(rng.random(n) < config.demographic_correlation / 2,
                    (main * 31) % config.num_regions + 1,
                    rng.integers(1, config.num_regions + 1, n))
  user_features = {"age": age, "gender": gender, "region": region}
  for column in user_features.values():
    column[0] = 0
  return user_features


class _LegacyPipeline:
  """The serving pipeline that wrote the logs: recall -> ranking -> exposure -> click."""

  def __init__(self, config: SimulatorConfig, world: World, rng: np.random.Generator):
    self.config, self.world = config, world
    self.sqrt_d = np.float32(np.sqrt(config.latent_dim))
    pop = world.item_popularity.copy()
    pop[0] = -np.inf
    self.popular = np.argsort(-pop, kind="stable")[:config.popular_pool]
    # The old model: each user's latent seen through its own fixed error (none: no information).
    self.old_user_latent = None if np.isinf(config.old_model_noise) else \
        world.user_latent + config.old_model_noise * \
        rng.standard_normal(world.user_latent.shape).astype(np.float32)
    self.by_category = recall_channels.CategoryItems(
        world.item_category, np.exp(world.item_popularity.astype(np.float64)),
        config.num_categories)
    self._sources = recall_channels.RecallSources(
        self.popular, world.item_category, self.by_category, fill_cold=self._fill_cold,
        any_category=self._any_category, score_pool=self._old_model_scores)

  def recall(self, users: np.ndarray, history: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Candidate ids [R, recall_size_max] (duplicates and already-clicked items not yet removed)."""
    return recall_channels.recall(self.config, users, history, rng, self._sources)

  def _fill_cold(self, users, source, cold, rng):
    # No click yet: the user's interest categories stand in for a history.
    c = self.config
    k = min(c.history_window, c.max_interests)
    fallback = np.zeros_like(source)
    fallback[:, :k] = self.world.user_interests[users][:, :k]
    return np.where(cold[:, None], fallback, source)

  def _old_model_scores(self, users, pool, rng):
    if self.old_user_latent is None:  # No information: a random order.
      return rng.random(pool.shape)
    return np.einsum("rd,rpd->rp", self.old_user_latent[users],
                     self.world.item_latent[pool]) / self.sqrt_d + \
        np.float32(self.config.popularity_beta) * self.world.item_popularity[pool]

  def end_round(self) -> None:
    """Nothing to learn: this pipeline reads the true affinity."""

  def _any_category(self, shape, rng):
    nonempty = np.flatnonzero(self.by_category.has_items)
    return nonempty[rng.integers(0, len(nonempty), shape)]

  def serve(self, users: np.ndarray, history: np.ndarray, rng: np.random.Generator):
    """One request per user: (recalled [R, C] ranked with 0 padding, n_recalled [R], exposed
    [R, E] with 0 padding, clicked [R, E])."""
    c, world = self.config, self.world
    candidates = self.recall(users, history, rng)
    candidates.sort(axis=1)
    duplicate = np.zeros(candidates.shape, bool)
    duplicate[:, 1:] = candidates[:, 1:] == candidates[:, :-1]
    seen = (candidates[:, :, None] == history[:, None, :]).any(2)
    valid = ~duplicate & ~seen
    affinity = np.einsum("rd,rcd->rc", world.user_latent[users],
                         world.item_latent[candidates]) / self.sqrt_d + \
        np.float32(c.popularity_beta) * world.item_popularity[candidates]
    if np.isinf(c.ranking_noise):
      rank_score = rng.random(affinity.shape)
    else:
      rank_score = affinity + np.float32(c.ranking_noise) * rng.standard_normal(affinity.shape,
                                                                                np.float32)
    rank_score[~valid] = -np.inf
    order = np.argsort(-rank_score, axis=1, kind="stable")
    recalled = np.where(np.take_along_axis(valid, order, 1),
                        np.take_along_axis(candidates, order, 1), 0)
    n_recalled = valid.sum(1)
    exposed = recalled[:, :c.exposure_size]
    clicked = draw_clicks(c, np.take_along_axis(affinity, order[:, :c.exposure_size], 1), exposed,
                          rng)
    return recalled, n_recalled, exposed, clicked


def draw_clicks(config: SimulatorConfig, affinity: np.ndarray, exposed: np.ndarray,
                rng: np.random.Generator) -> np.ndarray:
  """Clicks [R, E] (int64) on `exposed` [R, E] (0 padding) of true affinity `affinity` [R, E]:
  Bernoulli(sigmoid(alpha a - click_bias - position_effect position))."""
  logits = config.click_alpha * affinity - config.click_bias - \
      config.position_effect * np.arange(exposed.shape[1])[None, :]
  clicked = (rng.random(exposed.shape) < 1 / (1 + np.exp(-logits))) & (exposed > 0)
  return clicked.astype(np.int64)


class _LearnedServing:
  """`learned_pipeline.LearnedPipeline` behind `_LegacyPipeline.serve`'s interface: the pipeline
  sees the item metadata and its own logs; only the clicks read the world."""

  def __init__(self, config: SimulatorConfig, world: World, rng: np.random.Generator):
    from uma2_tf.sources import learned_pipeline

    self.config, self.world = config, world
    self.pipeline = learned_pipeline.LearnedPipeline(config, world.item_category,
                                                     world.item_author, rng)

  def serve(self, users: np.ndarray, history: np.ndarray, rng: np.random.Generator):
    recalled, n_recalled, exposed, logged = self.pipeline.serve(users, history, rng)
    affinity = np.einsum("rd,red->re", self.world.user_latent[users],
                         self.world.item_latent[exposed]) / np.float32(
                             np.sqrt(self.config.latent_dim)) + \
        np.float32(self.config.popularity_beta) * self.world.item_popularity[exposed]
    clicked = draw_clicks(self.config, affinity, exposed, rng)
    self.pipeline.observe(users, exposed, clicked, logged)
    return recalled, n_recalled, exposed, clicked

  def end_round(self) -> None:
    self.pipeline.refit()


def simulate(config: SimulatorConfig, progress=None,
             world: World | None = None) -> tuple[World, RequestLog]:
  """Runs the whole simulation. `progress(done_days, num_days)` is called after each day.

  `world`, if given, replaces the one `build_world` would draw (e.g. a world fitted from real
  interactions, `movielens.fit_world`); its sizes must be the config's.
  """
  seeds = np.random.SeedSequence(config.seed).spawn(4)
  if world is None:
    world = build_world(config, np.random.default_rng(seeds[0]))
  else:
    _check_world(world, config)
  serving = _LearnedServing if config.legacy_pipeline == "learned" else _LegacyPipeline
  pipeline = serving(config, world, np.random.default_rng(seeds[1]))
  activity_rng, rng = np.random.default_rng(seeds[2]), np.random.default_rng(seeds[3])
  h = config.history_length
  history = np.zeros((config.num_users + 1, h), np.int32)
  columns = {"request_id": [], "day": [], "user_id": []}
  pieces = {field: [] for field in schema_lib.LIST_FIELDS}
  lengths = {field: [] for field in schema_lib.LIST_FIELDS}
  next_id = 1
  p_request = config.requests_per_user_day / config.rounds_per_day
  for day in range(1, config.num_days + 1):
    for _ in range(config.rounds_per_day):
      active = np.flatnonzero(activity_rng.random(config.num_users) < p_request) + 1
      round_users, round_clicks = [], []
      for start in range(0, len(active), config.chunk_size):
        users = active[start:start + config.chunk_size]
        user_history = history[users]
        recalled, n_recalled, exposed, clicked = pipeline.serve(users, user_history, rng)
        n_exposed = (exposed > 0).sum(1)
        columns["request_id"].append(np.arange(next_id, next_id + len(users)))
        columns["day"].append(np.full(len(users), day))
        columns["user_id"].append(users)
        next_id += len(users)
        _append_ragged(pieces, lengths, schema_lib.HISTORY, user_history,
                       (user_history > 0).sum(1), left_padded=True)
        _append_ragged(pieces, lengths, schema_lib.RECALLED, recalled, n_recalled)
        _append_ragged(pieces, lengths, schema_lib.EXPOSED, exposed, n_exposed)
        _append_ragged(pieces, lengths, schema_lib.CLICKED, clicked, n_exposed)
        round_users.append(users)
        round_clicks.append(np.where(clicked > 0, exposed, 0))
      if round_users:  # Histories grow only after the round: a request never sees its own clicks.
        _append_clicks(history, np.concatenate(round_users), np.concatenate(round_clicks))
      pipeline.end_round()
    if progress is not None:
      progress(day, config.num_days)
  lists = {}
  for field in schema_lib.LIST_FIELDS:
    values = np.concatenate(pieces[field]) if pieces[field] else np.zeros(0, np.int32)
    offsets = np.concatenate([[0], np.cumsum(np.concatenate(lengths[field]))]).astype(np.int64)
    lists[field] = (values.astype(np.int32), offsets)
  log = RequestLog(request_id=np.concatenate(columns["request_id"]).astype(np.int64),
                   day=np.concatenate(columns["day"]).astype(np.int64),
                   user_id=np.concatenate(columns["user_id"]).astype(np.int64), lists=lists)
  return world, log


def _check_world(world: World, config: SimulatorConfig) -> None:
  """A given world must fit the config's id spaces, or the pipeline would index out of range."""
  expected = {"user_latent": (config.num_users + 1, config.latent_dim),
              "item_latent": (config.num_items + 1, config.latent_dim),
              "item_popularity": (config.num_items + 1,), "item_category": (config.num_items + 1,),
              "item_author": (config.num_items + 1,),
              "user_interests": (config.num_users + 1, config.max_interests)}
  arrays = {name: getattr(world, name) for name in expected}
  for name in USER_FEATURES:
    expected[f"user_features[{name!r}]"] = (config.num_users + 1,)
    arrays[f"user_features[{name!r}]"] = world.user_features[name]
  for name, shape in expected.items():
    if arrays[name].shape != shape:
      raise ValueError(f"simulate: world.{name} has shape {arrays[name].shape}, "
                       f"the config needs {shape}")
  if world.item_category.max() > config.num_categories:
    raise ValueError(f"simulate: world has category {world.item_category.max()}, the config has "
                     f"{config.num_categories}")


def _append_ragged(pieces, lengths, field, padded: np.ndarray, n: np.ndarray, left_padded=False):
  width = padded.shape[1]
  columns = np.arange(width)[None, :]
  keep = columns >= (width - n)[:, None] if left_padded else columns < n[:, None]
  pieces[field].append(padded[keep].astype(np.int32))  # Row-major: each row's values in order.
  lengths[field].append(n)


def _append_clicks(history: np.ndarray, users: np.ndarray, clicks: np.ndarray) -> None:
  """Appends each user's clicked items (0 = none) in position order, newest last."""
  for position in range(clicks.shape[1]):
    has = clicks[:, position] > 0
    if not has.any():
      continue
    who = users[has]
    history[who, :-1] = history[who, 1:]
    history[who, -1] = clicks[has, position]


def item_catalog(config: SimulatorConfig, world: World, log: RequestLog) -> schema_lib.ItemCatalog:
  """The catalog: features from the world, popularity counted on the train days only."""
  train = log.day < config.num_days
  exposed_values, exposed_offsets = log.lists[schema_lib.EXPOSED]
  clicked_values, _ = log.lists[schema_lib.CLICKED]
  in_train = np.repeat(train, np.diff(exposed_offsets))
  n = config.num_items + 1
  exposure_count = np.bincount(exposed_values[in_train], minlength=n).astype(np.int64)
  click_count = np.bincount(exposed_values[in_train], weights=clicked_values[in_train],
                            minlength=n).astype(np.int64)
  # Buckets 1..10 by rank of (clicks, exposures); ties share the lower rank's bucket.
  order = np.lexsort((exposure_count[1:], click_count[1:]))
  rank = np.empty(config.num_items, np.int64)
  rank[order] = np.arange(config.num_items)
  pop_bucket = np.zeros(n, np.int64)
  pop_bucket[1:] = rank * NUM_POP_BUCKETS // config.num_items + 1
  return schema_lib.ItemCatalog(
      features={"category": world.item_category, "author": world.item_author,
                "pop_bucket": pop_bucket},
      click_count=click_count, exposure_count=exposure_count)


def compute_stats(log: RequestLog, config: SimulatorConfig, num_negatives: int = 25) -> dict:
  """What `make data` prints and writes as stats.json, per split and overall."""
  exposed_len = log.lengths(schema_lib.EXPOSED)
  recalled_len = log.lengths(schema_lib.RECALLED)
  clicks = np.add.reduceat(log.lists[schema_lib.CLICKED][0].astype(np.int64),
                           log.lists[schema_lib.CLICKED][1][:-1]) if len(log) else np.zeros(0)
  clicks = np.where(exposed_len > 0, clicks, 0)  # reduceat repeats the next value on empty slices.
  a_pool = exposed_len - clicks
  b_pool = recalled_len - exposed_len
  stats = {"num_users": config.num_users, "num_items": config.num_items,
           "num_days": config.num_days}
  for split, rows in (("train", log.day < config.num_days), ("test", log.day == config.num_days)):
    positives = int(clicks[rows].sum())
    with_pools = int(clicks[rows & (a_pool >= 1) & (b_pool >= 4)].sum())
    stats.update({
        f"{split}_requests": int(rows.sum()),
        f"{split}_active_users": int(len(np.unique(log.user_id[rows]))),
        f"{split}_positives": positives,
        f"{split}_samples": positives * (1 + num_negatives),
        f"{split}_mean_recall_size": (round(float(recalled_len[rows].mean()), 2)
                                      if rows.any() else 0.0),
        f"{split}_mean_exposure_size": (round(float(exposed_len[rows].mean()), 2)
                                        if rows.any() else 0.0),
        f"{split}_ctr": round(positives / max(1, int(exposed_len[rows].sum())), 4),
        f"{split}_share_positives_with_1a_4b": round(with_pools / max(1, positives), 4),
    })
  return stats

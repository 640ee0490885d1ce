"""A second world: the simulator's ground truth fitted from real MovieLens ratings.

The simulated world (`simulator.build_world`) draws its users and items; this module fits them from
a real interactions file instead, so the true affinity comes from real people while recall,
exposure and clicks are still simulated by the legacy pipeline (`simulator.simulate(world=...)`):

    interactions = read_interactions("ml-100k/u.data")
    world, config = fit_world(interactions, CONFIGS["ml100k"], seed=0)
    world, log = simulator.simulate(config, world=world)

The TFDS builder `uma2_movielens` (`movielens_builder.py`) does this from TFDS's manual dir.

**Reading.** `read_interactions` reads ml-100k's `u.data` exactly (`user id<TAB>item id<TAB>rating
<TAB>timestamp`, integers, ratings 1..5, ids from 1) and ml-1m's `ratings.dat` (the same fields
separated by `::`). Anything else is one `ValueError` naming the file, the line, the field and what
was expected; no line is skipped.

**Fitting** (`fit_world`):
- Ids: raw user and item ids are re-indexed densely 1..n in increasing raw-id order; the raw ids
  are `Interactions.user_ids` / `item_ids` (dense id k is raw id `user_ids[k - 1]`), saved beside a
  built dataset as `movielens_ids.npz` by `save_id_maps`.
- Latents: a truncated SVD (`scipy.sparse.linalg.svds`, ARPACK with a seeded start vector) of the
  binary user x item matrix's standardised residuals (x_ui - e_ui) / sqrt(e_ui), e_ui = n_u n_i / N
  (the matrix of correspondence analysis).
  Binary, because a simulated click is a choice to consume and in MovieLens the trace of that choice
  is that a rating exists (a 1-star rating is still a watch); the stars measure satisfaction
  afterwards, which the simulator does not model.
  Residuals from e_ui, the count expected from the user's activity and the item's popularity alone,
  because popularity has its own term `beta * pop_i` in the affinity (an uncentred SVD's first
  factor is popularity, which would then count twice) and activity is not taste; dividing by
  sqrt(e_ui) keeps heavy users and blockbusters from owning the factors.
  SVD rather than ALS: exact (no iteration count or regulariser to choose), deterministic given its
  start vector, and only sparse products.
  z_u = U sqrt(S), z_i = V sqrt(S), then rescaled (`reference_scale`, the average of 64 worlds
  `build_world` draws for the same config):
  every user to the same norm, the simulated users' RMS: a user's ranking of items by <z_u, z_i>
  does not depend on it, but their click-through rate does, and an unnormalised heavy user clicks
  nearly everything shown (on an ml-100k-like file, half the positives then had no unclicked
  exposure); and the legacy "old model" adds N(0, old_model_noise) to z_u, so z_u's scale sets how
  good that recall channel is.
  Items so the standard deviation of <z_u, z_i>/sqrt(d) over all pairs is the simulated worlds'
  (so `click_alpha` and `click_bias` keep their meaning).
- Popularity: pop_i = popularity_sigma x the standardised log rating count.
- Categories: spherical k-means (k-means++ start, seeded) of the item latents' directions into
  `num_categories` clusters, numbered by decreasing size as the simulator's Zipf categories are.
  Directions, because the norm of an item's latent mostly says how much is known about it.
- Authors: as `build_world` (each category's items spread over its `authors_per_category`).
- Interests: a user's categories by how many of their rated items fall in each, the most first;
  kept: up to `max_interests`, each with at least half the main category's count.
- Demographics: `simulator.user_demographics` from the main interest, as `build_world`.
The returned config is the given one with `num_users`/`num_items` from the file and the item pools
(`num_categories`, `popular_pool`, `old_model_pool` and their recall counts) clamped to the catalog.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
from typing import Mapping

import numpy as np

from uma2_tf.sources import simulator
from uma2_tf import atomic_files

IDS_FILE = "movielens_ids.npz"
SOURCE_FILE = "source.json"
FIELDS = ("user id", "item id", "rating", "timestamp")
_INTEGER = re.compile(rb"[0-9]+")
_MAX_SPREAD_USERS = 2000  # Users sampled to measure the affinity spread (all items each).
REFERENCE_WORLDS = 64  # Simulated worlds whose affinity spread `fit_world` matches, on average.

# The legacy pipeline's knobs for MovieLens-sized catalogs; num_users/num_items come from the file.
# 18 categories: ml-100k's genre count, so a category is about as coarse as a genre.
CONFIGS: Mapping[str, simulator.SimulatorConfig] = {
    # ml-100k: 943 users, 1682 items, 100K ratings. One request per user and day.
    "ml100k": dataclasses.replace(simulator.CONFIGS["default"], num_categories=18,
                                  authors_per_category=10, old_model_pool=1000,
                                  requests_per_user_day=1.0),
    # ml-1m: 6040 users, 3706 items, 1M ratings.
    "ml1m": dataclasses.replace(simulator.CONFIGS["default"], num_categories=18,
                                authors_per_category=20),
    # For tests and small files (the 60-user fixture `data/movielens/u.data`): the `tiny` simulated
    # pipeline, and more requests per user and day, since a catalog of ~100 items has few items of
    # high affinity and so a low click-through rate.
    "tiny": dataclasses.replace(simulator.CONFIGS["tiny"], num_categories=8, num_days=6,
                                rounds_per_day=6, requests_per_user_day=6.0),
}


@dataclasses.dataclass(frozen=True)
class Interactions:
  """The lines of a ratings file, in file order (raw ids as written).

  Attributes:
    path: the file read.
    user, item, rating, timestamp: int64[lines].
  """

  path: str
  user: np.ndarray
  item: np.ndarray
  rating: np.ndarray
  timestamp: np.ndarray

  def __len__(self) -> int:
    return int(self.user.shape[0])

  @property
  def user_ids(self) -> np.ndarray:
    """Raw user ids, increasing; the dense id of `user_ids[k]` is k + 1."""
    return np.unique(self.user)

  @property
  def item_ids(self) -> np.ndarray:
    """Raw item ids, increasing; the dense id of `item_ids[k]` is k + 1."""
    return np.unique(self.item)

  def dense(self) -> tuple[np.ndarray, np.ndarray]:
    """Dense user and item ids (1..n) of every line."""
    return (np.searchsorted(self.user_ids, self.user) + 1,
            np.searchsorted(self.item_ids, self.item) + 1)


def read_interactions(path: str) -> Interactions:
  """Reads a MovieLens ratings file: ml-100k `u.data` (tab-separated) or ml-1m `ratings.dat` (`::`).

  The separator is the first line's (`::` if it has one, else a tab); every line must then have the
  four fields user id (>= 1), item id (>= 1), rating (1..5) and timestamp (epoch seconds), as plain
  decimal integers. A user rating the same item twice is an error, too: MovieLens has one rating per
  pair, and a duplicate means the file is not what it claims.

  Raises:
    FileNotFoundError: no file at `path`.
    ValueError: `path`, line N, field F: what was expected and what was found.
  """
  values: list[list[int]] = []
  separator = None
  with open(path, "rb") as f:
    for number, raw in enumerate(f, start=1):
      line = raw.rstrip(b"\n").rstrip(b"\r")
      if separator is None:
        separator = b"::" if b"::" in line else b"\t"
      shown = "'::'" if separator == b"::" else "tab"
      if not line.strip():
        raise ValueError(f"{path}, line {number}: empty line, expected {len(FIELDS)} "
                         f"{shown}-separated fields ({', '.join(FIELDS)})")
      fields = line.split(separator)
      if len(fields) != len(FIELDS):
        raise ValueError(f"{path}, line {number}: expected {len(FIELDS)} {shown}-separated fields "
                         f"({', '.join(FIELDS)}), got {len(fields)}: {_show(line)}")
      row = []
      for name, field in zip(FIELDS, fields):
        if not _INTEGER.fullmatch(field):
          raise ValueError(f"{path}, line {number}, field {name}: expected a non-negative "
                           f"integer, got {_show(field)}")
        row.append(int(field))
      user, item, rating, _ = row
      for name, value in (("user id", user), ("item id", item)):
        if value < 1:
          raise ValueError(f"{path}, line {number}, field {name}: expected an id >= 1, got {value}")
      if not 1 <= rating <= 5:
        raise ValueError(f"{path}, line {number}, field rating: expected 1..5, got {rating}")
      values.append(row)
  if not values:
    raise ValueError(f"{path}: empty file, expected lines of "
                     f"'user id<TAB>item id<TAB>rating<TAB>timestamp'")
  table = np.asarray(values, np.int64)
  interactions = Interactions(path=str(path), user=table[:, 0], item=table[:, 1],
                              rating=table[:, 2], timestamp=table[:, 3])
  _check_unique_pairs(interactions)
  return interactions


def _show(text: bytes) -> str:
  return repr(text.decode("latin-1"))


def _check_unique_pairs(interactions: Interactions) -> None:
  users, items = interactions.dense()
  key = users * (int(items.max()) + 1) + items
  order = np.argsort(key, kind="stable")  # Equal keys stay in file order.
  repeat = np.flatnonzero(key[order[1:]] == key[order[:-1]])
  if len(repeat):
    later = order[1:][repeat]
    first = int(np.argmin(later))  # The duplicate that comes first in the file.
    line, earlier = int(later[first]) + 1, int(order[repeat[first]]) + 1
    raise ValueError(f"{interactions.path}, line {line}, field item id: user "
                     f"{interactions.user[line - 1]} already rated item "
                     f"{interactions.item[line - 1]} on line {earlier}; "
                     f"expected one rating per user and item")


def fitted_config(config: simulator.SimulatorConfig, num_users: int, num_items: int,
                  source: str = "") -> simulator.SimulatorConfig:
  """`config` with the file's sizes and its item pools clamped to the catalog."""
  popular_pool = min(config.popular_pool, num_items)
  old_model_pool = min(config.old_model_pool, num_items)
  try:
    return dataclasses.replace(
        config, num_users=num_users, num_items=num_items,
        num_categories=min(config.num_categories, num_items),
        popular_pool=popular_pool, recall_popular=min(config.recall_popular, popular_pool),
        old_model_pool=old_model_pool,
        recall_old_model=min(config.recall_old_model, old_model_pool))
  except ValueError as e:
    raise ValueError(f"{source}: {num_users} users and {num_items} items do not fit the simulator "
                     f"config: {e}") from None


def fit_world(interactions: Interactions, config: simulator.SimulatorConfig,
              seed: int) -> tuple[simulator.World, simulator.SimulatorConfig]:
  """Fits a `simulator.World` to real interactions (see the module docstring for how).

  Args:
    interactions: what `read_interactions` read.
    config: the simulator's knobs; `latent_dim`, `num_categories`, `authors_per_category`,
      `max_interests`, `popularity_sigma`, `popularity_beta` and the demographics shape the world.
    seed: seeds the SVD's start vector, k-means, authors and demographics; the same seed gives the
      same world.
  Returns:
    The world (row 0 of every array is padding) and the config to simulate it with.
  """
  users, items = interactions.dense()
  n_users, n_items, d = len(interactions.user_ids), len(interactions.item_ids), config.latent_dim
  if d >= min(n_users, n_items):
    raise ValueError(f"{interactions.path}: {n_users} users and {n_items} items cannot give "
                     f"latent_dim={d} factors; need more than {d} of each")
  config = fitted_config(config, n_users, n_items, interactions.path)
  svd_seed, _, kmeans_seed, author_seed, demographic_seed = np.random.SeedSequence(seed).spawn(5)

  user_factor, item_factor = _residual_svd(users, items, n_users, n_items, d,
                                           np.random.default_rng(svd_seed))
  # Scale to the world `build_world` would draw with this config (see the module docstring): every
  # user the same norm, the simulated users' RMS; items so the affinity spread is the simulated one.
  user_rms, spread = reference_scale(config, seed)
  user_latent = np.zeros((n_users + 1, d), np.float32)
  item_latent = np.zeros((n_items + 1, d), np.float32)
  norm = np.linalg.norm(user_factor, axis=1, keepdims=True)
  user_latent[1:] = user_factor / np.maximum(norm, 1e-12) * (user_rms * np.sqrt(d))
  item_latent[1:] = item_factor
  item_latent[1:] *= spread / affinity_spread(user_latent, item_latent)

  counts = np.bincount(items, minlength=n_items + 1)[1:].astype(np.float64)
  log_counts = np.log(counts)
  log_spread = log_counts.std()
  popularity = np.zeros(n_items + 1, np.float32)
  if log_spread > 0:  # Equal counts: no item is more popular than another.
    popularity[1:] = config.popularity_sigma * (log_counts - log_counts.mean()) / log_spread

  category = np.zeros(n_items + 1, np.int64)
  category[1:] = _spherical_kmeans(item_latent[1:], config.num_categories,
                                   np.random.default_rng(kmeans_seed))
  author = np.zeros(n_items + 1, np.int64)
  author[1:] = (category[1:] - 1) * config.authors_per_category + \
      np.random.default_rng(author_seed).integers(1, config.authors_per_category + 1, n_items)

  interests = _interests(users, category[items], n_users, config.num_categories,
                         config.max_interests)
  user_features = simulator.user_demographics(config, interests[:, 0],
                                              np.random.default_rng(demographic_seed))
  world = simulator.World(user_latent=user_latent, item_latent=item_latent,
                          item_popularity=popularity, popularity_beta=config.popularity_beta,
                          item_category=category, item_author=author, user_interests=interests,
                          user_features={k: v.astype(np.int64) for k, v in user_features.items()})
  return world, config


def _residual_svd(users, items, n_users, n_items, d, rng):
  """(U sqrt(S), V sqrt(S)) of the rank-d SVD of the binary matrix's standardised residuals
  (x_ui - e_ui) / sqrt(e_ui), e_ui = n_u n_i / N, applied as sparse products plus a rank-one term
  (the dense matrix is never built)."""
  import scipy.sparse
  import scipy.sparse.linalg

  x = scipy.sparse.csr_matrix((np.ones(len(users)), (users - 1, items - 1)),
                              shape=(n_users, n_items))
  total = float(x.sum())
  # Shares r_u = n_u / N, c_i = n_i / N: all > 0, every user and item of the file has a rating.
  # The matrix is D_r^-1/2 (X / N - r c') D_c^-1/2, the same up to the factor sqrt(N).
  r = np.asarray(x.sum(axis=1)).ravel() / total
  c = np.asarray(x.sum(axis=0)).ravel() / total
  sqrt_r, sqrt_c = np.sqrt(r)[:, None], np.sqrt(c)[:, None]
  xt = x.T.tocsr()

  def matmat(v):
    a = v.reshape(n_items, -1) / sqrt_c
    return (x @ a / total - r[:, None] * (c @ a)[None, :]) / sqrt_r

  def rmatmat(w):
    b = w.reshape(n_users, -1) / sqrt_r
    return (xt @ b / total - c[:, None] * (r @ b)[None, :]) / sqrt_c

  operator = scipy.sparse.linalg.LinearOperator(
      (n_users, n_items), matvec=lambda v: matmat(v).ravel(), rmatvec=lambda w: rmatmat(w).ravel(),
      matmat=matmat, rmatmat=rmatmat, dtype=np.float64)
  v0 = rng.standard_normal(min(n_users, n_items))
  u, s, vt = scipy.sparse.linalg.svds(operator, k=d, v0=v0, solver="arpack", maxiter=10000)
  order = np.argsort(-s, kind="stable")
  u, s, v = u[:, order], s[order], vt[order].T
  # Singular vectors are defined up to a joint sign: fix it (largest item loading positive) so the
  # latents, not just their products, are reproducible.
  sign = np.sign(v[np.abs(v).argmax(0), np.arange(d)])
  sign[sign == 0] = 1
  root = np.sqrt(np.maximum(s, 0))
  return u * sign * root, v * sign * root


def _rms(x: np.ndarray) -> float:
  return float(np.sqrt(np.mean(np.square(x, dtype=np.float64))))


def affinity_spread(user_latent: np.ndarray, item_latent: np.ndarray) -> float:
  """Standard deviation of <z_u, z_i>/sqrt(d) over (user, item) pairs, padding excluded: over every
  pair, or every item for an evenly spaced sample of `_MAX_SPREAD_USERS` users on large worlds."""
  users = user_latent[1:]
  if len(users) > _MAX_SPREAD_USERS:
    users = users[np.linspace(0, len(users) - 1, _MAX_SPREAD_USERS).astype(np.int64)]
  dots = ((users.astype(np.float64) @ item_latent[1:].T.astype(np.float64))
          / np.sqrt(user_latent.shape[1]))
  return float(dots.std())


def reference_scale(config: simulator.SimulatorConfig, seed: int) -> tuple[float, float]:
  """(RMS of the user latents' coordinates, `affinity_spread`) of the worlds `build_world` draws
  for `config`, averaged over `REFERENCE_WORLDS` of them: one world's spread varies by about 20%
  with its random category centres, the average of 64 by about 2.5%."""
  # The spread is a per-pair statistic: worlds of a capped size give it as well, faster.
  config = fitted_config(config, min(config.num_users, 1000), min(config.num_items, 2000))
  seeds = np.random.SeedSequence(seed).spawn(5)[1].spawn(REFERENCE_WORLDS)
  worlds = [simulator.build_world(config, np.random.default_rng(s)) for s in seeds]
  return (float(np.mean([_rms(w.user_latent[1:]) for w in worlds])),
          float(np.mean([affinity_spread(w.user_latent, w.item_latent) for w in worlds])))


def _spherical_kmeans(latent: np.ndarray, k: int, rng: np.random.Generator,
                      iterations: int = 100) -> np.ndarray:
  """Categories 1..k of the rows' directions (k-means++ start, Lloyd steps), 1 the largest."""
  norm = np.linalg.norm(latent, axis=1, keepdims=True)
  x = (latent / np.maximum(norm, 1e-12)).astype(np.float64)
  n = len(x)
  centres = np.empty((k, x.shape[1]))
  centres[0] = x[rng.integers(n)]
  nearest = np.square(x - centres[0]).sum(1)
  for j in range(1, k):
    # k-means++: the next centre far from the chosen ones; uniform once every point is a centre.
    total = nearest.sum()
    centres[j] = x[rng.choice(n, p=nearest / total) if total > 0 else rng.integers(n)]
    nearest = np.minimum(nearest, np.square(x - centres[j]).sum(1))
  label = np.full(n, -1)
  for _ in range(iterations):
    distance = np.square(x[:, None, :] - centres[None, :, :]).sum(2)
    new = distance.argmin(1)
    # An empty cluster takes the point farthest from its centre, so there are k categories.
    for j in range(k):
      if not (new == j).any():
        far = np.argmax(distance[np.arange(n), new] * (np.bincount(new, minlength=k)[new] > 1))
        new[far] = j
    if np.array_equal(new, label):
      break
    label = new
    for j in range(k):
      centres[j] = x[label == j].mean(0)
  # Number the clusters by decreasing size (ties: the cluster of the lower item first).
  sizes = np.bincount(label, minlength=k)
  first = np.array([np.flatnonzero(label == j)[0] for j in range(k)])
  rank = np.empty(k, np.int64)
  rank[np.lexsort((first, -sizes))] = np.arange(1, k + 1)
  return rank[label]


def _interests(users, categories, n_users, n_categories, max_interests) -> np.ndarray:
  """int64[n_users + 1, max_interests]: each user's most rated categories, 0-padded (see the
  module docstring for which are kept)."""
  counts = np.zeros((n_users + 1, n_categories + 1), np.int64)
  np.add.at(counts, (users, categories), 1)
  counts[:, 0] = 0
  # Ties: lower category first.
  order = np.argsort(-counts, axis=1, kind="stable")[:, :max_interests]
  top = np.take_along_axis(counts, order, 1)
  keep = (top > 0) & (2 * top >= top[:, :1])
  interests = np.where(keep, order, 0)
  interests[0] = 0
  return interests.astype(np.int64)


def file_digest(path: str) -> str:
  """sha256 of a file, to tell whether a built dataset came from it."""
  digest = hashlib.sha256()
  with open(path, "rb") as f:
    for block in iter(lambda: f.read(1 << 20), b""):
      digest.update(block)
  return digest.hexdigest()


def save_id_maps(directory: str, interactions: Interactions) -> None:
  """`movielens_ids.npz`: `user_raw_id` / `item_raw_id`, int64 indexed by dense id (row 0: 0)."""
  atomic_files.atomic_savez(os.path.join(directory, IDS_FILE),
                          user_raw_id=np.concatenate([[0], interactions.user_ids]).astype(np.int64),
                          item_raw_id=np.concatenate([[0], interactions.item_ids]).astype(np.int64))


def load_id_maps(directory: str) -> tuple[np.ndarray, np.ndarray]:
  """(user_raw_id, item_raw_id) of a built `uma2_movielens` dataset: raw id = map[dense id]."""
  path = os.path.join(directory, IDS_FILE)
  if not os.path.exists(path):
    raise FileNotFoundError(f"{path}: no {IDS_FILE}; "
                            f"is {directory} a built uma2_movielens dataset?")
  with np.load(path) as z:
    return z["user_raw_id"], z["item_raw_id"]


def source_description(interactions: Interactions, world: simulator.World,
                       config: simulator.SimulatorConfig, seed: int) -> dict:
  """What `source.json` records: the file (path, sha256, sizes) and how the world was fitted."""
  _, spread = reference_scale(config, seed)
  return {
      "file": os.path.abspath(interactions.path), "sha256": file_digest(interactions.path),
      "ratings": len(interactions), "users": int(len(interactions.user_ids)),
      "items": int(len(interactions.item_ids)), "fit_seed": int(seed),
      "method": "truncated SVD of the binary user x item matrix's standardised residuals",
      "latent_dim": int(config.latent_dim),
      "affinity_spread": round(affinity_spread(world.user_latent, world.item_latent), 4),
      "reference_affinity_spread": round(spread, 4),
  }


def write_source(directory: str, description: dict) -> None:
  atomic_files.atomic_write_text(os.path.join(directory, SOURCE_FILE),
                                 json.dumps(description, indent=2))

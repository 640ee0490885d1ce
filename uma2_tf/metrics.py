"""Offline retrieval metrics: exact top-K retrieval, hit rate / recall / precision, oracle recall,
the popularity retriever, weighted ROC AUC and markdown summary tables (the popularity-bias
metrics are `bias_metrics`).

Everything is numpy except the top-K search, which runs `tf.math.top_k` on user batches so the
score matrix never exceeds one batch. Item id 0 is the padding item: it is never retrieved, and
ids in every argument are corpus ids (row i of the item embeddings is item i).

    ids, scores = top_k_items(user_emb, item_emb, k=200)        # int64[U, 200], float32[U, 200]
    m = retrieval_metrics(ids, truth, ks=(50, 100, 200))         # truth: one id array per user
    m["recall@50"], m["hitrate@100"], m["precision@200"]
    m.update(oracle_metrics(ids, true_top, ks=(50, 100, 200)))   # m["oracle_recall@50"], ...
    popular = popularity_top_k(click_count, k=200, num_users=len(truth))
    auc = binary_auc(labels, scores, weights=mask)
    print(metrics_table({"model": m, "popularity": retrieval_metrics(popular, truth, ks)}, ks))
"""
from __future__ import annotations

import uma2_tf  # noqa: F401

from typing import Mapping, Optional, Sequence

import numpy as np
import tensorflow as tf

# Upper bound on the elements of one batch's score matrix (1 GiB of float32): with 3e5 items the
# default 4096-user batch would be a 4.9 GB matrix, so the batch shrinks to fit instead.
MAX_BATCH_SCORES = 1 << 28

RETRIEVAL_METRICS = ("hitrate", "recall", "precision")
ORACLE_METRICS = ("oracle_recall",)
BIAS_METRICS = ("coverage", "avg_popularity", "gini", "tail_share")  # `bias_metrics` computes them.


def top_k_items(user_emb: np.ndarray, item_emb: np.ndarray, k: int,
                batch_size: int = 4096) -> tuple[np.ndarray, np.ndarray]:
  """Exact maximum-inner-product top-k of every user over items 1..N-1.

  A multi-interest user (MIND) is K queries: an item's score is its best interest's inner product,
  so the result is each interest's top-k merged by score, an item reached by several interests
  listed once at its best score.

  Args:
    user_emb: float[U, d] user embeddings, or float[U, K, d] for K interests per user.
    item_emb: float[N, d] item embeddings, row i for item id i (row 0, the padding item, is
      ignored).
    k: items per user, 1 <= k < N.
    batch_size: most users scored at once (fewer when `MAX_BATCH_SCORES` needs it).

  Returns:
    ids: int64[U, k] item ids by decreasing score, equal scores by lower id first.
    scores: float32[U, k] their inner products.
  """
  user_emb = np.asarray(user_emb)
  item_emb = np.asarray(item_emb)
  if user_emb.ndim not in (2, 3) or item_emb.ndim != 2:
    raise ValueError(f"user embeddings must be [U, d] or [U, K, d] and item embeddings [N, d], got "
                     f"user {user_emb.shape} and item {item_emb.shape}")
  if user_emb.shape[-1] != item_emb.shape[1]:
    raise ValueError(f"user and item embedding sizes differ: {user_emb.shape[-1]} vs "
                     f"{item_emb.shape[1]}")
  interests = user_emb.shape[1] if user_emb.ndim == 3 else 1
  if interests < 1:
    raise ValueError(f"user embeddings have no interest: shape {user_emb.shape}")
  num_items = item_emb.shape[0]
  if not 1 <= k < num_items:
    raise ValueError(f"k must be in [1, {num_items - 1}] (items 1..N-1 with N={num_items}), "
                     f"got {k}")
  if batch_size < 1:
    raise ValueError(f"batch_size must be positive, got {batch_size}")
  # Scoring items 1.. only (rather than scoring row 0 as -inf) keeps the padding item out even
  # when k equals the number of real items; top_k's indices are then shifted back by one.
  items = tf.constant(item_emb[1:], tf.float32)
  rows = max(1, min(batch_size, MAX_BATCH_SCORES // ((num_items - 1) * interests)))
  ids, scores = [], []
  for start in range(0, user_emb.shape[0], rows):
    users = tf.constant(user_emb[start:start + rows], tf.float32)
    # top_k is stable (equal values keep index order), which gives the lower-id-first tie rule.
    if user_emb.ndim == 2:
      scores_batch = tf.linalg.matmul(users, items, transpose_b=True)
    else:
      # The best interest's score per item: top-k of it is the merge of the interests' top-k
      # lists by score, without duplicates (an item in the merged top-k is in its best
      # interest's top-k).
      scores_batch = tf.reduce_max(tf.einsum("ukd,nd->ukn", users, items), axis=1)
    values, index = tf.math.top_k(scores_batch, k=k, sorted=True)
    ids.append(index.numpy().astype(np.int64) + 1)
    scores.append(values.numpy())
  if not ids:
    return np.zeros((0, k), np.int64), np.zeros((0, k), np.float32)
  return np.concatenate(ids), np.concatenate(scores)


def retrieval_metrics(retrieved: np.ndarray, truth: Sequence[np.ndarray],
                      ks: Sequence[int], ndcg: bool = False) -> dict:
  """Hit rate, recall and precision at each K of `ks`, averaged over users (the means of
  `per_user_retrieval_metrics`, which see)."""
  return {name: float(np.mean(values))
          for name, values in per_user_retrieval_metrics(retrieved, truth, ks, ndcg).items()}


def per_user_retrieval_metrics(retrieved: np.ndarray, truth: Sequence[np.ndarray],
                               ks: Sequence[int], ndcg: bool = False) -> dict:
  """Hit, recall and precision at each K of `ks`, per user: what paired tests between two models
  evaluated on the same users compare.

  Args:
    retrieved: int[U, Kmax] ranked item ids per user. An id repeated in a row counts once (the
      metrics are on sets), at its first position.
    truth: U non-empty int arrays, the relevant item ids of each user.
    ks: cut-offs, each in [1, Kmax].
    ndcg: also "ndcg@K" = DCG@K / IDCG@K, DCG = Σ over the hits at positions p = 0.. of
      1 / log2(p + 2), IDCG the DCG of min(|truth|, K) hits at the top. (ComiRec's code divides by
      the IDCG of the hits found instead, which is 1 for a single hit anywhere in the top K.)

  Returns:
    {"hitrate@K": 1.0 where the user has a relevant item in their top K else 0.0,
     "recall@K": |top K & truth| / |truth|,
     "precision@K": |top K & truth| / K} for each K, as float64[U] arrays.
  """
  retrieved = ranked_ids(retrieved, "retrieved")
  num_users, k_max = retrieved.shape
  ks = check_ks(ks, k_max, "retrieved")
  if len(truth) != num_users:
    raise ValueError(f"truth has {len(truth)} users but retrieved has {num_users}")
  truth = [np.asarray(t, np.int64).ravel() for t in truth]
  sizes = np.array([len(t) for t in truth], np.int64)
  if (sizes == 0).any():
    raise ValueError(f"user {int(np.argmin(sizes))} has no relevant item")
  truth_ids = np.concatenate(truth)
  if (truth_ids < 0).any():
    raise ValueError("truth holds negative item ids")
  truth_users = np.repeat(np.arange(num_users, dtype=np.int64), sizes)
  # Positions are irrelevant for the truth: all of it counts, so every position is 0.
  positions = _positions(retrieved, truth_users, truth_ids, np.zeros_like(truth_ids))
  hits = (positions == 0) & _first_occurrence(retrieved)
  # A user's truth size counts distinct ids, matching the set intersection in the numerator.
  stride = int(truth_ids.max()) + 1
  num_relevant = np.bincount(np.unique(truth_users * stride + truth_ids) // stride,
                             minlength=num_users)
  found = np.cumsum(hits, axis=1, dtype=np.int64)
  discount = 1.0 / np.log2(np.arange(k_max, dtype=np.float64) + 2.0)
  dcg = np.cumsum(hits * discount, axis=1) if ndcg else None
  ideal = np.concatenate([[0.0], np.cumsum(discount)])  # ideal[n]: DCG of n hits at the top
  out = {}
  for k in ks:
    n = found[:, k - 1]
    out[f"hitrate@{k}"] = (n > 0).astype(np.float64)
    out[f"recall@{k}"] = n / num_relevant
    out[f"precision@{k}"] = n / k
    if ndcg:
      out[f"ndcg@{k}"] = dcg[:, k - 1] / ideal[np.minimum(num_relevant, k)]
  return out


def oracle_metrics(retrieved: np.ndarray, true_top: np.ndarray, ks: Sequence[int]) -> dict:
  """How much of each user's true top K (by ground-truth affinity) the retriever's top K holds.

  Args:
    retrieved: int[U, Kmax] ranked item ids per user.
    true_top: int[U, Kt] each user's items by decreasing true affinity.
    ks: cut-offs, each in [1, min(Kmax, Kt)].

  Returns:
    {"oracle_recall@K": mean over users of |retrieved top K & true top K| / K} for each K.
  """
  retrieved = ranked_ids(retrieved, "retrieved")
  true_top = ranked_ids(true_top, "true_top")
  if retrieved.shape[0] != true_top.shape[0]:
    raise ValueError(f"retrieved has {retrieved.shape[0]} users but true_top has "
                     f"{true_top.shape[0]}")
  ks = check_ks(ks, retrieved.shape[1], "retrieved")
  ks = check_ks(ks, true_top.shape[1], "true_top")
  num_users, k_true = true_top.shape
  users = np.repeat(np.arange(num_users, dtype=np.int64), k_true)
  ranks = np.tile(np.arange(k_true, dtype=np.int64), num_users)
  true_rank = _positions(retrieved, users, true_top.ravel(), ranks)
  # The item at retrieved position j is in both top-K sets iff j < K and its true rank < K, so
  # one pass gives every K: count the items whose max(j, true rank) is below K.
  depth = np.maximum(np.arange(retrieved.shape[1], dtype=np.int64)[None, :], true_rank)
  depth[(true_rank < 0) | ~_first_occurrence(retrieved)] = np.iinfo(np.int64).max
  return {f"oracle_recall@{k}": float(np.mean((depth < k).sum(axis=1) / k)) for k in ks}


def popularity_top_k(click_count: np.ndarray, k: int, num_users: int) -> np.ndarray:
  """The k most-clicked items (id 0 excluded, equal counts by lower id), as the list of every user.

  Returns a read-only int64[num_users, k] broadcast view of one row.
  """
  click_count = np.asarray(click_count)
  if click_count.ndim != 1:
    raise ValueError(f"click_count must be 1-D, got shape {click_count.shape}")
  if not 1 <= k < len(click_count):
    raise ValueError(f"k must be in [1, {len(click_count) - 1}], got {k}")
  # float64 before negating: unsigned counts would wrap, and counts are exact below 2**53.
  order = np.argsort(-click_count[1:].astype(np.float64), kind="stable")[:k] + 1
  return np.broadcast_to(order.astype(np.int64)[None, :], (num_users, k))


def binary_auc(labels: np.ndarray, scores: np.ndarray,
               weights: Optional[np.ndarray] = None) -> float:
  """Weighted ROC AUC: the weighted share of (positive, negative) pairs ranked right, ties as 1/2.

  Args:
    labels: 0/1 (or bool) per example.
    scores: higher means more likely positive.
    weights: non-negative per-example weights (default 1); weight 0 drops the example.

  Raises:
    ValueError: if either class has zero total weight.
  """
  labels = np.asarray(labels).ravel()
  scores = np.asarray(scores, np.float64).ravel()
  weights = np.ones_like(scores) if weights is None else np.asarray(weights, np.float64).ravel()
  if not len(labels) == len(scores) == len(weights):
    raise ValueError(f"labels, scores and weights differ in length: {len(labels)}, {len(scores)}, "
                     f"{len(weights)}")
  if not np.isin(labels, (0, 1)).all():
    raise ValueError("labels must be 0 or 1")
  if not np.isfinite(scores).all():
    raise ValueError("scores must be finite")
  if not (np.isfinite(weights).all() and (weights >= 0).all()):
    raise ValueError("weights must be finite and non-negative")
  positive = labels == 1
  # Weighted Mann-Whitney on distinct score values: a positive beats the negative weight below
  # its score and half the negative weight at it, which handles ties in O(n log n).
  values, group = np.unique(scores, return_inverse=True)
  pos = np.bincount(group, weights * positive, minlength=len(values))
  neg = np.bincount(group, weights * ~positive, minlength=len(values))
  pos_total, neg_total = pos.sum(), neg.sum()
  if pos_total <= 0 or neg_total <= 0:
    raise ValueError(f"AUC needs both classes: positive weight {pos_total}, negative weight "
                     f"{neg_total}")
  neg_below = np.cumsum(neg) - neg
  return float(np.sum(pos * (neg_below + 0.5 * neg)) / (pos_total * neg_total))


def metrics_table(results: Mapping[str, Mapping[str, float]], ks: Sequence[int]) -> str:
  """A markdown table, one row per retriever (in `results` order), one column per metric.

  Columns follow K in `ks`, then hitrate, recall, precision, ndcg, oracle_recall at that K; only
  metrics present in some row appear (any other metric names go last, in first-seen order), and a
  row without a metric has a blank cell. The bias metrics are left out: they have their own table
  (`bias_table`). Numbers have 4 decimals. No trailing newline.
  """
  present = {name: None for row in results.values() for name in row
             if name.split("@")[0] not in BIAS_METRICS}
  known = [f"{m}@{k}" for k in ks for m in (*RETRIEVAL_METRICS, "ndcg", *ORACLE_METRICS)]
  columns = [c for c in known if c in present] + [c for c in present if c not in known]
  lines = ["| retriever | " + " | ".join(columns) + " |",
           "|---|" + "---:|" * len(columns)]
  for name, row in results.items():
    cells = [f"{row[c]:.4f}" if c in row else "" for c in columns]
    lines.append(f"| {name} | " + " | ".join(cells) + " |")
  return "\n".join(lines)


def ranked_ids(ids: np.ndarray, name: str) -> np.ndarray:
  ids = np.asarray(ids)
  if ids.ndim != 2:
    raise ValueError(f"{name} must be [users, K], got shape {ids.shape}")
  if not np.issubdtype(ids.dtype, np.integer):
    raise ValueError(f"{name} must hold integer item ids, got {ids.dtype}")
  ids = ids.astype(np.int64)
  if (ids < 0).any():
    raise ValueError(f"{name} holds negative item ids")
  return ids


def check_ks(ks: Sequence[int], limit: int, name: str) -> list[int]:
  ks = [int(k) for k in ks]
  bad = [k for k in ks if not 1 <= k <= limit]
  if bad:
    raise ValueError(f"K must be in [1, {limit}] ({name} has {limit} items per user), got {bad}")
  return ks


def _positions(query: np.ndarray, users: np.ndarray, ids: np.ndarray,
               positions: np.ndarray) -> np.ndarray:
  """For each query[u, j], the position of that id in user u's (users, ids, positions) list, or -1.

  Vectorised over all users with keys user * M + id (M above every id) and one searchsorted, as a
  per-user np.isin is far too slow for 1e5 users. An id listed twice for a user keeps its lowest
  position.
  """
  num_users = query.shape[0]
  stride = max(int(query.max(initial=0)), int(ids.max(initial=0))) + 1
  if num_users * stride >= np.iinfo(np.int64).max:
    raise ValueError("too many users times item ids to key in int64")
  keys = users * stride + ids
  order = np.lexsort((positions, keys))
  keys, positions = keys[order], positions[order]
  first = np.ones(len(keys), bool)
  first[1:] = keys[1:] != keys[:-1]
  keys, positions = keys[first], positions[first]
  if len(keys) == 0:
    return np.full(query.shape, -1, np.int64)
  query_keys = np.arange(num_users, dtype=np.int64)[:, None] * stride + query
  at = np.minimum(np.searchsorted(keys, query_keys), len(keys) - 1)
  return np.where(keys[at] == query_keys, positions[at], -1)


def _first_occurrence(ids: np.ndarray) -> np.ndarray:
  """bool mask, False where an id already appeared earlier in its row."""
  order = np.argsort(ids, axis=1, kind="stable")
  ranked = np.take_along_axis(ids, order, axis=1)
  repeat = np.zeros(ids.shape, bool)
  # Stable sort keeps equal ids in row order, so all but the first of a run are repeats.
  np.put_along_axis(repeat, order[:, 1:], ranked[:, 1:] == ranked[:, :-1], axis=1)
  return ~repeat

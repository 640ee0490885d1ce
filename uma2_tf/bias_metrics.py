"""Popularity bias of retrieved lists: catalog coverage, average popularity, Gini, tail share @K.

    m = bias_metrics(ids, catalog.click_count, ks=(50, 100, 200))  # m["coverage@50"], m["gini@50"]
    print(bias_table({"model": m, "popularity": ...}, ks))

`ids` is the [users, K] top-K id matrix of `metrics.top_k_items` (id 0, padding, is never an item);
popularity is the items' training clicks, and the head is the fewest most-clicked items holding
80 % of them.
"""
from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

from uma2_tf import metrics

BIAS_METRICS = metrics.BIAS_METRICS
# The head is the fewest most-clicked items holding at least this share of training clicks, kept
# as a fraction (4/5) so that integer counts hit an exact 80 % boundary without rounding error.
HEAD_CLICK_SHARE = (4, 5)


def bias_metrics(retrieved: np.ndarray, click_count: np.ndarray, ks: Sequence[int]) -> dict:
  """Coverage, average popularity, Gini and tail share of the top K at each K of `ks`: the
  functions below on `retrieved[:, :K]`, from one pass over the columns.

  Returns:
    {"coverage@K", "avg_popularity@K", "gini@K", "tail_share@K"} as floats, for each K.
  """
  retrieved = metrics.ranked_ids(retrieved, "retrieved")
  ks = metrics.check_ks(ks, retrieved.shape[1], "retrieved")
  clicks = _click_counts(click_count)
  head = head_items(clicks)
  counts, done = np.zeros(len(clicks) - 1, np.int64), 0
  out = {}
  for k in sorted(set(ks)):
    # Each K's counts add the columns past the previous K: with 1e5 users and K up to 200 the
    # evaluator would otherwise re-count the same slots once per K and per metric.
    counts = counts + _retrieval_counts(retrieved[:, done:k], clicks, allow_empty=True)
    done = k
    if counts.sum() == 0:
      raise ValueError("retrieved holds no item (no user, or padding only)")
    out[f"coverage@{k}"] = _coverage(counts)
    out[f"avg_popularity@{k}"] = _avg_popularity(counts, clicks)
    out[f"gini@{k}"] = _gini(counts)
    out[f"tail_share@{k}"] = _tail_share(counts, head)
  return {name: out[name] for k in ks for name in (f"{m}@{k}" for m in BIAS_METRICS)}

def coverage(retrieved: np.ndarray, click_count: np.ndarray) -> float:
  """Catalog coverage: distinct items in all users' lists over the catalog size N - 1.

  Args:
    retrieved: int[U, K] item ids per user; id 0 (padding) is never counted as an item.
    click_count: [N] training clicks per item id; only its length (the catalog) is used.
  """
  return _coverage(_retrieval_counts(retrieved, click_count))

def avg_popularity(retrieved: np.ndarray, click_count: np.ndarray) -> float:
  """Mean training click count of the retrieved items, over all (user, slot) pairs.

  Args:
    retrieved: int[U, K] item ids per user; slots holding id 0 (padding) are skipped.
    click_count: [N] clicks per item id over the training days (the catalog's `click_count`).

  Returns:
    The mean in training clicks (not a share: it scales with the size of the training log).
  """
  return _avg_popularity(_retrieval_counts(retrieved, click_count), _click_counts(click_count))

def gini(retrieved: np.ndarray, click_count: np.ndarray) -> float:
  """Gini coefficient of how often each of the N - 1 catalog items is retrieved, over all users'
  lists: 0 when every item is retrieved equally often, (N - 2) / (N - 1) at most (one item only).

  G = sum_i (2i - n - 1) x_(i) / (n sum x), x ascending, i = 1..n, over every real item, the
  never-retrieved ones (x = 0) included: leaving them out would hide the catalog's unseen part.

  Args:
    retrieved: int[U, K] item ids per user; slots holding id 0 (padding) are skipped.
    click_count: [N] training clicks per item id; only its length (the catalog) is used.
  """
  return _gini(_retrieval_counts(retrieved, click_count))

def tail_share(retrieved: np.ndarray, click_count: np.ndarray) -> float:
  """Share of the retrieved (user, slot) pairs whose item is outside the head (`head_items`).

  Args:
    retrieved: int[U, K] item ids per user; slots holding id 0 (padding) are skipped.
    click_count: [N] clicks per item id over the training days.
  """
  return _tail_share(_retrieval_counts(retrieved, click_count), head_items(click_count))

def head_items(click_count: np.ndarray) -> np.ndarray:
  """bool[N], True for the head: the fewest most-clicked items (equal counts by lower id first,
  for a deterministic head) that together hold at least 80 % of the training clicks.

  Id 0 is never in the head; without any training click the head is empty.
  """
  clicks = _click_counts(click_count)
  order = np.argsort(-clicks[1:], kind="stable") + 1
  cumulative = np.cumsum(clicks[order])
  total = cumulative[-1]
  num, den = HEAD_CLICK_SHARE
  size = int(np.argmax(cumulative * den >= total * num)) + 1 if total > 0 else 0
  head = np.zeros(len(clicks), bool)
  head[order[:size]] = True
  return head

def bias_table(results: Mapping[str, Mapping[str, float]], ks: Sequence[int]) -> str:
  """A markdown table of the bias metrics, one row per retriever that has any (in `results`
  order), columns coverage, avg popularity, gini, tail share at each K of `ks` in turn.

  Average popularity, in training clicks, has 1 decimal, the shares 4. A row without a metric has
  a blank cell. '' when no retriever has a bias metric. No trailing newline.
  """
  columns = [(m, k) for k in ks for m in BIAS_METRICS]
  rows = {name: row for name, row in results.items()
          if any(f"{m}@{k}" in row for m, k in columns)}
  if not rows:
    return ""
  lines = ["| retriever | " + " | ".join(f"{m.replace('_', ' ')}@{k}" for m, k in columns) + " |",
           "|---|" + "---:|" * len(columns)]
  for name, row in rows.items():
    cells = [format(row[f"{m}@{k}"], ".1f" if m == "avg_popularity" else ".4f")
             if f"{m}@{k}" in row else "" for m, k in columns]
    lines.append(f"| {name} | " + " | ".join(cells) + " |")
  return "\n".join(lines)

def _click_counts(click_count: np.ndarray) -> np.ndarray:
  clicks = np.asarray(click_count)
  if clicks.ndim != 1 or len(clicks) < 2:
    raise ValueError(f"click_count must be 1-D with the padding id and at least one item, got "
                     f"shape {clicks.shape}")
  # float64 before negating or summing: unsigned counts would wrap, and counts are exact below
  # 2**53.
  clicks = clicks.astype(np.float64)
  if not (np.isfinite(clicks).all() and (clicks >= 0).all()):
    raise ValueError("click_count must be finite and non-negative")
  return clicks

def _retrieval_counts(retrieved: np.ndarray, click_count: np.ndarray,
                      allow_empty: bool = False) -> np.ndarray:
  """int64[N - 1]: how many (user, slot) pairs hold each real item 1..N-1 (the padding id 0 is
  left out, as it is no item)."""
  retrieved = metrics.ranked_ids(retrieved, "retrieved")
  num_items = len(_click_counts(click_count))
  if retrieved.size and retrieved.max() >= num_items:
    raise ValueError(f"retrieved holds item id {int(retrieved.max())} beyond the catalog's "
                     f"{num_items} ids")
  counts = np.bincount(retrieved.ravel(), minlength=num_items)[1:]
  if not allow_empty and counts.sum() == 0:
    raise ValueError("retrieved holds no item (no user, or padding only)")
  return counts

def _coverage(counts: np.ndarray) -> float:
  return float(np.count_nonzero(counts) / len(counts))

def _avg_popularity(counts: np.ndarray, clicks: np.ndarray) -> float:
  return float(np.dot(counts, clicks[1:]) / counts.sum())

def _gini(counts: np.ndarray) -> float:
  x = np.sort(counts).astype(np.float64)
  n = len(x)
  i = np.arange(1, n + 1, dtype=np.float64)
  return float(np.sum((2 * i - n - 1) * x) / (n * x.sum()))

def _tail_share(counts: np.ndarray, head: np.ndarray) -> float:
  return float(counts[~head[1:]].sum() / counts.sum())

"""Measures an export's ScaNN index against exact search on real queries, and tunes it to a
recall target.

`export.write_version` builds its ScaNN layer here. Given query vectors (the trained tower's
embeddings of real users; each interest of a multi-interest user is one query) it measures:

  recall   mean over queries of |ScaNN top k ∩ exact top k| / k, the exact top k by inner product
           over the same item embeddings (`metrics.top_k_items`: equal scores, lower id first);
  qps      queries/s of the ScaNN and the brute-force index layers (query vectors in, ids out: the
           user tower is not timed), one query per call (as a server asks) and `BATCH` per call,
           each for at least `seconds` after a warm-up.

When tuning, a setting below the target is replaced by the next one (`raised`: more leaves
searched, x1.5, until all are; then more reordering candidates, x2, up to the corpus) until the
target holds; the last setting still below it is a ValueError.

    layer, params, check = index_check.checked_scann(
        params, item_table, queries, brute, k=100, min_recall=0.95, tune_params=True, seconds=1.0)
    check["recall"], check["qps_scann_single"], check["tried"]   # metadata.json's scann_check
    print(index_check.markdown(check))                            # index_check.md
"""
from __future__ import annotations

import uma2_tf  # noqa: F401

import math
import time
from typing import Callable

import numpy as np
import tensorflow as tf

from uma2_tf import metrics

BATCH = 256  # Queries per call of the batched measurement.
KNOBS = ("num_leaves", "num_leaves_to_search", "num_reordering_candidates")


def scann_parameters(num_items: int, config) -> dict:
  """ScaNN and k parameters with the automatic defaults resolved for a corpus of `num_items`, from
  an `export.ExportConfig` (max_k, scann_leaves, scann_leaves_to_search, scann_reorder)."""
  max_k = config.max_k or min(1000, num_items)
  if max_k > num_items:
    raise ValueError(f"max_k ({max_k}) exceeds the corpus ({num_items} items)")
  leaves = config.scann_leaves or max(1, min(num_items, round(math.sqrt(num_items))))
  if leaves > num_items:
    raise ValueError(f"scann_leaves ({leaves}) exceeds the corpus ({num_items} items)")
  reorder = config.scann_reorder or min(num_items, max(400, max_k))
  if reorder < max_k:
    raise ValueError(f"scann_reorder ({reorder}) must be >= max_k ({max_k})")
  # Leaves searched: a tenth of them, but never fewer than hold ~25K items (below that recall@100
  # drops: 0.90 at 100K items with a tenth, 0.96 with 25K items; `make bench ONLY=retrieval`) or
  # twice `reorder` (else ScaNN returns fewer than k neighbours, padding rows with NaN scores).
  per_leaf = num_items / leaves
  to_search = config.scann_leaves_to_search or min(leaves, max(
      1, leaves // 10, math.ceil(25_000 / per_leaf), math.ceil(2 * reorder / per_leaf)))
  if to_search > leaves:
    raise ValueError(f"scann_leaves_to_search ({to_search}) exceeds scann_leaves ({leaves})")
  return {"max_k": max_k, "num_leaves": leaves, "num_leaves_to_search": to_search,
          "num_reordering_candidates": reorder, "dimensions_per_block": 2,
          "training_iterations": 12}


def scann_layer(params: dict, item_table: np.ndarray):
  """A TFRS ScaNN layer with `params` (`export.scann_parameters`) indexing items 1..N of
  `item_table` (row i: item id i; row 0, the padding item, is left out)."""
  import tensorflow_recommenders as tfrs

  layer = tfrs.layers.factorized_top_k.ScaNN(
      k=params["max_k"], num_leaves=params["num_leaves"],
      num_leaves_to_search=params["num_leaves_to_search"],
      num_reordering_candidates=params["num_reordering_candidates"],
      dimensions_per_block=params["dimensions_per_block"],
      training_iterations=params["training_iterations"])
  layer.index(tf.constant(item_table[1:]), tf.range(1, len(item_table), dtype=tf.int64))
  return layer


def recall(found: np.ndarray, exact: np.ndarray, k: int) -> float:
  """Mean over rows of |found[:k] ∩ exact[:k]| / k (an id found twice counts once)."""
  return float(np.mean([len(set(f[:k].tolist()) & set(e[:k].tolist())) / k
                        for f, e in zip(found, exact)]))


def searcher(layer, k: int, dim: int) -> Callable:
  """The layer's search as one graph, [B, d] queries -> [B, k] ids, traced once for any B."""
  return tf.function(lambda q: layer(q, k=k)[1],
                     input_signature=[tf.TensorSpec([None, dim], tf.float32)])


def search_all(search: Callable, queries: np.ndarray) -> np.ndarray:
  return np.concatenate([search(queries[i:i + BATCH]).numpy()
                         for i in range(0, len(queries), BATCH)])


def queries_per_second(search: Callable, queries: np.ndarray, batch: int,
                       seconds: float) -> float:
  """Queries/s of `search` asked `batch` queries per call, cycling over `queries`, timed for at
  least `seconds` after a warm-up of a few calls (tracing, caches)."""
  chunks = [tf.constant(queries[i:i + batch]) for i in range(0, len(queries), batch)]
  chunks = [c for c in chunks if len(c) == batch] or chunks  # Equal calls, but at least one.
  for chunk in chunks[:3]:
    search(chunk).numpy()
  done, calls, start = 0, 0, time.perf_counter()
  while True:
    chunk = chunks[calls % len(chunks)]
    search(chunk).numpy()
    done, calls = done + len(chunk), calls + 1
    elapsed = time.perf_counter() - start
    if elapsed >= seconds:
      return done / elapsed


def raised(params: dict, num_items: int) -> dict | None:
  """The next setting to try for more recall: 1.5x the leaves searched until all are, then 2x the
  reordering candidates up to the corpus; None when both are at their most."""
  if params["num_leaves_to_search"] < params["num_leaves"]:
    more = min(params["num_leaves"], math.ceil(params["num_leaves_to_search"] * 1.5))
    return {**params, "num_leaves_to_search": more}
  if params["num_reordering_candidates"] < num_items:
    more = min(num_items, params["num_reordering_candidates"] * 2)
    return {**params, "num_reordering_candidates": more}
  return None


def tune(params: dict, measure: Callable, num_items: int, min_recall: float, adjust: bool = True):
  """Measures `params`, then while below `min_recall` and `adjust`, the `raised` settings.

  Args:
    params: the first setting (`export.scann_parameters`).
    measure: setting -> (recall, whatever the caller keeps of it, e.g. the built layer).
    num_items: the corpus size (bounds the reordering candidates).
    min_recall: the target.
    adjust: False to measure `params` only (given explicitly: reported, not tuned).
  Returns:
    (the last setting, its `measure` result, [{knobs..., "recall"} of each setting tried]).
  Raises:
    ValueError: `adjust` and no setting reaches `min_recall`.
  """
  tried = []
  while True:
    reached, kept = measure(params)
    tried.append({**{name: params[name] for name in KNOBS}, "recall": round(reached, 4)})
    if reached >= min_recall or not adjust:
      return params, kept, tried
    following = raised(params, num_items)
    if following is None:
      raise ValueError(
          f"ScaNN recall@k {reached:.4f} is below --scann_min_recall={min_recall} even searching "
          f"all {params['num_leaves']} leaves with {params['num_reordering_candidates']} "
          f"reordering candidates ({len(tried)} settings tried): lower --scann_min_recall, or "
          f"give --scann_leaves_to_search / --scann_reorder to export that index as it is "
          f"(measured, not tuned)")
    params = following


def checked_scann(params: dict, item_table: np.ndarray, queries: np.ndarray, brute, *, k: int,
                  min_recall: float, tune_params: bool, seconds: float):
  """The ScaNN layer to export and its check (metadata.json's `scann_check`).

  Args:
    params: the first setting (`export.scann_parameters`); the one exported is in the check.
    item_table: float [N+1, d], row i item id i's embedding (row 0, the padding item, unused).
    queries: float [Q, d] real user embeddings.
    brute: the exported brute-force layer over the same items (timed against ScaNN).
    k: the recall's cut-off.
    min_recall: the target; tune_params: whether to raise the setting until it holds (`tune`).
    seconds: the least time of each queries/s measurement.
  Returns:
    (ScaNN layer, final params, check dict).
  """
  queries = np.asarray(queries, np.float32)
  exact, _ = metrics.top_k_items(queries, item_table, k)
  dim = queries.shape[1]

  def measure(setting):
    layer = scann_layer(setting, item_table)
    search = searcher(layer, k, dim)
    return recall(search_all(search, queries), exact, k), (layer, search)

  params, (layer, search), tried = tune(params, measure, len(item_table) - 1, min_recall,
                                        tune_params)
  exact_search = searcher(brute, k, dim)
  check = {"queries": len(queries), "k": k, "min_recall": min_recall, "tuned": tune_params,
           "recall": tried[-1]["recall"], **{name: params[name] for name in KNOBS}}
  for mode, batch in (("single", 1), ("batch", BATCH)):
    for name, timed in (("scann", search), ("brute", exact_search)):
      check[f"qps_{name}_{mode}"] = round(queries_per_second(timed, queries, batch, seconds), 1)
    check[f"speedup_{mode}"] = round(check[f"qps_scann_{mode}"] / check[f"qps_brute_{mode}"], 2)
  check["tried"] = tried
  return layer, params, check


def export_index(params: dict, item_table: np.ndarray, queries: np.ndarray | None, brute,
                 config):
  """`export.write_version`'s ScaNN layer: (layer, its params, its check or None without queries).

  `queries` are user embeddings, [Q, d] or [Q, K, d] (each interest one query); `config` an
  `export.ExportConfig`: tuned unless scann_leaves_to_search or scann_reorder is given."""
  if queries is None:
    return scann_layer(params, item_table), params, None
  return checked_scann(params, item_table, queries.reshape(-1, queries.shape[-1]), brute,
                       k=min(100, params["max_k"]), min_recall=config.scann_min_recall,
                       tune_params=not (config.scann_leaves_to_search or config.scann_reorder),
                       seconds=config.check_seconds)


def markdown(check: dict) -> str:
  """The check as a short readable table (index_check.md, and what `make export` prints)."""
  met = "meets" if check["recall"] >= check["min_recall"] else "is BELOW"
  how = ("automatic parameters, raised until it holds" if check["tuned"]
         else "parameters as given: measured, not tuned")
  lines = [
      f"ScaNN recall@{check['k']} {check['recall']:.4f} on {check['queries']} real user queries: "
      f"{met} the target {check['min_recall']} ({how}); leaves {check['num_leaves']}, searched "
      f"{check['num_leaves_to_search']}, reorder {check['num_reordering_candidates']}.",
      "", "| queries/call | ScaNN q/s | brute force q/s | speedup |", "| --- | --- | --- | --- |"]
  for mode, batch in (("single", 1), ("batch", BATCH)):
    lines.append(f"| {batch} | {check[f'qps_scann_{mode}']:.1f} | "
                 f"{check[f'qps_brute_{mode}']:.1f} | {check[f'speedup_{mode}']:.2f}x |")
  lines += ["", "Settings tried: " + ", ".join(
      f"{t['num_leaves_to_search']}/{t['num_leaves']} leaves, reorder "
      f"{t['num_reordering_candidates']}: {t['recall']:.4f}" for t in check["tried"])]
  return "\n".join(lines) + "\n"

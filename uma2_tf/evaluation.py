"""Evaluation of a trained tower on the test day (DESIGN.md §2, paper §4.1.3).

The split evaluated is `test` by default; `Evaluator(dataset, split="test_random")` evaluates on a
dataset's unbiased split of randomly exposed items (KuaiRand), the same way: the popularity
retriever still ranks by the catalog's training clicks, and there is no oracle without a world.

For each test user (a user who clicked at least once on the test day): the user tower embeds the
user as of their first test request (features and history up to then), the top-K items of the
entire corpus are retrieved by exact inner product, and the truth is every item the user clicked
that day. The popularity retriever (most-clicked training items) and, where the dataset knows the
true affinity, the oracle retriever are evaluated the same way as floor and ceiling. Each retriever
also gets popularity-bias metrics of its top K (`bias_metrics`: coverage@K,
avg_popularity@K in training clicks, gini@K, tail_share@K) beside its hit rate and recall.

    evaluator = Evaluator(dataset, ks=(50, 100, 200))
    results = evaluator.evaluate(model)   # {"model": {...}, "popularity": {...}, "oracle": {...},
                                          #  "propensity_auc": {"er": ..., "re": ...}}
"""
from __future__ import annotations

import uma2_tf  # noqa: F401

import copy
import os
import time
from typing import Sequence

import numpy as np
import tensorflow as tf
from absl import logging

from uma2_tf import bias_metrics, routing_metrics
from uma2_tf import metrics as metrics_lib
from uma2_tf.data import batch_keys
from uma2_tf.data import reading
from uma2_tf.data import samplers
from uma2_tf.data import schema as schema_lib

TEST_RANDOM = "test_random"


class NoClicksError(ValueError):
  """The split evaluated has no click, so no test user."""


class Evaluator:
  """Holds the test users, their truth sets and the reference retrievers' results.

  Args:
    dataset: a `reading.BuiltDataset` with the split evaluated.
    ks: cut-offs K of the metrics.
    max_history: history length fed to the user tower (as in training).
    split: the split evaluated.
    auc_positives: positives of the test split sampled for the propensity heads' AUC.
    keep: a predicate on parsed requests selecting the records of `split` evaluated (the
      validation records of `train`: `splits.Holdout.keep_validation`); None: all of them.
    name: what the records are called in messages (default: the split's name).
  """

  ndcg = False  # Whether the metrics include NDCG@K (the sequential protocol's do).

  def __init__(self, dataset: reading.BuiltDataset, ks: Sequence[int] = (50, 100, 200),
               max_history: int = 50, split: str = "test", auc_positives: int = 20000,
               keep=None, name: str | None = None):
    self.keep = keep
    self.name = name or split
    self._set_dataset(dataset, (split,), ks)
    self.split = split
    self.max_history = max_history
    self.auc_positives = auc_positives
    start = time.perf_counter()
    self.users, self.truth = self._test_users(max_history)
    self.last_per_user: dict[str, np.ndarray] = {}
    # At the paper's scale this is minutes (the oracle ranks the whole corpus for every user).
    logging.info("%s: %d users who clicked; the reference retrievers' top %d of %d items...",
                 self.name, len(self.truth), self.k_max, dataset.schema.num_items - 1)
    self.reference = self._reference_results()
    logging.info("%s: evaluator ready in %.0f s", self.name, time.perf_counter() - start)

  def _set_dataset(self, dataset: reading.BuiltDataset, splits: Sequence[str],
                   ks: Sequence[int]) -> None:
    """Checks that `dataset` has `splits` and more items than the largest K, and keeps both."""
    for split in splits:
      if split not in dataset.split_files:
        raise ValueError(f"{dataset.name} has no {split!r} split to evaluate on")
    self.dataset = dataset
    self.ks = tuple(sorted(ks))
    self.k_max = self.ks[-1]
    if self.k_max >= dataset.schema.num_items:
      raise ValueError(f"largest K ({self.k_max}) must be below the number of items "
                       f"({dataset.schema.num_items - 1})")

  def _test_users(self, max_history: int):
    schema = self.dataset.schema
    first: dict[int, dict] = {}
    truth: dict[int, set] = {}
    for batch in numpy_requests(self.dataset.split_files[self.split], schema, keep=self.keep):
      order = np.argsort(batch[schema_lib.REQUEST_ID], kind="stable")
      for i in order:
        clicked = [item for item, c in zip(batch[schema_lib.EXPOSED][i],
                                           batch[schema_lib.CLICKED][i]) if c]
        if not clicked:
          continue
        user = int(batch[schema_lib.USER_ID][i])
        rid = int(batch[schema_lib.REQUEST_ID][i])
        truth.setdefault(user, set()).update(clicked)
        if user not in first or rid < first[user][schema_lib.REQUEST_ID]:
          first[user] = {schema_lib.REQUEST_ID: rid,
                         **request_user(batch, i, schema, max_history)}
    if not truth:
      raise NoClicksError(f"{self.dataset.name}: the {self.name} records have no click to "
                          f"evaluate on")
    user_ids = np.array(sorted(truth), np.int64)
    users = {schema_lib.USER_ID: user_ids}
    for name in (*schema.user_feature_names, schema_lib.HISTORY):
      users[name] = np.array([first[u][name] for u in user_ids], np.int64)
    return users, [np.array(sorted(truth[u]), np.int64) for u in user_ids]

  def _reference_results(self) -> dict:
    num_users = len(self.truth)
    popular = metrics_lib.popularity_top_k(self.dataset.catalog.click_count, self.k_max, num_users)
    results = {"popularity": metrics_lib.retrieval_metrics(popular, self.truth, self.ks,
                                                           ndcg=self.ndcg)}
    results["popularity"].update(self._bias(popular))
    self.true_top = None
    from uma2_tf.sources import simulator
    if os.path.exists(os.path.join(self.dataset.directory, simulator.WORLD_FILE)):
      world = simulator.World.load(self.dataset.directory)
      self.true_top = np.asarray(world.true_top_k(self.users[schema_lib.USER_ID], self.k_max))
      results["popularity"].update(metrics_lib.oracle_metrics(popular, self.true_top, self.ks))
      oracle = metrics_lib.retrieval_metrics(self.true_top, self.truth, self.ks, ndcg=self.ndcg)
      oracle.update(metrics_lib.oracle_metrics(self.true_top, self.true_top, self.ks))
      oracle.update(self._bias(self.true_top))
      results["oracle"] = oracle
    return results

  def subset(self, num_users: int, seed: int = 0) -> "Evaluator":
    """This evaluator on a fixed random `num_users` of its users (all of them if it has fewer),
    for quick repeated scoring (a sampler search's probes); the references are not recomputed."""
    if num_users >= len(self.truth):
      return self
    keep = np.sort(np.random.default_rng(seed).choice(len(self.truth), num_users, replace=False))
    out = copy.copy(self)
    out.users = {name: values[keep] for name, values in self.users.items()}
    out.truth = [self.truth[i] for i in keep]
    out.true_top = None if self.true_top is None else np.asarray(self.true_top)[keep]
    out.name = f"{self.name}, {num_users} users"
    out.last_per_user = {}
    return out

  def user_embeddings(self, tower, batch_size: int = 2048) -> np.ndarray:
    return user_embeddings(tower, self.users, batch_size)

  def item_embeddings(self, tower, batch_size: int = 8192) -> np.ndarray:
    return item_embeddings(tower, self.dataset.schema.num_items, batch_size)

  def model_metrics(self, tower) -> dict:
    """The tower's mean metrics; its per-user ones are kept in `self.last_per_user`."""
    retrieved, _ = metrics_lib.top_k_items(self.user_embeddings(tower), self.item_embeddings(tower),
                                           self.k_max)
    retrieved = np.asarray(retrieved)
    per_user = metrics_lib.per_user_retrieval_metrics(retrieved, self.truth, self.ks,
                                                      ndcg=self.ndcg)
    self.last_per_user = {schema_lib.USER_ID: self.users[schema_lib.USER_ID], **per_user}
    out = {name: float(np.mean(values)) for name, values in per_user.items()}
    if self.true_top is not None:
      out.update(metrics_lib.oracle_metrics(retrieved, self.true_top, self.ks))
    out.update(self._bias(retrieved))
    return out

  def _bias(self, retrieved: np.ndarray) -> dict:
    """Bias metrics of a retriever's top-`k_max` lists at every K (sliced, not retrieved again)."""
    return bias_metrics.bias_metrics(retrieved, self.dataset.catalog.click_count, self.ks)

  def propensity_auc(self, model) -> dict:
    """AUC of p1 on ER (recalled vs not) and of p2 on RE (exposed vs not, recalled slots only),
    on test-day positives with SS-ABC(fixed) negatives whatever the training strategy.

    A dataset without a recall log (`LogSchema.has_recall_log` False, e.g. KuaiRand) has no space B:
    the negatives are then A and C only (1:0:24 over 25) and RE, which has no negative class there
    (every recalled item is exposed), is left out: only `er` is returned."""
    if model.nsdn is None:
      return {}
    has_b = self.dataset.schema.has_recall_log
    config = samplers.SamplingConfig(seed=12345) if has_b else samplers.SamplingConfig(
        ratio=(1, 0, 24), seed=12345)
    ds = samplers.make_training_dataset(self.dataset, config, batch_size=1024, split=self.split,
                                        shuffle=False, keep=self.keep)
    er_scores, re_scores, recalled, exposed, mask = [], [], [], [], []
    seen = 0
    for batch in ds:
      out = model(batch)
      ones = np.ones((batch[batch_keys.POS_ITEM].shape[0], 1), np.float32)
      er_scores.append(out["p1"].numpy().ravel())
      re_scores.append(out["p2"].numpy().ravel())
      recalled.append(np.concatenate([ones, batch[batch_keys.NEG_RECALLED].numpy()], 1).ravel())
      exposed.append(np.concatenate([ones, batch[batch_keys.NEG_EXPOSED].numpy()], 1).ravel())
      mask.append(np.concatenate([ones, batch[batch_keys.NEG_MASK].numpy()], 1).ravel())
      seen += len(ones)
      if seen >= self.auc_positives:
        break
    er_scores, re_scores, recalled, exposed, mask = map(
        np.concatenate, (er_scores, re_scores, recalled, exposed, mask))
    auc = {"er": float(metrics_lib.binary_auc(recalled, er_scores, weights=mask))}
    if has_b:
      auc["re"] = float(metrics_lib.binary_auc(exposed, re_scores, weights=mask * recalled))
    return auc

  def evaluate(self, model) -> dict:
    """All results: the model's, the references', the propensity heads' AUC if it has them, and
    a multi-interest tower's routing collapse (`routing_metrics`)."""
    results = {"model": self.model_metrics(model.tower), **self.reference}
    auc = self.propensity_auc(model)
    if auc:
      results["propensity_auc"] = auc
    routing = routing_metrics.routing_collapse(model.tower, self.users)
    if routing is not None:
      results["routing"] = routing
    return results


def numpy_requests(files, schema: schema_lib.LogSchema, keep=None):
  """The parsed requests of `files` (`reading.read_requests`), batch by batch as numpy arrays and
  lists (a ragged field)."""
  for batch in reading.read_requests(files, schema, 1024, keep=keep):
    yield {k: (v.to_list() if isinstance(v, tf.RaggedTensor) else v.numpy())
           for k, v in batch.items()}


def request_user(batch: dict, i: int, schema: schema_lib.LogSchema, max_history: int) -> dict:
  """Record `i` of a `numpy_requests` batch as the user tower sees it: its user features and its
  last `max_history` clicks, oldest first, padded after them."""
  history = list(batch[schema_lib.HISTORY][i])[-max_history:]
  return {schema_lib.USER_ID: int(batch[schema_lib.USER_ID][i]),
          **{name: int(batch[name][i]) for name in schema.user_feature_names},
          schema_lib.HISTORY: history + [schema_lib.PAD_ID] * (max_history - len(history))}


def first_request_users(dataset: reading.BuiltDataset, split: str, num_requests: int,
                        max_history: int) -> dict[str, np.ndarray]:
  """The users of the first `num_requests` requests of `split` (file order, clicked or not), as
  the tower's dense input {user_id, features..., history} like `Evaluator.users`: real queries,
  for the export's index check."""
  schema = dataset.schema
  rows = []
  for batch in numpy_requests(dataset.split_files[split], schema):
    wanted = min(len(batch[schema_lib.USER_ID]), num_requests - len(rows))
    rows += [request_user(batch, i, schema, max_history) for i in range(wanted)]
    if len(rows) >= num_requests:
      break
  if not rows:
    raise ValueError(f"{dataset.name}: the {split} split has no request to query the index check "
                     f"with (--check_queries=0 skips it)")
  names = (schema_lib.USER_ID, *schema.user_feature_names, schema_lib.HISTORY)
  users = {name: np.array([row[name] for row in rows], np.int64) for name in names}
  users[schema_lib.HISTORY] = users[schema_lib.HISTORY].reshape(len(rows), max_history)
  return users


def user_embeddings(tower, users: dict, batch_size: int = 2048) -> np.ndarray:
  """The tower's embeddings of `users` (dense inputs as `Evaluator.users`), [U, d] or [U, K, d]."""
  ds = tf.data.Dataset.from_tensor_slices(users).batch(batch_size)
  return np.concatenate([tower.user_embedding(b).numpy() for b in ds])


def item_embeddings(tower, num_items: int, batch_size: int = 8192) -> np.ndarray:
  """The item tower's output for ids 0..num_items-1 (row 0 is the padding item), float32."""
  ids = tf.data.Dataset.range(num_items).batch(batch_size)
  return np.concatenate([tower.item_embedding(b).numpy() for b in ids]).astype(np.float32)


RETRIEVERS = ("model", "popularity", "oracle")


def results_markdown(results: dict, ks) -> str:
  """The final evaluation as metrics.md: the test day's table, its bias table and AUCs, then
  `test_random`'s."""
  table = _tables(results, ks) + _auc_line(results, "the test day")
  if "routing" in results:
    table += "\n\n" + routing_metrics.routing_markdown(results["routing"]) + "\n"
  if TEST_RANDOM in results:
    random_results = results[TEST_RANDOM]
    table += (f"\n\n## {TEST_RANDOM}: randomly exposed items (unbiased)\n\n"
              + _tables(random_results, ks) + _auc_line(random_results, TEST_RANDOM))
  return table


def _tables(results: dict, ks) -> str:
  """The retrievers' metrics table, then their bias table where they have bias metrics."""
  retrievers = {k: v for k, v in results.items() if k in RETRIEVERS}
  table = metrics_lib.metrics_table(retrievers, ks)
  bias = bias_metrics.bias_table(retrievers, ks)
  if bias:
    table += ("\n\nPopularity bias of the top K (avg popularity in training clicks; the head is "
              "the most-clicked items holding 80 % of them):\n\n" + bias)
  return table


def _auc_line(results: dict, where: str) -> str:
  """The propensity heads' AUC as a line of metrics.md ('' without NSDN); RE only where there is
  one."""
  auc = results.get("propensity_auc")
  if not auc:
    return ""
  parts = [f"ER {auc['er']:.4f}"] + ([f"RE {auc['re']:.4f}"] if "re" in auc else [])
  return f"\n\nPropensity heads, AUC on {where}: {', '.join(parts)}\n"

"""Retrieval metrics against hand-computed values and brute-force references."""
import uma2_tf  # noqa: F401

import numpy as np
import pytest

from uma2_tf import metrics

# 2 users over items 1..5 (0 is padding). User 0's hits sit at positions 1 and 3, user 1's at 0.
RETRIEVED = np.array([[3, 1, 5, 2], [5, 2, 1, 4]], np.int64)
TRUTH = [np.array([1, 2]), np.array([5, 3])]
TRUE_TOP = np.array([[1, 3, 4, 2], [2, 4, 5, 1]], np.int64)
KS = (1, 2, 4)


def brute_top_k(user_emb, item_emb, k):
  scores = user_emb.astype(np.float64) @ item_emb.astype(np.float64).T
  scores[:, 0] = -np.inf
  ids = np.argsort(-scores, axis=1, kind="stable")[:, :k]
  return ids, np.take_along_axis(scores, ids, axis=1)


def integer_embeddings(rng, rows, dim):
  # Small integers make float32 inner products exact, so ties are real and the comparison with
  # numpy is exact too.
  return rng.integers(-3, 4, size=(rows, dim)).astype(np.float32)


def test_top_k_matches_brute_force_and_never_returns_padding():
  rng = np.random.default_rng(0)
  users, items = integer_embeddings(rng, 7, 4), integer_embeddings(rng, 40, 4)
  items[0] = 100 * users.sum(0)  # The padding row would win for most users if it were scored.
  ids, scores = metrics.top_k_items(users, items, k=10)
  want_ids, want_scores = brute_top_k(users, items, 10)
  assert ids.dtype == np.int64 and scores.dtype == np.float32 and ids.shape == (7, 10)
  np.testing.assert_array_equal(ids, want_ids)
  np.testing.assert_array_equal(scores, want_scores)
  assert (ids != 0).all()


def test_top_k_ties_lower_id_first():
  users = np.array([[1.0, 0.0]], np.float32)
  items = np.array([[9, 0], [1, 0], [2, 5], [1, 3], [2, -1], [0, 0]], np.float32)
  ids, scores = metrics.top_k_items(users, items, k=5)
  np.testing.assert_array_equal(ids, [[2, 4, 1, 3, 5]])
  np.testing.assert_array_equal(scores, [[2, 2, 1, 1, 0]])


def test_top_k_all_real_items_and_batching(monkeypatch):
  rng = np.random.default_rng(1)
  users, items = integer_embeddings(rng, 11, 3), integer_embeddings(rng, 9, 3)
  full_ids, full_scores = metrics.top_k_items(users, items, k=8)  # k = every real item
  assert (np.sort(full_ids, axis=1) == np.arange(1, 9)).all()
  ids, scores = metrics.top_k_items(users, items, k=8, batch_size=3)
  np.testing.assert_array_equal(ids, full_ids)
  np.testing.assert_array_equal(scores, full_scores)
  # The memory cap shrinks batches below batch_size without changing the result.
  monkeypatch.setattr(metrics, "MAX_BATCH_SCORES", 16)
  ids, _ = metrics.top_k_items(users, items, k=8)
  np.testing.assert_array_equal(ids, full_ids)
  np.testing.assert_array_equal(ids, brute_top_k(users, items, 8)[0])


def test_top_k_rejects_bad_arguments():
  users, items = np.ones((2, 3), np.float32), np.ones((5, 3), np.float32)
  with pytest.raises(ValueError, match="k must be"):
    metrics.top_k_items(users, items, k=5)
  with pytest.raises(ValueError, match="k must be"):
    metrics.top_k_items(users, items, k=0)
  with pytest.raises(ValueError, match="sizes differ"):
    metrics.top_k_items(users, np.ones((5, 4), np.float32), k=2)


def test_retrieval_metrics_by_hand():
  got = metrics.retrieval_metrics(RETRIEVED, TRUTH, KS)
  assert got == pytest.approx({
      "hitrate@1": 0.5, "recall@1": (0 + 1 / 2) / 2, "precision@1": (0 + 1) / 2,
      "hitrate@2": 1.0, "recall@2": (1 / 2 + 1 / 2) / 2, "precision@2": (1 / 2 + 1 / 2) / 2,
      "hitrate@4": 1.0, "recall@4": (1 + 1 / 2) / 2, "precision@4": (2 / 4 + 1 / 4) / 2,
  })
  assert all(isinstance(v, float) for v in got.values())


def test_retrieval_metrics_counts_repeated_ids_once():
  retrieved = np.array([[1, 1, 2, 4]])
  got = metrics.retrieval_metrics(retrieved, [np.array([1, 1, 3])], (2, 4))
  # Truth {1, 3}: top 2 {1} -> 1 hit, top 4 {1, 2, 4} -> 1 hit.
  assert got == pytest.approx({"hitrate@2": 1.0, "recall@2": 0.5, "precision@2": 0.5,
                               "hitrate@4": 1.0, "recall@4": 0.5, "precision@4": 0.25})


def test_retrieval_metrics_match_per_user_sets():
  rng = np.random.default_rng(2)
  num_users, num_items, k_max, ks = 300, 60, 20, (1, 5, 20)
  retrieved = np.stack([rng.permutation(np.arange(1, num_items))[:k_max] for _ in range(num_users)])
  truth = [rng.choice(np.arange(1, num_items), rng.integers(1, 15), replace=False)
           for _ in range(num_users)]
  got = metrics.retrieval_metrics(retrieved, truth, ks)
  for k in ks:
    n = np.array([len(set(r[:k]) & set(t)) for r, t in zip(retrieved, truth)])
    sizes = np.array([len(t) for t in truth])
    assert got[f"hitrate@{k}"] == pytest.approx(np.mean(n > 0))
    assert got[f"recall@{k}"] == pytest.approx(np.mean(n / sizes))
    assert got[f"precision@{k}"] == pytest.approx(np.mean(n / k))


def test_retrieval_metrics_rejects_bad_arguments():
  with pytest.raises(ValueError, match="K must be"):
    metrics.retrieval_metrics(RETRIEVED, TRUTH, (5,))
  with pytest.raises(ValueError, match="K must be"):
    metrics.retrieval_metrics(RETRIEVED, TRUTH, (0,))
  with pytest.raises(ValueError, match="no relevant item"):
    metrics.retrieval_metrics(RETRIEVED, [np.array([1]), np.array([], np.int64)], (1,))
  with pytest.raises(ValueError, match="users"):
    metrics.retrieval_metrics(RETRIEVED, TRUTH[:1], (1,))


def test_oracle_metrics_by_hand():
  got = metrics.oracle_metrics(RETRIEVED, TRUE_TOP, KS)
  # K=1: {3}&{1}, {5}&{2} -> 0, 0. K=2: {3,1}&{1,3}, {5,2}&{2,4} -> 2, 1. K=4: 3 and 4 shared.
  assert got == pytest.approx({"oracle_recall@1": 0.0, "oracle_recall@2": (1 + 1 / 2) / 2,
                               "oracle_recall@4": (3 / 4 + 4 / 4) / 2})
  assert metrics.oracle_metrics(TRUE_TOP, TRUE_TOP, KS) == pytest.approx(
      {"oracle_recall@1": 1.0, "oracle_recall@2": 1.0, "oracle_recall@4": 1.0})


def test_oracle_metrics_match_per_user_sets():
  rng = np.random.default_rng(3)
  retrieved = np.stack([rng.permutation(np.arange(1, 30))[:12] for _ in range(100)])
  true_top = np.stack([rng.permutation(np.arange(1, 30))[:15] for _ in range(100)])
  got = metrics.oracle_metrics(retrieved, true_top, (3, 12))
  for k in (3, 12):
    want = np.mean([len(set(r[:k]) & set(t[:k])) / k for r, t in zip(retrieved, true_top)])
    assert got[f"oracle_recall@{k}"] == pytest.approx(want)


def test_oracle_metrics_needs_deep_enough_true_top():
  with pytest.raises(ValueError, match="true_top"):
    metrics.oracle_metrics(RETRIEVED, TRUE_TOP[:, :2], (4,))


def test_popularity_top_k_excludes_padding_and_breaks_ties_by_id():
  counts = np.array([100, 3, 7, 3, 0, 7], np.int64)
  top = metrics.popularity_top_k(counts, k=4, num_users=2)
  np.testing.assert_array_equal(top, [[2, 5, 1, 3], [2, 5, 1, 3]])
  assert top.dtype == np.int64
  got = metrics.retrieval_metrics(top, [np.array([5]), np.array([3, 4])], (2, 4))
  assert got["hitrate@2"] == pytest.approx(0.5)
  assert got["recall@4"] == pytest.approx((1 + 1 / 2) / 2)
  with pytest.raises(ValueError, match="k must be"):
    metrics.popularity_top_k(counts, k=6, num_users=2)


def test_binary_auc_by_hand():
  assert metrics.binary_auc([1, 1, 0, 0], [0.8, 0.4, 0.6, 0.2]) == pytest.approx(3 / 4)
  # Kept: positives 0.9 (w 1), 0.3 (w 1); negatives 0.3 (w 2), 0.8 (w 1); the weight-0 positive
  # drops out. Pairs: 0.9 beats both (2 + 1), 0.3 ties the 0.3 negative (1/2 * 2) -> 4 of 2 * 3.
  labels = np.array([1, 0, 1, 0, 1], np.float32)
  scores = np.array([0.9, 0.3, 0.3, 0.8, 0.1], np.float32)
  weights = np.array([1, 2, 1, 1, 0], np.float32)
  assert metrics.binary_auc(labels, scores, weights) == pytest.approx(4 / 6)


def test_binary_auc_matches_pairwise():
  rng = np.random.default_rng(4)
  n = 400
  labels = rng.random(n) < 0.3
  scores = np.round(rng.normal(size=n) + labels, 1)  # Rounded so that ties are common.
  weights = rng.random(n) * (rng.random(n) > 0.2)
  pos, neg = labels, ~labels
  diff = scores[pos][:, None] - scores[neg][None, :]
  pair_w = weights[pos][:, None] * weights[neg][None, :]
  want = np.sum(pair_w * ((diff > 0) + 0.5 * (diff == 0))) / pair_w.sum()
  assert metrics.binary_auc(labels.astype(np.float32), scores, weights) == pytest.approx(want)


def test_binary_auc_needs_both_classes():
  with pytest.raises(ValueError, match="both classes"):
    metrics.binary_auc([1, 1], [0.1, 0.2])
  with pytest.raises(ValueError, match="both classes"):
    metrics.binary_auc([1, 0, 0], [0.1, 0.2, 0.3], weights=[1, 0, 0])


def test_metrics_table():
  results = {"model": {"recall@2": 0.5, "hitrate@2": 1.0, "oracle_recall@2": 0.75,
                       "recall@1": 0.25},
             "popularity": {"recall@1": 1 / 3, "recall@2": 0.125}}
  assert metrics.metrics_table(results, (1, 2)) == "\n".join([
      "| retriever | recall@1 | hitrate@2 | recall@2 | oracle_recall@2 |",
      "|---|---:|---:|---:|---:|",
      "| model | 0.2500 | 1.0000 | 0.5000 | 0.7500 |",
      "| popularity | 0.3333 |  | 0.1250 |  |",
  ])

"""Popularity-bias metrics (coverage, average popularity, Gini, tail share) against hand-computed
values, and their place in the Evaluator's results and in metrics.md."""
import uma2_tf  # noqa: F401

import numpy as np
import pytest
import tensorflow as tf

from uma2_tf import bias_metrics, evaluation, metrics

# 5 real items 1..5 (id 0 is padding) with 10 training clicks. Most-clicked first: 1 (5), 2 (3),
# 3 (1), 4 (1), 5 (0); cumulative 5, 8, ... and 8 is exactly 80 % of 10, so the head is {1, 2}.
CLICKS = np.array([0, 5, 3, 1, 1, 0], np.int64)
# 3 users, K = 2.
RETRIEVED = np.array([[1, 2], [1, 3], [2, 4]], np.int64)


def test_coverage_by_hand():
  # K=2: distinct {1, 2, 3, 4} -> 4 of 5 items. K=1: {1, 2} -> 2 of 5.
  assert bias_metrics.coverage(RETRIEVED, CLICKS) == pytest.approx(4 / 5)
  assert bias_metrics.coverage(RETRIEVED[:, :1], CLICKS) == pytest.approx(2 / 5)


def test_coverage_never_counts_the_padding_id():
  # Only item 1 is an item here: 1 of 5, although two distinct ids (0, 1) appear.
  assert bias_metrics.coverage(np.array([[0, 1], [0, 0]]), CLICKS) == pytest.approx(1 / 5)
  # Every real item: full coverage, the padding column changes nothing.
  every = np.array([[1, 2, 3, 0], [4, 5, 0, 0]])
  assert bias_metrics.coverage(every, CLICKS) == 1.0


def test_avg_popularity_by_hand():
  # K=2 slots: 1, 2 | 1, 3 | 2, 4 -> clicks 5 + 3 + 5 + 1 + 3 + 1 = 18 over 6 slots.
  assert bias_metrics.avg_popularity(RETRIEVED, CLICKS) == pytest.approx(18 / 6)
  # K=1 slots: 1 | 1 | 2 -> 5 + 5 + 3 = 13 over 3 slots.
  assert bias_metrics.avg_popularity(RETRIEVED[:, :1], CLICKS) == pytest.approx(13 / 3)
  # Float counts work the same; a padding slot is no slot: (5 + 3) / 2.
  assert bias_metrics.avg_popularity(np.array([[1, 0], [2, 0]]), CLICKS.astype(np.float32)) == 4.0


def test_gini_by_hand():
  # K=2: retrieved 2, 2, 1, 1, 0 times (items 1..5); ascending x = 0, 1, 1, 2, 2, n = 5, sum 6.
  # Weights 2i - n - 1 = -4, -2, 0, 2, 4: 0 - 2 + 0 + 4 + 8 = 10 -> 10 / (5 * 6) = 1/3.
  assert bias_metrics.gini(RETRIEVED, CLICKS) == pytest.approx(1 / 3)
  # K=1: x = 0, 0, 0, 1, 2 (items 5, 4, 3, 2, 1), sum 3: 2 * 1 + 4 * 2 = 10 -> 10 / 15 = 2/3.
  assert bias_metrics.gini(RETRIEVED[:, :1], CLICKS) == pytest.approx(2 / 3)


def test_gini_of_uniform_retrieval_is_zero():
  # Items 1..5 each retrieved twice: x = 2, 2, 2, 2, 2 and the weights -4..4 sum to 0.
  uniform = np.array([[1, 2], [3, 4], [5, 1], [2, 3], [4, 5]])
  assert bias_metrics.gini(uniform, CLICKS) == pytest.approx(0.0, abs=1e-12)


def test_gini_of_everyone_retrieving_the_same_items_is_at_its_maximum():
  # K=1, all 3 users get item 1: x = 0, 0, 0, 0, 3 -> 4 * 3 / (5 * 3) = 4/5 = (n - 1) / n, the
  # largest Gini of 5 items.
  assert bias_metrics.gini(np.array([[1], [1], [1]]), CLICKS) == pytest.approx(4 / 5)
  # K=2, all users get {1, 2}: x = 0, 0, 0, 3, 3 -> (2 * 3 + 4 * 3) / (5 * 6) = 0.6 = (n - K) / n,
  # the largest for lists of K distinct items.
  assert bias_metrics.gini(np.array([[1, 2], [2, 1], [1, 2]]), CLICKS) == pytest.approx(3 / 5)


def test_gini_matches_the_mean_absolute_difference():
  # The sorted formula equals sum_ij |x_i - x_j| / (2 n^2 mean x).
  rng = np.random.default_rng(0)
  retrieved = rng.integers(1, 30, size=(40, 7))
  x = np.bincount(retrieved.ravel(), minlength=31)[1:].astype(np.float64)
  want = np.abs(x[:, None] - x[None, :]).sum() / (2 * len(x) ** 2 * x.mean())
  assert bias_metrics.gini(retrieved, np.ones(31)) == pytest.approx(want)


def test_head_is_cut_at_exactly_80_percent():
  # Cumulative 5, 8 of 10: 8 is exactly 80 %, so the head stops at 2 items (not 3).
  np.testing.assert_array_equal(bias_metrics.head_items(CLICKS),
                                [False, True, True, False, False, False])
  # One click less on item 2: cumulative 5, 7, 8 of 9 -> 7 < 7.2 <= 8, so item 3 joins the head.
  np.testing.assert_array_equal(bias_metrics.head_items([0, 5, 2, 1, 1, 0]),
                                [False, True, True, True, False, False])


def test_head_breaks_equal_counts_by_lower_id():
  # Cumulative 7, 8 of 10 reaches 80 % with the second item, one of 2, 3, 4 (1 click each):
  # the lowest id, 2.
  np.testing.assert_array_equal(bias_metrics.head_items(np.array([0, 7, 1, 1, 1], np.float64)),
                                [False, True, True, False, False])
  assert not bias_metrics.head_items(np.zeros(4)).any()  # No training click: no head.


def test_tail_share_by_hand():
  # Head {1, 2}. K=2 slots 1, 2 | 1, 3 | 2, 4: items 3 and 4 are tail -> 2 of 6 slots.
  assert bias_metrics.tail_share(RETRIEVED, CLICKS) == pytest.approx(2 / 6)
  # K=1 slots 1 | 1 | 2: all head.
  assert bias_metrics.tail_share(RETRIEVED[:, :1], CLICKS) == 0.0
  # Item 5 (never clicked) is tail, the padding slot is no slot: 1 of 2.
  assert bias_metrics.tail_share(np.array([[5, 0], [1, 0]]), CLICKS) == pytest.approx(1 / 2)


def test_bias_metrics_slices_each_k():
  got = bias_metrics.bias_metrics(RETRIEVED, CLICKS, (1, 2))
  assert list(got) == [f"{m}@{k}" for k in (1, 2) for m in bias_metrics.BIAS_METRICS]
  assert got == pytest.approx({
      "coverage@1": 2 / 5, "avg_popularity@1": 13 / 3, "gini@1": 2 / 3, "tail_share@1": 0.0,
      "coverage@2": 4 / 5, "avg_popularity@2": 3.0, "gini@2": 1 / 3, "tail_share@2": 1 / 3})
  assert all(isinstance(v, float) for v in got.values())


def test_bias_metrics_match_the_single_functions():
  rng = np.random.default_rng(1)
  clicks = rng.integers(0, 50, size=60)
  retrieved = np.stack([rng.permutation(np.arange(1, 60))[:20] for _ in range(50)])
  got = bias_metrics.bias_metrics(retrieved, clicks, (20, 3, 7))
  for k in (3, 7, 20):
    for name in bias_metrics.BIAS_METRICS:
      fn = getattr(bias_metrics, name)
      assert got[f"{name}@{k}"] == pytest.approx(fn(retrieved[:, :k], clicks)), (name, k)


def test_bias_metrics_reject_bad_arguments():
  with pytest.raises(ValueError, match="beyond the catalog"):
    bias_metrics.coverage(np.array([[6]]), CLICKS)
  with pytest.raises(ValueError, match="no item"):
    bias_metrics.gini(np.array([[0, 0]]), CLICKS)
  with pytest.raises(ValueError, match="non-negative"):
    bias_metrics.tail_share(RETRIEVED, [0, 1, -1, 1, 1, 1])
  with pytest.raises(ValueError, match="K must be"):
    bias_metrics.bias_metrics(RETRIEVED, CLICKS, (3,))


RESULTS = {
    "model": {"recall@2": 0.5, "coverage@2": 0.8, "avg_popularity@2": 3.0, "gini@2": 1 / 3,
              "tail_share@2": 1 / 3},
    "popularity": {"recall@2": 0.25, "coverage@2": 0.4, "avg_popularity@2": 4.0, "gini@2": 0.6,
                   "tail_share@2": 0.0},
}


def test_bias_table_and_metrics_table_keep_apart():
  assert metrics.metrics_table(RESULTS, (2,)) == "\n".join([
      "| retriever | recall@2 |", "|---|---:|", "| model | 0.5000 |", "| popularity | 0.2500 |"])
  assert bias_metrics.bias_table(RESULTS, (2,)) == "\n".join([
      "| retriever | coverage@2 | avg popularity@2 | gini@2 | tail share@2 |",
      "|---|---:|---:|---:|---:|",
      "| model | 0.8000 | 3.0 | 0.3333 | 0.3333 |",
      "| popularity | 0.4000 | 4.0 | 0.6000 | 0.0000 |",
  ])
  assert bias_metrics.bias_table({"model": {"recall@2": 0.5}}, (2,)) == ""


def test_results_markdown_adds_the_bias_table_after_the_unchanged_table():
  results = {**RESULTS, "propensity_auc": {"er": 0.75}}
  text = evaluation.results_markdown(results, (2,))
  table = metrics.metrics_table(RESULTS, (2,))
  assert text.startswith(table + "\n\n")
  assert bias_metrics.bias_table(RESULTS, (2,)) in text
  assert text.endswith("Propensity heads, AUC on the test day: ER 0.7500\n")
  # Without bias metrics the output is the table and AUC line alone, as before.
  plain = {name: {"recall@2": row["recall@2"]} for name, row in RESULTS.items()}
  assert evaluation.results_markdown(plain, (2,)) == metrics.metrics_table(plain, (2,))


class RandomTower:
  """Fixed random embeddings per user and item id (a [B, interests, d] user side when
  interests > 1): enough for the Evaluator, which only calls these two methods."""

  def __init__(self, num_users, num_items, interests=1, dim=8, seed=0):
    rng = np.random.default_rng(seed)
    shape = (num_users, interests, dim) if interests > 1 else (num_users, dim)
    self.users = rng.normal(size=shape).astype(np.float32)
    self.items = rng.normal(size=(num_items, dim)).astype(np.float32)

  def user_embedding(self, batch):
    return tf.constant(self.users[batch["user_id"].numpy()])

  def item_embedding(self, ids):
    return tf.constant(self.items[ids.numpy()])


class NoHeadModel:
  nsdn = None  # No propensity heads: evaluate() skips their AUC.

  def __init__(self, tower):
    self.tower = tower


@pytest.mark.parametrize("interests", [1, 3])
def test_evaluator_reports_bias_for_model_and_references(tiny_dataset, monkeypatch, interests):
  ks = (10, 50)
  evaluator = evaluation.Evaluator(tiny_dataset, ks=ks)
  clicks = tiny_dataset.catalog.click_count
  num_items = tiny_dataset.schema.num_items
  tower = RandomTower(int(evaluator.users["user_id"].max()) + 1, num_items, interests)
  top_k_calls = []
  top_k = metrics.top_k_items
  monkeypatch.setattr(metrics, "top_k_items",
                      lambda *a, **kw: top_k_calls.append(a[2]) or top_k(*a, **kw))
  results = evaluator.evaluate(NoHeadModel(tower))
  assert top_k_calls == [50]  # One retrieval at the largest K, sliced for K = 10.

  assert {"model", "popularity", "oracle"} <= set(results)
  for name in ("model", "popularity", "oracle"):
    row = results[name]
    assert {f"{m}@{k}" for m in bias_metrics.BIAS_METRICS for k in ks} <= set(row), name
    assert "recall@50" in row  # Beside the existing metrics.
    for k in ks:
      assert 0 < row[f"coverage@{k}"] <= 1 and 0 <= row[f"gini@{k}"] < 1, name
      assert 0 <= row[f"tail_share@{k}"] <= 1, name
      assert clicks[1:].min() <= row[f"avg_popularity@{k}"] <= clicks[1:].max(), name
  # Everyone gets the same K most-clicked items from the popularity retriever.
  popularity = results["popularity"]
  assert popularity["coverage@10"] == pytest.approx(10 / (num_items - 1))
  assert popularity["tail_share@10"] == 0.0
  assert popularity["gini@50"] == pytest.approx((num_items - 1 - 50) / (num_items - 1))
  # The model's numbers are those of its own top K.
  ids, _ = top_k(evaluator.user_embeddings(tower), evaluator.item_embeddings(tower), 50)
  want = bias_metrics.bias_metrics(ids, clicks, ks)
  assert {k: v for k, v in results["model"].items() if k in want} == pytest.approx(want)
  text = evaluation.results_markdown(results, ks)
  assert "| retriever | coverage@10 | avg popularity@10 | gini@10 | tail share@10 |" in text

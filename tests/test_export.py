"""`make export`: versioned SavedModels that reload in a fresh process and answer like the model."""
import uma2_tf  # noqa: F401

import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from uma2_tf import evaluation, export, index_check, metrics, training


LOADER = os.path.join(os.path.dirname(__file__), "load_export.py")


@pytest.fixture(scope="module")
def trained_run(tiny_data_dir, tmp_path_factory):
  run_dir = str(tmp_path_factory.mktemp("run"))
  config = training.TrainConfig(dataset="uma2_simulated/tiny", data_dir=tiny_data_dir,
                                output_dir=run_dir, batch_size=256, epochs=2,
                                early_stopping_patience=0)
  training.train(config, verbose=0)
  return run_dir


@pytest.fixture(scope="module")
def exported(trained_run, tmp_path_factory):
  export_dir = str(tmp_path_factory.mktemp("exports"))
  version_dir = export.export_run(export.ExportConfig(run_dir=trained_run, export_dir=export_dir,
                                                      max_k=200, check_seconds=0.2))
  return export_dir, version_dir


def test_export_writes_a_complete_numbered_version(exported, trained_run):
  export_dir, version_dir = exported
  assert version_dir == os.path.join(export_dir, "1")
  assert sorted(os.listdir(export_dir)) == ["1"]  # No temporary dir left behind.
  for name in (export.QUERY_MODEL, export.RETRIEVAL_MODEL, export.BRUTE_FORCE_MODEL):
    assert os.path.exists(os.path.join(version_dir, name, "saved_model.pb")), name
  assert os.path.exists(os.path.join(version_dir, export.INDEX_CHECK))
  metadata = export.read_metadata(version_dir)
  assert metadata["version"] == 1 and metadata["max_k"] == 200 and metadata["num_items"] == 1000
  assert set(metadata["inputs"]) == {"user_id", "age", "gender", "region", "history"}
  assert metadata["scann"]["num_leaves"] == 32  # ~sqrt(1000)
  assert metadata["metrics"]["model"]["recall@100"] > 0
  assert metadata["config"]["dataset"] == "uma2_simulated/tiny"
  with np.load(os.path.join(version_dir, export.ITEM_EMBEDDINGS)) as z:
    np.testing.assert_array_equal(z["item_ids"], np.arange(1, 1001))
    assert z["embeddings"].shape == (1000, metadata["embedding_dim"])


def test_reloaded_models_answer_like_the_trained_model(
  exported, trained_run, tiny_dataset, tmp_path
):
  _, version_dir = exported
  _, _, model = export.load_trained_model(trained_run)
  users = evaluation.Evaluator(tiny_dataset, ks=(100,)).users
  features = {k: v[:64] for k, v in users.items()}
  queries = str(tmp_path / "queries.npz")
  np.savez(queries, k=np.int64(100), **features)
  out_path = str(tmp_path / "out.npz")
  result = subprocess.run(
    [sys.executable, LOADER, version_dir, queries, out_path],
    capture_output=True,
    text=True,
    timeout=300,
  )
  assert result.returncode == 0, result.stderr[-3000:]
  out = dict(np.load(out_path))

  tower = model.tower
  expected_user = tower.user_embedding({k: tf.constant(v) for k, v in features.items()}).numpy()
  np.testing.assert_allclose(out["user_embedding"], expected_user, rtol=1e-5, atol=1e-6)

  items = export.item_embeddings(tower, tiny_dataset.schema.num_items)
  expected_ids, expected_scores = metrics.top_k_items(expected_user, items, 100)
  np.testing.assert_array_equal(out["brute_ids"], expected_ids)
  np.testing.assert_allclose(out["brute_scores"], expected_scores, rtol=1e-5, atol=1e-5)

  overlap = np.mean(
    [len(set(a) & set(b)) / 100 for a, b in zip(out["scann_ids"], out["brute_ids"])]
  )
  assert overlap >= 0.95, overlap
  assert (out["scann_ids"] >= 1).all()  # The padding item is not in the index.


def test_versions_count_up_and_are_never_overwritten(exported, trained_run):
  export_dir, _ = exported
  assert export.next_version(export_dir) == 2
  with pytest.raises(FileExistsError, match="immutable"):
    export.export_run(export.ExportConfig(run_dir=trained_run, export_dir=export_dir, version=1))


def test_a_failed_export_leaves_nothing_behind(trained_run, tmp_path, monkeypatch):
  export_dir = str(tmp_path / "exports")
  real_save = tf.saved_model.save

  def failing_save(obj, path, *args, **kwargs):
    if path.endswith(export.RETRIEVAL_MODEL):
      raise RuntimeError("disk full")
    return real_save(obj, path, *args, **kwargs)

  monkeypatch.setattr(tf.saved_model, "save", failing_save)
  with pytest.raises(RuntimeError, match="disk full"):
    export.export_run(export.ExportConfig(run_dir=trained_run, export_dir=export_dir, max_k=50))
  assert os.listdir(export_dir) == []


@pytest.mark.parametrize("args,message", [
    (["--run_dir=/nonexistent"], "config.json"),
    (["--max_k=-1"], "max_k"),
    (["--scann_min_recall=1.5"], "scann_min_recall"),
])
def test_cli_errors_are_one_line(trained_run, tmp_path, args, message):
  cmd = [sys.executable, "-m", "pipelines.export", f"--export_dir={tmp_path}"]
  if not any(a.startswith("--run_dir") for a in args):
    cmd.append(f"--run_dir={trained_run}")
  result = subprocess.run(cmd + args, capture_output=True, text=True, timeout=300)
  assert result.returncode == 2 and message in result.stderr and "Traceback" not in result.stderr


@pytest.mark.parametrize("damage", ["truncate_data", "flip_data", "truncate_index"])
def test_a_broken_checkpoint_is_one_line_naming_it_and_writes_nothing(trained_run, tmp_path,
                                                                     damage):
  run = str(tmp_path / "run")
  shutil.copytree(trained_run, run)
  final = os.path.join(run, "checkpoints", "final")
  path = final + (".index" if damage.endswith("index") else ".data-00000-of-00001")
  data = bytearray(open(path, "rb").read())
  if damage.startswith("flip"):
    data[len(data) // 2] ^= 0xFF
  else:
    data = data[:len(data) // 2]
  open(path, "wb").write(bytes(data))
  export_dir = str(tmp_path / "exports")
  result = subprocess.run([sys.executable, "-m", "pipelines.export", f"--run_dir={run}",
                           f"--export_dir={export_dir}"], capture_output=True, text=True,
                          timeout=300)
  assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr[-2000:]
  assert f"error: {final}: broken checkpoint" in result.stderr
  assert not os.path.exists(export_dir)


def test_scann_parameters_default_from_the_corpus():
  p = export.scann_parameters(1_000_000, export.ExportConfig())
  assert p["num_leaves"] == 1000 and p["num_leaves_to_search"] == 100 and p["max_k"] == 1000
  assert (
    export.scann_parameters(100_000, export.ExportConfig())["num_leaves_to_search"] == 79
  )  # 25K items
  assert export.scann_parameters(1000, export.ExportConfig())["num_leaves_to_search"] == 32  # all
  with pytest.raises(ValueError, match="max_k"):
    export.scann_parameters(100, export.ExportConfig(max_k=101))



@pytest.mark.parametrize("name", [export.QUERY_MODEL, export.BRUTE_FORCE_MODEL])
def test_stock_models_are_readable_by_saved_model_cli(exported, name):
  _, version_dir = exported
  cli = os.path.join(os.path.dirname(sys.executable), "saved_model_cli")
  result = subprocess.run(
    [
      cli,
      "show",
      "--dir",
      os.path.join(version_dir, name),
      "--tag_set",
      "serve",
      "--signature_def",
      "serving_default",
    ],
    capture_output=True,
    text=True,
    timeout=120,
  )
  assert result.returncode == 0, result.stderr[-2000:]
  expected = "user_embedding" if name == export.QUERY_MODEL else "item_ids"
  assert expected in result.stdout and "history" in result.stdout


# The index check (`index_check`): recall against exact search on real queries, and the tuning.


def planted_table(num_items: int = 50) -> np.ndarray:
  """Item id i scores num_items - i against the query [1, 0]: its exact top k is ids 1..k."""
  table = np.zeros((num_items + 1, 2), np.float32)
  table[1:, 0] = np.arange(num_items, 0, -1)
  table[1:, 1] = np.random.default_rng(0).standard_normal(num_items)
  return table


def test_recall_is_the_overlap_with_the_exact_top_k_on_a_planted_corpus():
  exact, _ = metrics.top_k_items(np.array([[1.0, 0.0]], np.float32), planted_table(), 5)
  np.testing.assert_array_equal(exact, [[1, 2, 3, 4, 5]])
  # 3 of the 5 found, in another order; an id returned twice counts once.
  found = np.array([[3, 1, 40, 2, 40], [1, 2, 3, 4, 5]])
  assert index_check.recall(found, np.repeat(exact, 2, axis=0), 5) == pytest.approx((3 / 5 + 1) / 2)


class ForcedIndex:
  """A stand-in index layer: the exact top k with the last `misses` replaced by the worst items."""

  def __init__(self, table: np.ndarray, misses: int):
    self.table, self.misses = tf.constant(table[1:]), misses

  def __call__(self, queries, k):
    _, rows = tf.math.top_k(tf.matmul(queries, self.table, transpose_b=True), k=k)
    worst = tf.broadcast_to(tf.range(self.table.shape[0], self.table.shape[0] - k, -1,
                                     dtype=tf.int32), tf.shape(rows))
    keep = tf.range(k) < k - self.misses
    return None, tf.cast(tf.where(keep, rows + 1, worst), tf.int64)


def test_the_check_measures_the_searchers_recall_and_speed(monkeypatch):
  table = planted_table()
  # A forced ScaNN that misses 2 of k=10 while fewer than all 8 leaves are searched, none after.
  monkeypatch.setattr(index_check, "scann_layer", lambda params, t: ForcedIndex(
      t, 2 if params["num_leaves_to_search"] < params["num_leaves"] else 0))
  params = {"max_k": 10, "num_leaves": 8, "num_leaves_to_search": 4,
            "num_reordering_candidates": 20}
  # Queries near [1, 0]: their exact top 10 are among ids 1..11, far from the forced misses.
  queries = np.ones((30, 2), np.float32) * [1, 0.01] * np.random.default_rng(1).random((30, 1))
  queries = queries.astype(np.float32)
  kwargs = dict(k=10, min_recall=0.7, seconds=0.05)
  _, chosen, check = index_check.checked_scann(params, table, queries, ForcedIndex(table, 0),
                                               tune_params=True, **kwargs)
  assert check["recall"] == pytest.approx(0.8) and chosen == params  # Held at once: kept.
  assert check["queries"] == 30 and check["k"] == 10 and check["tried"] == [
      {"num_leaves": 8, "num_leaves_to_search": 4, "num_reordering_candidates": 20, "recall": 0.8}]
  for mode in ("single", "batch"):
    assert check[f"qps_scann_{mode}"] > 0 and check[f"qps_brute_{mode}"] > 0
    assert check[f"speedup_{mode}"] == pytest.approx(
        check[f"qps_scann_{mode}"] / check[f"qps_brute_{mode}"], rel=0.01)
  kwargs["min_recall"] = 1.0
  _, chosen, check = index_check.checked_scann(params, table, queries, ForcedIndex(table, 0),
                                               tune_params=True, **kwargs)
  assert [t["num_leaves_to_search"] for t in check["tried"]] == [4, 6, 8]
  assert check["recall"] == 1.0 and chosen["num_leaves_to_search"] == 8
  _, _, check = index_check.checked_scann(params, table, queries, ForcedIndex(table, 0),
                                          tune_params=False, **kwargs)  # Given: reported only.
  assert check["recall"] == pytest.approx(0.8) and not check["tuned"] and len(check["tried"]) == 1
  assert "BELOW" in index_check.markdown(check)


def test_tuning_raises_leaves_searched_then_reordering_and_stops_once_the_target_holds():
  measured = []

  def measure(params):  # Recall grows with the leaves searched, and reaches 1 at 800 reordered.
    measured.append((params["num_leaves_to_search"], params["num_reordering_candidates"]))
    full = params["num_reordering_candidates"] >= 800
    return (1.0 if full else params["num_leaves_to_search"] / 40), None

  start = {"num_leaves": 32, "num_leaves_to_search": 4, "num_reordering_candidates": 400}
  chosen, _, tried = index_check.tune(start, measure, 1000, min_recall=0.5)
  assert measured == [(4, 400), (6, 400), (9, 400), (14, 400), (21, 400)]
  assert chosen["num_leaves_to_search"] == 21 and tried[-1]["recall"] == 0.525
  measured.clear()
  chosen, _, _ = index_check.tune(start, measure, 1000, min_recall=1.0)
  assert measured[-3:] == [(21, 400), (32, 400), (32, 800)]  # All leaves, then reordering.
  measured.clear()
  with pytest.raises(ValueError, match=r"0\.8000 is below --scann_min_recall=1.0 .*"
                                       r"--scann_leaves_to_search / --scann_reorder"):
    index_check.tune(start, measure, 500, min_recall=1.0)  # 500 items: never 800 reordered.
  assert measured[-2:] == [(32, 400), (32, 500)]
  _, _, tried = index_check.tune(start, measure, 1000, min_recall=1.0, adjust=False)
  assert len(tried) == 1


def test_an_unreachable_recall_fails_the_export_writing_nothing(trained_run, tmp_path,
                                                                 monkeypatch):
  export_dir = str(tmp_path / "exports")
  monkeypatch.setattr(index_check, "recall", lambda found, exact, k: 0.5)
  with pytest.raises(ValueError, match="--scann_min_recall") as error:
    export.export_run(export.ExportConfig(run_dir=trained_run, export_dir=export_dir, max_k=50,
                                          check_seconds=0.05))
  assert "0.5000" in str(error.value) and "--scann_reorder" in str(error.value)
  assert os.listdir(export_dir) == []


def test_metadata_records_the_check_and_its_recall_recomputes_from_the_saved_embeddings(
    exported, tiny_dataset, tmp_path):
  _, version_dir = exported
  metadata = export.read_metadata(version_dir)
  check = metadata["scann_check"]
  assert {"queries", "k", "recall", "qps_scann_single", "qps_brute_single", "qps_scann_batch",
          "qps_brute_batch", "speedup_single", "speedup_batch", "tried"} <= set(check)
  assert check["k"] == 100 and check["recall"] >= 0.95 and check["tuned"]
  assert {k: metadata["scann"][k] for k in index_check.KNOBS} == {
      k: check["tried"][-1][k] for k in index_check.KNOBS}
  assert f"{check['recall']:.4f}" in open(os.path.join(version_dir, export.INDEX_CHECK)).read()
  # The same real queries through the reloaded models, against exact search over the saved
  # embeddings.
  users = evaluation.first_request_users(tiny_dataset, "test", 2000,
                                         metadata["config"]["sampling"]["max_history"])
  assert len(users["user_id"]) == check["queries"]
  queries = str(tmp_path / "queries.npz")
  np.savez(queries, k=np.int64(100), **users)
  out_path = str(tmp_path / "out.npz")
  result = subprocess.run([sys.executable, LOADER, version_dir, queries, out_path],
                          capture_output=True, text=True, timeout=300)
  assert result.returncode == 0, result.stderr[-3000:]
  out = dict(np.load(out_path))
  with np.load(os.path.join(version_dir, export.ITEM_EMBEDDINGS)) as z:
    table = np.concatenate([np.zeros_like(z["embeddings"][:1]), z["embeddings"]])
  exact, _ = metrics.top_k_items(out["user_embedding"], table, 100)
  recomputed = np.mean([len(set(a) & set(b)) / 100 for a, b in zip(out["scann_ids"], exact)])
  # Equal but for a rare near-tie at rank 100 between the two processes' float sums.
  assert recomputed == pytest.approx(check["recall"], abs=1e-3)

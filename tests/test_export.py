"""`make export`: versioned SavedModels that reload in a fresh process and answer like the model."""
import uma2_tf  # noqa: F401

import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from uma2_tf import evaluation, export, metrics, training


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
                                                      max_k=200))
  return export_dir, version_dir


def test_export_writes_a_complete_numbered_version(exported, trained_run):
  export_dir, version_dir = exported
  assert version_dir == os.path.join(export_dir, "1")
  assert sorted(os.listdir(export_dir)) == ["1"]  # No temporary dir left behind.
  for name in (export.QUERY_MODEL, export.RETRIEVAL_MODEL, export.BRUTE_FORCE_MODEL):
    assert os.path.exists(os.path.join(version_dir, name, "saved_model.pb")), name
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

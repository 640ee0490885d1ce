"""The trainer through its real CLI on `tiny`: results on disk, resume after a kill, bad flags."""
import uma2_tf  # noqa: F401

import csv
import json
import os
import signal
import subprocess
import sys
import time

import pytest

from uma2_tf.data import samplers
from uma2_tf.tasks import LossConfig

TRAIN = [
  sys.executable,
  "-m",
  "pipelines.train",
  "--dataset=uma2_simulated/tiny",
  "--batch_size=128",
]
METRICS = [
  f"{m}@{k}" for k in (50, 100, 200) for m in ("hitrate", "recall", "precision", "oracle_recall")
]


def run(args, timeout=600):
  return subprocess.run(TRAIN + args, capture_output=True, text=True, timeout=timeout)


def epochs_in(history_csv):
  with open(history_csv) as f:
    return [int(row["epoch"]) for row in csv.DictReader(f)]


@pytest.fixture(scope="module")
def uma2_run(tiny_data_dir, tmp_path_factory):
  out = str(tmp_path_factory.mktemp("uma2_run"))
  result = run([f"--data_dir={tiny_data_dir}", f"--output_dir={out}", "--epochs=2",
                "--early_stopping_patience=0"])
  assert result.returncode == 0, result.stderr[-3000:]
  return out, result


def test_train_writes_config_metrics_and_table(uma2_run):
  out, result = uma2_run
  metrics = json.load(open(os.path.join(out, "metrics.json")))
  assert set(METRICS) <= set(metrics["model"])
  assert {f"{m}@100" for m in ("hitrate", "recall", "precision")} <= set(metrics["popularity"])
  assert metrics["oracle"]["oracle_recall@100"] == 1.0
  for name in ("er", "re"):
    assert 0.0 <= metrics["propensity_auc"][name] <= 1.0
  for name, value in metrics["model"].items():  # Shares, except a popularity in clicks.
    assert name.startswith("avg_popularity@") or 0.0 <= value <= 1.0, name
  # More K never finds fewer hits.
  assert (
    metrics["model"]["hitrate@50"]
    <= metrics["model"]["hitrate@100"]
    <= metrics["model"]["hitrate@200"]
  )
  table = open(os.path.join(out, "metrics.md")).read()
  assert "| model |" in table and "| popularity |" in table and "| oracle |" in table
  assert "| model |" in result.stdout  # The table is printed, too.

  config = json.load(open(os.path.join(out, "config.json")))
  assert config["dataset"] == "uma2_simulated/tiny" and config["batch_size"] == 128
  assert config["sampling"]["strategy"] == "ss_abc_fixed" and config["sampling"]["ratio"] == [
    1,
    4,
    20,
  ]
  assert config["loss"]["lambdas"] == [1.0, 1.0, 1.0, 1.0, 1.0] and config["loss"]["use_nsdn"]

  assert epochs_in(os.path.join(out, "history.csv")) == [0, 1]
  fill = json.load(open(os.path.join(out, "sampling.json")))
  assert set(fill) >= {
    "a_with_replacement",
    "a_padded",
    "b_with_replacement",
    "b_padded",
    "c_padded",
  }
  # Counted while training: every positive of every step, each event at most once per positive.
  run = json.load(open(os.path.join(out, "metrics.json")))["run"]
  assert (
    run["train_positives"] <= fill["positives"] <= run["epochs_run"] * run["steps_per_epoch"] * 128
  )
  assert all(0 <= fill[name] <= fill["positives"] for name in fill)
  assert os.path.exists(os.path.join(out, "checkpoints", "final.index"))
  assert not os.path.exists(os.path.join(out, "backup"))  # Removed once training completed.
  assert os.listdir(os.path.join(out, "tensorboard"))


def test_a_run_relaunched_from_its_config_json_trains_the_same_config(uma2_run, tmp_path):
  out, _ = uma2_run
  again = str(tmp_path / "again")
  result = run(
    [f"--config={os.path.join(out, 'config.json')}", f"--output_dir={again}", "--epochs=1"]
  )
  assert result.returncode == 0, result.stderr[-3000:]
  first = json.load(open(os.path.join(out, "config.json")))
  second = json.load(open(os.path.join(again, "config.json")))
  assert second == {**first, "output_dir": again, "epochs": 1}


def test_training_beats_an_untrained_model(uma2_run, tiny_dataset):
  """Two epochs on tiny are few, but the model must have learnt something: compare with its own
  initial weights, evaluated by the same evaluator."""
  from uma2_tf import evaluation, training

  out, _ = uma2_run
  config = training.TrainConfig(dataset="uma2_simulated/tiny", output_dir=out)
  model = training.build_model(config, tiny_dataset)
  model(next(iter(samplers.make_training_dataset(tiny_dataset, config.sampling, 2, shuffle=False))))
  evaluator = evaluation.Evaluator(tiny_dataset, config.eval_ks)
  untrained = evaluator.model_metrics(model.tower)
  trained = json.load(open(os.path.join(out, "metrics.json")))["model"]
  assert trained["recall@100"] > untrained["recall@100"] + 0.05


@pytest.mark.parametrize("tower,use_nsdn", [("youtube_dnn", False), ("dat", True)])
def test_other_towers_and_plain_gmm_use_the_same_trainer(
  tiny_data_dir, tiny_dataset, tmp_path, tower, use_nsdn
):
  from uma2_tf import training

  config = training.TrainConfig(dataset="uma2_simulated/tiny", data_dir=tiny_data_dir,
                                output_dir=str(tmp_path), batch_size=256, epochs=1, tower=tower,
                                loss=LossConfig(use_nsdn=use_nsdn))
  results = training.train(config, verbose=0)
  assert ("propensity_auc" in results) == use_nsdn
  assert results["model"]["recall@100"] > 0
  model = training.build_model(config, tiny_dataset)
  assert (model.nsdn is None) == (not use_nsdn)


def test_killed_run_resumes_where_it_stopped(tiny_data_dir, tmp_path):
  out = str(tmp_path / "run")
  args = [f"--data_dir={tiny_data_dir}", f"--output_dir={out}", "--epochs=3", "--batch_size=32",
          "--backup_every_steps=5", "--early_stopping_patience=0"]
  proc = subprocess.Popen(TRAIN + args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
  history = os.path.join(out, "history.csv")
  deadline = time.time() + 300
  # Kill during the second epoch: after the first one is logged and a backup of epoch 2 exists.
  while time.time() < deadline and proc.poll() is None:
    if os.path.exists(history) and len(epochs_in(history)) == 1:
      time.sleep(2.0)
      break
    time.sleep(0.2)
  assert proc.poll() is None, (
    "training ended before it could be killed:\n" + proc.stdout.read()[-2000:]
  )
  proc.send_signal(signal.SIGKILL)
  proc.wait()
  assert not os.path.exists(os.path.join(out, "metrics.json"))
  assert os.path.isdir(os.path.join(out, "backup"))

  resumed = run(args)
  assert resumed.returncode == 0, resumed.stderr[-3000:]
  assert "Epoch 1/3" not in resumed.stdout, "the restarted run began again from the first epoch"
  assert "Epoch 3/3" in resumed.stdout
  assert epochs_in(history) == [0, 1, 2]  # Each epoch once: redone epochs replace their rows.
  assert os.path.exists(os.path.join(out, "metrics.json"))


@pytest.mark.parametrize("flag,message", [
    ("--tower=transformer", "unknown tower 'transformer'"),
    ("--ratio=1,-4,20", "--ratio"),
    ("--lambdas=1,1", "--lambdas"),
    ("--strategy=tpu", "strategy"),
    ("--strategy=multi_worker", "--strategy=multi_worker needs TF_CONFIG"),
    ("--precision=float8", "precision must be one of"),
    ("--dataset=uma2_simulated/paper", "make data"),
    ("--validation=none", "--validation=none leaves nothing to select a model on"),
    ("--validation=users:1.5", "validation must be last_day, users:<share in (0, 1)> or none"),
])
def test_bad_flags_exit_with_one_clear_message(tiny_data_dir, tmp_path, flag, message):
  result = run([f"--data_dir={tiny_data_dir}", f"--output_dir={tmp_path}", flag], timeout=120)
  assert result.returncode != 0
  assert message in result.stderr, result.stderr[-2000:]
  assert "Traceback" not in result.stderr


def test_gpu_utilisation_reads_nvidia_smi_and_is_absent_without_a_gpu():
  from uma2_tf import profiling

  assert profiling.parse_nvidia_smi("87, 10240\n") == (87.0, 10240.0)
  with profiling.GpuUtilisation(interval_s=0.01) as gpu:
    time.sleep(0.05)
  if not gpu.available:  # this machine: no GPU, so no figure rather than a made-up one
    assert gpu.mean_percent is None and gpu.max_memory_mib is None
    assert profiling.device_name() == "CPU"

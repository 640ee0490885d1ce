"""Restarting a run on `tiny`: history.csv holds each epoch once, a run killed after training is
evaluated without training again, a run dir of another config is refused until `restart`."""
import uma2_tf  # noqa: F401

import csv
import dataclasses
import json
import os
import shutil
import subprocess
import sys

import pytest

from uma2_tf import run_dir, training
from uma2_tf.models.uma2 import UMA2Model

RESULTS = (run_dir.METRICS_JSON, run_dir.METRICS_MD, run_dir.PER_USER, run_dir.SAMPLING)


def epochs_in(out):
  with open(os.path.join(out, run_dir.HISTORY)) as f:
    return [int(row["epoch"]) for row in csv.DictReader(f)]


def remove(out, *names):
  for name in names:
    os.remove(os.path.join(out, name))


@pytest.fixture(scope="module")
def finished(tiny_data_dir, tmp_path_factory):
  """A finished 2-epoch run (6 steps an epoch: never a backup) and a copy of its dir."""
  root = tmp_path_factory.mktemp("resume")
  config = training.TrainConfig(dataset="uma2_simulated/tiny", data_dir=tiny_data_dir,
                                output_dir=str(root / "run"), batch_size=256, epochs=2,
                                evaluate_each_epoch=False, early_stopping_patience=0)
  training.train(config, verbose=0)
  shutil.copytree(config.output_dir, root / "copy")
  return config, str(root / "copy")


@pytest.fixture
def config(finished):
  """The finished run's config; its dir as training left it (every test alters it)."""
  config, copy = finished
  shutil.rmtree(config.output_dir)
  shutil.copytree(copy, config.output_dir)
  return config


def test_trim_history_keeps_the_header_and_the_epochs_before_the_restart(tmp_path):
  run = run_dir.RunDir(str(tmp_path))
  header, rows = "epoch,loss\r\n", ["0,3.5\r\n", "1,2.5\r\n", "2,1.5\r\n"]
  with open(run.history_file, "w", newline="") as f:
    f.write(header + "".join(rows) + "3,0.")  # Epoch 3's row cut short by a kill.
  run.trim_history(first_epoch=2)  # Resumed from a backup taken in epoch 2: it is redone.
  assert open(run.history_file, newline="").read() == header + rows[0] + rows[1]
  run.trim_history(first_epoch=0)
  assert open(run.history_file, newline="").read() == header


def test_a_run_killed_before_its_first_backup_logs_each_epoch_once(config):
  out = config.output_dir
  # Killed at the end of its last epoch: both rows logged, no backup, no final weights.
  remove(out, *RESULTS, run_dir.TRAINING, *(f"checkpoints/final.{ext}"
                                           for ext in ("index", "data-00000-of-00001")))
  assert epochs_in(out) == [0, 1] and not os.path.exists(os.path.join(out, run_dir.BACKUP))
  training.train(config, verbose=0)  # Starts again at epoch 0.
  assert epochs_in(out) == [0, 1]


def test_a_run_killed_before_its_results_is_evaluated_not_trained_again(config, monkeypatch):
  out = config.output_dir
  first = {name: open(os.path.join(out, name)).read()
           for name in (run_dir.METRICS_JSON, run_dir.SAMPLING, run_dir.HISTORY)}
  remove(out, *RESULTS)

  def fit(*args, **kwargs):
    raise AssertionError("trained again")

  monkeypatch.setattr(UMA2Model, "fit", fit)
  results = training.train(config, verbose=0)
  # The same final weights, run record, metrics and fill events; the history is untouched.
  assert results["run"]["weights_sha256"] == json.loads(first[run_dir.METRICS_JSON])["run"][
      "weights_sha256"]
  for name, text in first.items():
    again = open(os.path.join(out, name)).read()
    if name == run_dir.METRICS_JSON:  # The test day is evaluated again, and timed again.
      again, text = ({**m, "run": {k: v for k, v in m["run"].items() if k != "evaluate_seconds"}}
                     for m in (json.loads(again), json.loads(text)))
    assert again == text, name


def test_another_config_is_refused_until_restart(config):
  out = config.output_dir
  other = dataclasses.replace(config, epochs=1, learning_rate=0.01, loss=dataclasses.replace(
      config.loss, weight_normalization="self_normalized"))
  with pytest.raises(ValueError, match=r"\(epochs, learning_rate, loss.weight_normalization "
                     r"differ\).*--restart"):
    training.train(other, verbose=0)
  assert training.TrainConfig.load(out) == config  # Refused before writing anything.
  # The CLI says so in one line, exit status 2.
  cli = subprocess.run([sys.executable, "-m", "pipelines.train",
                        f"--config={os.path.join(out, run_dir.CONFIG)}", "--learning_rate=0.01"],
                       capture_output=True, text=True, timeout=300)
  assert cli.returncode == 2 and "(learning_rate differ)" in cli.stderr, cli.stderr[-2000:]
  assert "--restart" in cli.stderr and "Traceback" not in cli.stderr

  results = training.train(other, verbose=0, restart=True)
  assert training.TrainConfig.load(out) == other and results["run"]["epochs_run"] == 1
  assert epochs_in(out) == [0]  # The old run's rows and weights are gone, not mixed in.
  assert sorted(os.listdir(os.path.join(out, run_dir.CHECKPOINTS))) == [
      "checkpoint", "epoch-01.data-00000-of-00001", "epoch-01.index", "final.data-00000-of-00001",
      "final.index"]


def truncate(path):
  with open(path, "r+b") as f:
    f.truncate(os.path.getsize(path) // 2)


def test_damaged_final_weights_of_an_unevaluated_run_are_named_and_restart_recovers(config):
  out = config.output_dir
  remove(out, *RESULTS)  # Killed before its results: a restart would evaluate the final weights.
  truncate(os.path.join(out, "checkpoints", "final.data-00000-of-00001"))
  final = os.path.join(out, "checkpoints", "final")
  with pytest.raises(run_dir.BrokenCheckpointError,
                     match=f"^{final}: broken checkpoint.*final weights.*--restart"):
    training.train(config, verbose=0)
  assert not os.path.exists(os.path.join(out, run_dir.METRICS_JSON))
  training.train(config, verbose=0, restart=True)
  assert epochs_in(out) == [0, 1] and os.path.exists(os.path.join(out, run_dir.METRICS_JSON))


def test_a_damaged_backup_is_named_not_restored(config, monkeypatch):
  import tensorflow as tf

  out = config.output_dir
  # Killed mid-training: no results, no training record, no final weights, a backup.
  remove(out, *RESULTS, run_dir.TRAINING, *(f"checkpoints/final.{ext}"
                                           for ext in ("index", "data-00000-of-00001")))
  manager = tf.train.CheckpointManager(tf.train.Checkpoint(v=tf.Variable(tf.ones([256, 256]))),
                                       os.path.join(out, run_dir.BACKUP, "chief"), max_to_keep=1)
  backup = manager.save()
  truncate(backup + ".data-00000-of-00001")
  monkeypatch.setattr(UMA2Model, "fit", lambda *a, **k: pytest.fail("fit reached"))
  with pytest.raises(run_dir.BrokenCheckpointError,
                     match=f"^{backup}: broken checkpoint.*backup of a killed run.*--restart"):
    training.train(config, verbose=0)


def test_a_kill_while_an_epoch_ends_redoes_that_epoch(tiny_data_dir, tmp_path, monkeypatch):
  # A backup every step: Keras' own callback backs up the last step of each epoch and counts the
  # epoch as done, so a kill during the epoch-end callbacks (here: while history.csv gets epoch
  # 1's row) resumed at epoch 2, that epoch's row and validation never made.
  from uma2_tf import fit_callbacks

  config = training.TrainConfig(dataset="uma2_simulated/tiny", data_dir=tiny_data_dir,
                                output_dir=str(tmp_path / "run"), batch_size=512, epochs=3,
                                backup_every_steps=1, early_stopping_patience=0,
                                evaluate_each_epoch=False)

  class Killed(Exception):
    pass

  real_end = fit_callbacks.HistoryLogger.on_epoch_end

  def killed_at_epoch_1(self, epoch, logs=None):
    if epoch == 1:
      raise Killed
    real_end(self, epoch, logs)

  monkeypatch.setattr(fit_callbacks.HistoryLogger, "on_epoch_end", killed_at_epoch_1)
  with pytest.raises(Killed):
    training.train(config, verbose=0)
  assert epochs_in(config.output_dir) == [0]
  monkeypatch.setattr(fit_callbacks.HistoryLogger, "on_epoch_end", real_end)
  training.train(config, verbose=0)
  assert epochs_in(config.output_dir) == [0, 1, 2]

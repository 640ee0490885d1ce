"""A training run's output directory: the one place that names its files and writes them.

    run = RunDir("runs/uma2_default")
    run.write_config(config.to_json())
    run.write_results(results, markdown, per_user, fill_events)    # atomically, file by file
    run.read_json(run_dir.METRICS_JSON)
    run.final_checkpoint                                            # for export

Training, export and the experiment runner read and write a run through it. What each file holds
is listed in `uma2_tf.training`.
"""
from __future__ import annotations

import json
import os

from uma2_tf import atomic_files

CONFIG = "config.json"
METRICS_JSON = "metrics.json"
METRICS_MD = "metrics.md"
HISTORY = "history.csv"
PER_USER = "per_user.npz"
SAMPLING = "sampling.json"
BACKUP = "backup"
CHECKPOINTS = "checkpoints"
TENSORBOARD = "tensorboard"
FINAL = "final"


class RunDir:
  """The files of the run in `path` (local or any file system tf.io.gfile knows)."""

  def __init__(self, path: str):
    self.path = path

  def __repr__(self) -> str:
    return f"RunDir({self.path!r})"

  def file(self, name: str) -> str:
    return os.path.join(self.path, name)

  @property
  def backup_dir(self) -> str:
    return self.file(BACKUP)

  @property
  def tensorboard_dir(self) -> str:
    return self.file(TENSORBOARD)

  @property
  def history_file(self) -> str:
    return self.file(HISTORY)

  @property
  def epoch_checkpoints(self) -> str:
    """The `ModelCheckpoint` path pattern of the per-epoch weights."""
    return os.path.join(self.path, CHECKPOINTS, "epoch-{epoch:02d}")

  @property
  def final_checkpoint(self) -> str:
    return os.path.join(self.path, CHECKPOINTS, FINAL)

  def exists(self, name: str) -> bool:
    import tensorflow as tf

    return tf.io.gfile.exists(self.file(name))

  def is_finished(self) -> bool:
    """A run is finished once its final metrics are written (the last file training writes)."""
    return self.exists(METRICS_JSON)

  def read_text(self, name: str) -> str:
    import tensorflow as tf

    path = self.file(name)
    if not tf.io.gfile.exists(path):
      raise FileNotFoundError(f"{path} does not exist: is {self.path} a training output dir "
                              f"(make train)?")
    with tf.io.gfile.GFile(path) as f:
      return f.read()

  def read_json(self, name: str):
    return json.loads(self.read_text(name))

  def read_config_text(self) -> str:
    return self.read_text(CONFIG)

  def write_config(self, config_json: str) -> None:
    import tensorflow as tf

    tf.io.gfile.makedirs(self.path)
    atomic_files.atomic_write_text(self.file(CONFIG), config_json)

  def write_results(self, results: dict, markdown: str, per_user: dict, fill_events: dict) -> None:
    """The final evaluation's files; metrics.json last, as it marks the run finished."""
    atomic_files.atomic_savez(self.file(PER_USER), **per_user)
    atomic_files.atomic_write_text(self.file(METRICS_MD), markdown)
    atomic_files.atomic_write_text(self.file(SAMPLING), json.dumps(fill_events, indent=2))
    atomic_files.atomic_write_text(self.file(METRICS_JSON), json.dumps(results, indent=2))

  def remove_empty_backup(self) -> None:
    """BackupAndRestore empties backup/ when training ends but, under multi_worker, leaves the
    dirs (its own and the other workers' temporary ones)."""
    import tensorflow as tf

    backup = self.backup_dir
    if tf.io.gfile.isdir(backup) and not any(files for _, _, files in tf.io.gfile.walk(backup)):
      tf.io.gfile.rmtree(backup)

"""A training run's output directory: the one place that names its files and writes them.

    run = RunDir("runs/uma2_default")
    run.write_config(config.to_json())
    run.write_results(results, markdown, per_user, fill_events)    # atomically, file by file
    run.read_json(run_dir.METRICS_JSON)
    run.final_checkpoint                                            # for export
    run_dir.check_checkpoint(run.final_checkpoint)   # BrokenCheckpointError naming the bad file
    run.trim_history(first_epoch=2)       # a restart at epoch 2: rows of epochs >= 2 are redone
    run.remove_training_state()           # --restart: start over in the same dir

Training, export and the experiment runner read and write a run through it. What each file holds
is listed in `uma2_tf.training`.
"""
from __future__ import annotations

import csv
import io
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
TRAINING = "training.json"
# What a run trained: a config.json beside any of them is the config they were trained with.
TRAINING_STATE = (BACKUP, CHECKPOINTS, HISTORY, TRAINING)
# Everything a run writes but its config: what starting over removes.
_RUN_OUTPUTS = TRAINING_STATE + (TENSORBOARD, METRICS_JSON, METRICS_MD, PER_USER, SAMPLING)


class BrokenCheckpointError(ValueError):
  """A checkpoint a job has to read is missing a file, truncated or corrupt (a ValueError: the
  pipelines print it as their one error line)."""


def check_checkpoint(prefix: str) -> None:
  """Reads every tensor of the TensorFlow checkpoint at `prefix` (`<prefix>.index` and its data
  shards), which checks each one's checksum; BrokenCheckpointError naming the checkpoint and what
  is wrong with it if any read fails.

  Restoring a broken checkpoint fails deep inside Keras with an IndexError or an sstable error that
  names neither the run nor the file; a fresh save is never broken (TensorFlow writes the index
  last), so this finds a disk's or a copy's damage.
  """
  import tensorflow as tf

  if not tf.io.gfile.exists(prefix + ".index"):
    raise BrokenCheckpointError(f"{prefix}.index does not exist")
  try:
    reader = tf.train.load_checkpoint(prefix)
    for name in reader.get_variable_to_shape_map():
      reader.get_tensor(name)
  except tf.errors.OpError as e:
    raise BrokenCheckpointError(f"{prefix}: broken checkpoint ({e.message.strip()})") from None
  except (IndexError, ValueError) as e:  # A data shard shorter than its index says.
    raise BrokenCheckpointError(f"{prefix}: broken checkpoint, a data file is truncated "
                                f"({e})") from None


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

  def backup_checkpoint(self) -> str | None:
    """The checkpoint BackupAndRestore would resume from (the chief's), or None."""
    import tensorflow as tf

    return tf.train.latest_checkpoint(os.path.join(self.backup_dir, "chief"))

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

  def has_training_state(self) -> bool:
    """Whether a run trained here (even a killed one): a restart would resume or reuse it."""
    return any(self.exists(name) for name in TRAINING_STATE)

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

  def write_training_record(self, record: dict) -> None:
    """`training.json`: written once `checkpoints/final` is saved, it says training is over."""
    atomic_files.atomic_write_text(self.file(TRAINING), json.dumps(record, indent=2))

  def trim_history(self, first_epoch: int) -> None:
    """Drops the rows of history.csv of epochs >= `first_epoch` (the epochs training is about to
    run again), so that each epoch has one row; keeps the header. A row cut short by a kill is
    dropped too. Rewritten atomically: a kill while trimming leaves the old file or the new."""
    import tensorflow as tf

    if not tf.io.gfile.exists(self.history_file):
      return
    lines = self.read_text(HISTORY).splitlines(keepends=True)
    if not lines:
      return
    header = next(csv.reader(io.StringIO(lines[0])))
    kept = [lines[0]]
    for line in lines[1:]:
      row = next(csv.reader(io.StringIO(line)), [])
      if (len(row) == len(header) and line.endswith("\n") and row[0].isdigit()
          and int(row[0]) < first_epoch):
        kept.append(line)
    if kept != lines:
      atomic_files.atomic_write_text(self.history_file, "".join(kept))

  def remove_training_state(self) -> None:
    """Everything an earlier run wrote here but its config.json: backup, checkpoints, history,
    training record, TensorBoard logs and results."""
    import tensorflow as tf

    for name in _RUN_OUTPUTS:
      path = self.file(name)
      if tf.io.gfile.isdir(path):
        tf.io.gfile.rmtree(path)
      elif tf.io.gfile.exists(path):
        tf.io.gfile.remove(path)

  def remove_empty_backup(self) -> None:
    """BackupAndRestore empties backup/ when training ends but, under multi_worker, leaves the
    dirs (its own and the other workers' temporary ones)."""
    import tensorflow as tf

    backup = self.backup_dir
    if tf.io.gfile.isdir(backup) and not any(files for _, _, files in tf.io.gfile.walk(backup)):
      tf.io.gfile.rmtree(backup)

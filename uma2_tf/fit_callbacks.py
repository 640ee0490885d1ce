"""The Keras callbacks of a training run (`training.train`): per-epoch validation, backup and
resume, checkpoints, TensorBoard, history.csv, early stopping.

    callbacks = training_callbacks(config, RunDir(config.output_dir), task, validation_evaluator,
                                   asynchronous=False)
    model.fit(..., callbacks=callbacks)
"""
from __future__ import annotations

import uma2_tf  # noqa: F401

import time

from absl import logging
import numpy as np
import tf_keras as keras

from uma2_tf import distribute, evaluation
from uma2_tf.run_dir import RunDir


class EvaluationCallback(keras.callbacks.Callback):
  """Evaluates on the validation records after each epoch; adds `val_<metric>` (and a
  multi-interest tower's `val_routing_entropy` / `val_routing_max_weight`) to the epoch logs."""

  def __init__(self, evaluator: evaluation.Evaluator):
    super().__init__()
    self.evaluator = evaluator
    self.per_epoch: list[dict] = []

  def on_epoch_end(self, epoch, logs=None):
    start = time.perf_counter()
    results = self.evaluator.evaluate(self.model)
    self.per_epoch.append(results)
    for key, value in results["model"].items():
      logs[f"val_{key}"] = value
    for key, value in results.get("propensity_auc", {}).items():
      logs[f"val_auc_{key}"] = value
    # A multi-interest tower's routing collapse per epoch (averaged over its interests): the
    # curve RR is meant to bend, in history.csv beside the metrics.
    for key in ("entropy", "max_weight"):
      if results.get("routing", {}).get(key):
        logs[f"val_routing_{key}"] = float(np.mean(results["routing"][key]))
    # The metrics at one K keep the line short: 100 (the paper's), else the largest evaluated.
    shown = "@100" if 100 in self.evaluator.ks else f"@{self.evaluator.k_max}"
    logging.info("epoch %d: %s (evaluated in %.1fs)", epoch + 1,
                 ", ".join(f"{k}={v:.4f}" for k, v in sorted(results["model"].items())
                           if k.endswith(shown)), time.perf_counter() - start)


class HistoryLogger(keras.callbacks.CSVLogger):
  """`CSVLogger` appending to history.csv with each epoch once: when training (re)starts at epoch
  k (0, or where BackupAndRestore resumed), the rows of epochs >= k a killed run left are dropped
  before the first new one."""

  def __init__(self, run: RunDir):
    super().__init__(run.history_file, append=True)
    self.run = run
    self.csv_file = None

  def on_train_begin(self, logs=None):
    pass  # Opened at the first epoch: only then is the epoch training starts at known.

  def on_epoch_begin(self, epoch, logs=None):
    if self.csv_file is None:
      self.run.trim_history(first_epoch=epoch)
      super().on_train_begin()

  def on_train_end(self, logs=None):
    if self.csv_file is not None:  # None: resumed past the last epoch, nothing ran.
      super().on_train_end(logs)
      self.csv_file = None


class ResumeLogger(keras.callbacks.Callback):
  """Logs where training starts when BackupAndRestore resumed a killed run (not at epoch 1)."""

  def __init__(self, task: distribute.Task):
    super().__init__()
    self.task = task
    self.first_epoch = None

  def on_epoch_begin(self, epoch, logs=None):
    if self.first_epoch is None:
      self.first_epoch = epoch
      if epoch > 0:
        logging.info("%s %d: resumed from the backup at epoch %d", self.task.type, self.task.index,
                     epoch + 1)


class EpochExactBackup(keras.callbacks.BackupAndRestore):
  """`BackupAndRestore` whose backups never skip the end of an epoch.

  Keras counts a step-based backup taken at the last step of an epoch as the whole epoch done: a
  run killed after it, while the epoch-end callbacks run, resumes at the next epoch, and that
  epoch's validation, history.csv row, checkpoint and early-stopping check never happen. Here the
  last step of an epoch is not backed up by step; every epoch ends with a backup instead, taken
  after the other callbacks' epoch-end work (this callback goes last in the list).
  """

  def on_train_batch_end(self, batch, logs=None):
    if self.save_freq != "epoch" and batch == self.params.get("steps", 0) - 1:
      self._batches_count = 0  # The epoch-end backup below stands for this step's.
      return
    super().on_train_batch_end(batch, logs)

  def on_epoch_end(self, epoch, logs=None):
    if self.save_freq == "epoch":
      super().on_epoch_end(epoch, logs)
    else:
      self._backup(epoch=epoch)


def training_callbacks(config, run: RunDir, task: distribute.Task,
                       validation_evaluator: evaluation.Evaluator | None,
                       asynchronous: bool) -> list:
  """The callbacks of `model.fit` for a `training.TrainConfig` run in `run`, in their order."""
  callbacks = [
      # First: the callbacks below read the `val_*` logs it adds. Every worker evaluates (the same
      # weights give the same metrics), so EarlyStopping stops them all at the same epoch.
      *([EvaluationCallback(validation_evaluator)] if config.evaluate_each_epoch else []),
      # Under parameter_server batch-level logs are remote futures TerminateOnNaN cannot read.
      *([] if asynchronous else [keras.callbacks.TerminateOnNaN()]),
      # Under multi_worker these write the chief's files and a temporary copy elsewhere.
      ResumeLogger(task),
      keras.callbacks.ModelCheckpoint(run.epoch_checkpoints, save_weights_only=True),
      keras.callbacks.TensorBoard(run.tensorboard_dir, update_freq=100),
      *([HistoryLogger(run)] if task.is_chief else []),
  ]
  if config.early_stopping_patience:
    callbacks.append(keras.callbacks.EarlyStopping(
        monitor=f"val_{config.monitor}", mode="max", patience=config.early_stopping_patience,
        restore_best_weights=True))
  # Last: an epoch counts as done in the backup only once every callback above has ended it.
  callbacks.append(EpochExactBackup(
      run.backup_dir, save_freq="epoch" if asynchronous else config.backup_every_steps))
  return callbacks

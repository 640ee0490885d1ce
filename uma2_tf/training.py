"""The trainer: strategy, model, input, callbacks, evaluation, results on disk.

    config = TrainConfig(dataset="uma2_simulated/default", output_dir="runs/uma2")
    results = train(config)        # also writes config.json, metrics.json, metrics.md, ...

What lands in `output_dir`:

| path              | what                                                              |
|-------------------|-------------------------------------------------------------------|
| config.json       | the resolved `TrainConfig`                                        |
| backup/           | BackupAndRestore state: a killed run restarted with the same      |
|                   | command resumes where it stopped (deleted when training ends)     |
| checkpoints/      | weights after each epoch (`epoch-NN`) and the final ones (`final`) |
| tensorboard/      | TensorBoard logs                                                  |
| history.csv       | per-epoch training metrics and evaluation metrics                 |
| metrics.json      | final evaluation: model, popularity, oracle, propensity AUC       |
| metrics.md        | the same as a markdown table                                      |
| per_user.npz      | the final model's metrics per test user (user_id, recall@K, ...): |
|                   | what paired significance tests between runs compare               |
| sampling.json     | how often A/B pools were too small or empty (fill events), summed |
|                   | over every example trained on (all epochs)                        |
"""
from __future__ import annotations

import uma2_tf  # noqa: F401

import dataclasses
import json
import math
import os
import time

from absl import logging
import tensorflow as tf
import tf_keras as keras

from uma2_tf import evaluation, metrics as metrics_lib
from uma2_tf.data import datasets, sampling
from uma2_tf.data import schema as schema_lib
from uma2_tf.models import towers
from uma2_tf.models.tasks import LossConfig, UMA2Task
from uma2_tf.models.uma2 import UMA2Model

STRATEGIES = ("auto", "default", "one_device", "mirrored")
PER_USER_FILE = "per_user.npz"


@dataclasses.dataclass(frozen=True)
class TrainConfig:
  """Everything a training run depends on. Defaults: UMA²-YouTubeDNN, SS-ABC(fixed), the paper's
  optimiser (Adam, lr 0.001, batch 512).

  Attributes:
    dataset: TFDS name with config.
    data_dir: TFDS data dir.
    output_dir: where the run writes (see the module docstring).
    strategy: `auto` (MirroredStrategy over the visible GPUs if any, else the default strategy),
      `default`, `one_device` (the first GPU, else the CPU) or `mirrored` (over the GPUs, else over
      the logical CPUs).
    tower: a name of `towers.TOWERS`.
    share_embeddings: NSDN heads read the tower's embedding tables (else their own).
    sampling: how negatives are drawn.
    loss: λ's, propensity floor, weight normalisation, NSDN on/off.
    batch_size: global batch, in positives (each with its negatives); split over replicas.
    learning_rate: Adam's.
    epochs: maximum passes over the training positives.
    early_stopping_patience: epochs without a better `monitor` before stopping (0: never stop).
    evaluate_each_epoch: evaluate on the test day after every epoch (needed by early stopping);
      False evaluates once, at the end (short runs, e.g. `experiment --quick`).
    monitor: evaluation metric EarlyStopping watches and the best weights are chosen by.
    eval_ks: K's of the retrieval metrics.
    backup_every_steps: BackupAndRestore saves every this many steps (mid-epoch resume).
    seed: seeds model initialisation; the sampler has its own in `sampling.seed`.
  """

  dataset: str = "uma2_simulated/default"
  data_dir: str = os.path.expanduser("~/tensorflow_datasets")
  output_dir: str = "runs/uma2_default"
  strategy: str = "auto"
  tower: str = "youtube_dnn"
  share_embeddings: bool = True
  sampling: sampling.SamplingConfig = sampling.SamplingConfig()
  loss: LossConfig = LossConfig()
  batch_size: int = 512
  learning_rate: float = 1e-3
  epochs: int = 5
  early_stopping_patience: int = 2
  evaluate_each_epoch: bool = True
  monitor: str = "recall@100"
  eval_ks: tuple[int, ...] = (50, 100, 200)
  backup_every_steps: int = 50
  seed: int = 0

  def __post_init__(self):
    if self.strategy not in STRATEGIES:
      raise ValueError(f"strategy must be one of {STRATEGIES}, got {self.strategy!r}")
    if self.tower not in towers.TOWERS:
      raise ValueError(f"unknown tower {self.tower!r}; known towers: {sorted(towers.TOWERS)}")
    for name in ("batch_size", "epochs", "backup_every_steps"):
      if getattr(self, name) < 1:
        raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
    if not self.learning_rate > 0:
      raise ValueError(f"learning_rate must be > 0, got {self.learning_rate}")
    if not self.eval_ks or min(self.eval_ks) < 1:
      raise ValueError(f"eval_ks must be positive integers, got {self.eval_ks}")
    if self.monitor.split("@")[0] not in ("hitrate", "recall", "precision", "oracle_recall"):
      raise ValueError(f"monitor must be e.g. recall@100, got {self.monitor!r}")
    if self.early_stopping_patience and not self.evaluate_each_epoch:
      raise ValueError("early stopping needs evaluate_each_epoch (it watches the per-epoch "
                       "evaluation); set early_stopping_patience=0 to evaluate only at the end")

  def to_json(self) -> str:
    return json.dumps(dataclasses.asdict(self), indent=2)

  @classmethod
  def from_json(cls, text: str) -> "TrainConfig":
    """The config a run wrote (`config.json`); unknown keys are an error, missing ones default."""
    raw = json.loads(text)
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(raw) - known)
    if unknown:
      raise ValueError(f"config.json: unknown fields {unknown}")
    if "sampling" in raw:
      s = dict(raw["sampling"])
      s["ratio"] = tuple(s.get("ratio", (1, 4, 20)))
      raw["sampling"] = sampling.SamplingConfig(**s)
    if "loss" in raw:
      l = dict(raw["loss"])
      l["lambdas"] = tuple(l.get("lambdas", (1.0,) * 5))
      l["space_weights"] = tuple(l.get("space_weights", (1.0,) * 3))
      raw["loss"] = LossConfig(**l)
    if "eval_ks" in raw:
      raw["eval_ks"] = tuple(raw["eval_ks"])
    return cls(**raw)

  @classmethod
  def load(cls, run_dir: str) -> "TrainConfig":
    path = os.path.join(run_dir, "config.json")
    if not os.path.exists(path):
      raise FileNotFoundError(f"{path} does not exist: is {run_dir} a training output dir (make train)?")
    with open(path) as f:
      return cls.from_json(f.read())


def build_strategy(name: str) -> tf.distribute.Strategy:
  gpus = tf.config.list_logical_devices("GPU")
  if name == "auto":
    return tf.distribute.MirroredStrategy() if gpus else tf.distribute.get_strategy()
  if name == "default":
    return tf.distribute.get_strategy()
  if name == "one_device":
    return tf.distribute.OneDeviceStrategy(gpus[0].name if gpus else "/cpu:0")
  # Mirrored over the GPUs, or over the logical CPUs where there is none (one by default; more when
  # the host is split with tf.config.set_logical_device_configuration).
  if gpus:
    return tf.distribute.MirroredStrategy([d.name for d in gpus])
  # Between CPU devices, reduce through one device: collective all-reduce across logical CPUs can
  # launch gradient packs in a different order on each replica and abort with a shape mismatch.
  cpus = tf.config.list_logical_devices("CPU")
  return tf.distribute.MirroredStrategy([d.name for d in cpus],
                                        cross_device_ops=tf.distribute.ReductionToOneDevice())


def build_model(config: TrainConfig, dataset: datasets.BuiltDataset) -> UMA2Model:
  tower = towers.build_tower(config.tower, dataset.schema, dataset.catalog)
  return UMA2Model(tower, UMA2Task(config.loss, name="uma2_task"),
                   share_embeddings=config.share_embeddings)


def count_positives(dataset: datasets.BuiltDataset, split: str = "train") -> int:
  """Clicks in a split: the number of training examples an epoch has."""
  requests = datasets.read_requests(dataset.split_files[split], dataset.schema, 4096)
  total = requests.reduce(tf.constant(0, tf.int64),
                          lambda acc, r: acc + tf.reduce_sum(r["clicked"].flat_values))
  return int(total)


class EvaluationCallback(keras.callbacks.Callback):
  """Evaluates on the test day after each epoch; adds `val_<metric>` to the epoch logs."""

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
    logging.info("epoch %d: %s (evaluated in %.1fs)", epoch + 1,
                 ", ".join(f"{k}={v:.4f}" for k, v in sorted(results["model"].items())
                           if k.endswith("@100")), time.perf_counter() - start)


def train(config: TrainConfig, verbose: int = 1,
          evaluator: evaluation.Evaluator | None = None) -> dict:
  """Trains, evaluates, writes every result file; returns the final metrics dict.

  `evaluator`: one already built for this dataset, `eval_ks` and history length, to reuse (the
  runs of an experiment share one); it is checked against the config.
  """
  dataset = datasets.load(config.dataset, config.data_dir)
  if evaluator is None:
    evaluator = evaluation.Evaluator(dataset, config.eval_ks, max_history=config.sampling.max_history)
  elif (evaluator.dataset.directory != dataset.directory or evaluator.ks != tuple(sorted(config.eval_ks))
        or evaluator.max_history != config.sampling.max_history):
    raise ValueError(f"the evaluator given was built for {evaluator.dataset.directory}, ks "
                     f"{evaluator.ks}, history {evaluator.max_history}; this run needs "
                     f"{dataset.directory}, {tuple(sorted(config.eval_ks))}, {config.sampling.max_history}")
  os.makedirs(config.output_dir, exist_ok=True)
  schema_lib.atomic_write_text(os.path.join(config.output_dir, "config.json"), config.to_json())
  keras.utils.set_random_seed(config.seed)

  strategy = build_strategy(config.strategy)
  positives = count_positives(dataset)
  if positives == 0:
    raise ValueError(f"{config.dataset}: the train split has no click to train on")
  steps_per_epoch = math.ceil(positives / config.batch_size)
  logging.info("%s: %d train positives, %d steps of %d per epoch, %d replica(s)", config.dataset,
               positives, steps_per_epoch, config.batch_size, strategy.num_replicas_in_sync)

  def input_fn(ctx: tf.distribute.InputContext):
    per_replica = ctx.get_per_replica_batch_size(config.batch_size)
    ds = sampling.make_training_dataset(dataset, config.sampling, per_replica, input_context=ctx)
    return ds.repeat()

  train_ds = strategy.distribute_datasets_from_function(input_fn)
  with strategy.scope():
    model = build_model(config, dataset)
    model.compile(optimizer=keras.optimizers.Adam(config.learning_rate))
    # BackupAndRestore needs built variables (optimizer slots included) before fit restores them.
    model(next(iter(sampling.make_training_dataset(dataset, config.sampling, 2, shuffle=False))))

  out = config.output_dir
  eval_callback = EvaluationCallback(evaluator)
  callbacks = [
      # First: the callbacks below read the `val_*` logs it adds.
      *([eval_callback] if config.evaluate_each_epoch else []),
      keras.callbacks.TerminateOnNaN(),
      keras.callbacks.BackupAndRestore(os.path.join(out, "backup"),
                                       save_freq=config.backup_every_steps),
      keras.callbacks.ModelCheckpoint(os.path.join(out, "checkpoints", "epoch-{epoch:02d}"),
                                      save_weights_only=True),
      keras.callbacks.TensorBoard(os.path.join(out, "tensorboard"), update_freq=100),
      keras.callbacks.CSVLogger(os.path.join(out, "history.csv"), append=True),
  ]
  if config.early_stopping_patience:
    callbacks.append(keras.callbacks.EarlyStopping(
        monitor=f"val_{config.monitor}", mode="max", patience=config.early_stopping_patience,
        restore_best_weights=True))
  start = time.perf_counter()
  history = model.fit(train_ds, epochs=config.epochs, steps_per_epoch=steps_per_epoch,
                      callbacks=callbacks, verbose=verbose)
  train_seconds = time.perf_counter() - start
  model.save_weights(os.path.join(out, "checkpoints", "final"))

  results = evaluator.evaluate(model)
  results["run"] = {"train_seconds": round(train_seconds, 1), "train_positives": positives,
                    "epochs_run": history.epoch[-1] + 1 if history.epoch else 0, "steps_per_epoch": steps_per_epoch}
  schema_lib.atomic_savez(os.path.join(out, PER_USER_FILE), **evaluator.last_per_user)
  schema_lib.atomic_write_text(os.path.join(out, "metrics.json"), json.dumps(results, indent=2))
  table = metrics_lib.metrics_table({k: v for k, v in results.items() if k in ("model", "popularity", "oracle")},
                                    config.eval_ks)
  if "propensity_auc" in results:
    auc = results["propensity_auc"]
    table += f"\n\nPropensity heads, AUC on the test day: ER {auc['er']:.4f}, RE {auc['re']:.4f}\n"
  schema_lib.atomic_write_text(os.path.join(out, "metrics.md"), table)
  schema_lib.atomic_write_text(os.path.join(out, "sampling.json"),
                               json.dumps(model.fill_events(), indent=2))
  print(table)
  return results


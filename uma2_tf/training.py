"""The trainer: strategy, model, input, callbacks, evaluation, results on disk.

    config = TrainConfig(dataset="uma2_simulated/default", output_dir="runs/uma2")
    results = train(config)        # also writes config.json, metrics.json, metrics.md, ...
    train(config, restart=True)    # discards what an earlier run left in output_dir, trains anew
    config_differences(config)     # ["learning_rate", "loss.weight_normalization"]: vs config.json

Restarting a killed run with the same config resumes it: from its backup, or, killed after training
ended, by evaluating `checkpoints/final` without training again. A run dir trained with another
config is a ValueError naming the differing fields (`check_output_dir`) unless `restart`.

What lands in `output_dir`:

| path              | what                                                              |
|-------------------|-------------------------------------------------------------------|
| config.json       | the resolved `TrainConfig`                                        |
| backup/           | BackupAndRestore state: a killed run restarted with the same      |
|                   | command resumes where it stopped (deleted when training ends)     |
| checkpoints/      | weights after each epoch (`epoch-NN`) and the final ones (`final`) |
| tensorboard/      | TensorBoard logs                                                  |
| history.csv       | per-epoch training metrics and the validation records' metrics    |
|                   | (`val_*`: what early stopping and the best weights read); one row |
|                   | per epoch, a resumed run's redone epochs replacing the old rows   |
| training.json     | written once `checkpoints/final` is: train_seconds, epochs_run,   |
|                   | steps_per_epoch, train_positives (a restart evaluates, not trains) |
| metrics.json      | the test day, evaluated once on the final model: model,           |
|                   | popularity, oracle, propensity AUC; and                           |
|                   | under `test_random` the same on that split when the dataset has   |
|                   | one (KuaiRand: randomly exposed items, an unbiased test set)      |
| metrics.md        | the same as markdown tables                                       |
| per_user.npz      | the final model's metrics per test user (user_id, recall@K, ...): |
|                   | what paired significance tests between runs compare               |
| sampling.json     | how often A/B pools were too small or empty (fill events), summed |
|                   | over every example trained on (all epochs)                        |
"""
from __future__ import annotations

import uma2_tf  # noqa: F401

import dataclasses
import math
import os
import time

from absl import logging
import tensorflow as tf
import tf_keras as keras

from uma2_tf import atomic_files, config_flags, distribute, evaluation, fit_callbacks
from uma2_tf import optimizers, run_evaluators
from uma2_tf import run_dir as run_dir_lib
from uma2_tf.data import reading, splits
from uma2_tf.sources import registry
from uma2_tf.data import samplers
from uma2_tf.models import towers
from uma2_tf.tasks import InBatchSoftmaxTask, UMA2Task
from uma2_tf.tasks.remi import RoutingRegularizer, SampledSoftmaxTask
from uma2_tf.models.uma2 import UMA2Model
from uma2_tf.run_dir import RunDir
# The run's config lives in its own module; trainers and callers read it from here.
from uma2_tf.train_config import (DAILY, PRECISIONS, PROTOCOLS, SEQUENTIAL,  # noqa: F401
                                  TrainConfig)


def build_tower(config: TrainConfig, dataset: reading.BuiltDataset) -> towers.Tower:
  """The run's tower (`config.tower` with its interests and readout)."""
  kwargs = {"num_interests": config.num_interests} if config.tower in towers.MULTI_INTEREST else {}
  if config.hard_readout and config.tower == "mind":
    kwargs["attention"] = "argmax"
  return towers.build_tower(config.tower, dataset.schema, dataset.catalog, **kwargs)


def build_model(config: TrainConfig, dataset: reading.BuiltDataset,
                tower: towers.Tower | None = None, nsdn=None) -> UMA2Model:
  """The run's model: `tower` (built from the config if None) with the config's task; `nsdn`:
  heads to reuse instead of new ones (the candidates of a sampler search share one tower and one
  pair of heads)."""
  tower = tower if tower is not None else build_tower(config, dataset)
  if config.sampling.strategy == "sampled":
    task = SampledSoftmaxTask(config.remi, name="sampled_softmax_task")
  elif config.sampling.is_softmax:
    task = InBatchSoftmaxTask(config.softmax, dataset.schema.num_items,
                              dataset.catalog.click_count, name="softmax_task")
  else:
    task = UMA2Task(config.loss, name="uma2_task")
  regularizer = None
  if config.remi.rr_lambda:
    regularizer = RoutingRegularizer(config.remi.rr_lambda, name="routing_regularizer")
  return UMA2Model(tower, task, share_embeddings=config.share_embeddings,
                   routing_regularizer=regularizer, nsdn=nsdn)


def count_positives(dataset: reading.BuiltDataset, split: str = "train", keep=None) -> int:
  """Clicks in a split (of its records `keep` selects): the training examples an epoch has."""
  requests = reading.read_requests(dataset.split_files[split], dataset.schema, 4096, keep=keep)
  total = requests.reduce(tf.constant(0, tf.int64),
                          lambda acc, r: acc + tf.reduce_sum(r["clicked"].flat_values))
  return int(total)


def config_differences(config: TrainConfig) -> list[str]:
  """The fields in which `config` differs from the config.json of its output dir, nested ones
  dotted (`loss.weight_normalization`), sorted; [] when the dir has no config.json."""
  if not RunDir(config.output_dir).exists(run_dir_lib.CONFIG):
    return []
  written = TrainConfig.load(config.output_dir)
  return sorted(config_flags.differing_fields(dataclasses.asdict(config),
                                             dataclasses.asdict(written)))


def check_output_dir(config: TrainConfig, restart: bool = False) -> None:
  """ValueError if `config.output_dir` holds what a run of another config trained (backup,
  checkpoints, history, training record): resuming it would train or report a mix of the two.
  Nothing to check with `restart`, which discards it. First of all, `NotWritableError` (a
  ValueError) if the dir cannot be created or written."""
  atomic_files.check_writable(config.output_dir, "--output_dir")
  if restart or not RunDir(config.output_dir).has_training_state():
    return
  differ = config_differences(config)
  if differ:
    raise ValueError(f"{config.output_dir} holds a run trained with a different config "
                     f"({', '.join(differ)} differ): rerun with its flags to resume it, add "
                     "--restart (train(..., restart=True)) to discard it and train this config "
                     "from scratch, or choose another --output_dir")


def train(config: TrainConfig, verbose: int = 1, evaluator: evaluation.Evaluator | None = None,
          strategy: tf.distribute.Strategy | None = None,
          task: distribute.Task | None = None, restart: bool = False) -> dict:
  """Trains, evaluates, writes every result file; returns the final metrics dict.

  Args:
    config: the run.
    verbose: Keras progress output of the chief (other workers train silently).
    evaluator: one already built for this dataset, `eval_ks` and history length, to reuse (the
      runs of an experiment share one); it is checked against the config.
    strategy: the `config.strategy` strategy, already built: `multi_worker` has to be created at
      program start, before other TensorFlow ops (`pipelines/train.py` does so). Built here when
      None.
    task: this process's place in the cluster (`distribute.current_task()` when None). Only the
      chief writes the run's files; every worker trains, evaluates and takes part in each save.
    restart: remove what an earlier run left in `output_dir` (backup, checkpoints, history,
      training record, TensorBoard logs, results) and train from scratch. Without it a dir a run
      of another config trained in is a ValueError (`check_output_dir`), and a run of this config
      is resumed.
  """
  check_output_dir(config, restart)
  policy = keras.mixed_precision.global_policy()
  keras.mixed_precision.set_global_policy(config.precision)
  try:
    if strategy is None:
      strategy = distribute.build_strategy(config.strategy)
    dataset = registry.load(config.dataset, config.data_dir)
    with reading.naming_corrupt_shards(dataset):
      return _train(config, dataset, verbose, evaluator, strategy,
                    task or distribute.current_task(), restart)
  finally:
    keras.mixed_precision.set_global_policy(policy)


def _train(config: TrainConfig, dataset: reading.BuiltDataset, verbose: int,
           evaluator: evaluation.Evaluator | None, strategy: tf.distribute.Strategy,
           task: distribute.Task, restart: bool) -> dict:
  users = run_evaluators.held_out_users(dataset, config)
  evaluator = run_evaluators.test_evaluator(evaluator, dataset, config, users)
  random_evaluator = run_evaluators.test_random_evaluator(dataset, config)
  run = RunDir(config.output_dir)
  if task.is_chief:
    if restart:
      # Before the model's variables exist: under multi_worker the other workers wait for the
      # chief's broadcast of their initial values, so none reads the old backup after this.
      run.remove_training_state()
    run.write_config(config.to_json())
  keras.utils.set_random_seed(config.seed)
  asynchronous = isinstance(strategy, tf.distribute.experimental.ParameterServerStrategy)

  record = _ended_training(run, task, asynchronous)
  if record is None:
    model, record = _fit(config, dataset, strategy, task, run, verbose, asynchronous, users)
  else:
    logging.info("%s: training ended before (%s), its results were never written: evaluating %s",
                 config.output_dir, run_dir_lib.TRAINING, run.final_checkpoint)
    _check_resumable(run.final_checkpoint, "the final weights of a run whose results were "
                     "never written")
    model = _compiled_model(config, dataset, strategy)
    # The optimizer's slots are not built (no step ran): only the model's weights are restored.
    model.load_weights(run.final_checkpoint).expect_partial()

  # The test day, once, on the final model (selected, if at all, on the validation records).
  start = time.perf_counter()
  results = evaluator.evaluate(model)
  if random_evaluator is not None:
    results[evaluation.TEST_RANDOM] = random_evaluator.evaluate(model)
  results["run"] = {**record, "evaluate_seconds": round(time.perf_counter() - start, 1),
                    "strategy": config.strategy,
                    "replicas": strategy.num_replicas_in_sync, "workers": task.num_workers,
                    "precision": config.precision, "validation": config.validation}
  results["run"]["weights_sha256"] = distribute.weights_fingerprint(model)
  logging.info("%s %d: final weights sha256 %s", task.type, task.index,
               results["run"]["weights_sha256"])
  sharded = distribute.sharded_variables(model)
  if sharded:
    results["run"]["sharded_variables"] = sharded
  fill_events = model.fill_events()  # a collective read under multi_worker: every worker takes part
  if not task.is_chief:
    return results
  # Past the collective read above every worker has finished its own backup clean-up.
  run.remove_empty_backup()
  table = evaluation.results_markdown(results, config.eval_ks)
  run.write_results(results, table, evaluator.last_per_user, fill_events)
  print(table)
  return results


def _ended_training(run: RunDir, task: distribute.Task, asynchronous: bool) -> dict | None:
  """The training record of a run killed after training ended but before its results were
  written (to evaluate its final weights instead of training again); None otherwise.

  A single process only: the workers of a multi_worker job could see different files (a disk per
  host) and take different ways, then wait for each other forever; a parameter_server chief would
  load the weights into sharded variables, which nothing tests. Both train again, as they did.
  """
  if task.num_workers > 1 or asynchronous or run.is_finished():
    return None
  if not (run.exists(run_dir_lib.TRAINING) and tf.io.gfile.exists(run.final_checkpoint + ".index")):
    return None
  return run.read_json(run_dir_lib.TRAINING)


def _fit(config: TrainConfig, dataset: reading.BuiltDataset, strategy: tf.distribute.Strategy,
         task: distribute.Task, run: RunDir, verbose: int, asynchronous: bool,
         users: splits.UserHoldout | None) -> tuple[UMA2Model, dict]:
  """Trains (from the backup a killed run left, if any), saves `checkpoints/final`, then the
  training record; returns the model and the record. `users`: the sequential protocol's."""
  holdout = run_evaluators.training_holdout(dataset, config, users)
  validation_evaluator = run_evaluators.validation_evaluator(dataset, config, holdout)
  positives = count_positives(dataset, keep=holdout.train_keep())
  if positives == 0:
    raise ValueError(f"{config.dataset}: the train split has no click to train on")
  # (Under the sequential protocol the held-out validation users, whatever --validation says.)
  logging.info("validation (%s): %s", holdout.spec,
               f"{len(validation_evaluator.truth)} users who clicked" if validation_evaluator
               else "none, nothing held out")
  steps_per_epoch = math.ceil(positives / config.batch_size)
  logging.info("%s: %d train positives, %d steps of %d per epoch, %s", config.dataset, positives,
               steps_per_epoch, config.batch_size,
               f"{task.num_workers} asynchronous worker(s)" if asynchronous
               else f"{strategy.num_replicas_in_sync} replica(s)")

  backup = run.backup_checkpoint()
  if backup is not None:
    _check_resumable(backup, "the backup of a killed run, to resume it from")
  train_ds = training_input(config, dataset, strategy, asynchronous, holdout)
  model = _compiled_model(config, dataset, strategy)
  callbacks = fit_callbacks.training_callbacks(config, run, task, validation_evaluator,
                                               asynchronous)
  start = time.perf_counter()
  history = model.fit(train_ds, epochs=config.epochs, steps_per_epoch=steps_per_epoch,
                      callbacks=callbacks, verbose=verbose if task.is_chief else 0)
  train_seconds = time.perf_counter() - start
  _save_weights(model, run.final_checkpoint, task)
  record = {"train_seconds": round(train_seconds, 1), "train_positives": positives,
            "epochs_run": history.epoch[-1] + 1 if history.epoch else 0,
            "steps_per_epoch": steps_per_epoch}
  if task.is_chief:  # After the final weights: the record says they are complete.
    run.write_training_record(record)
  return model, record


def _check_resumable(checkpoint: str, what: str) -> None:
  """BrokenCheckpointError if the checkpoint a restart reads is damaged, saying what it is and
  that `--restart` trains the run again."""
  try:
    run_dir_lib.check_checkpoint(checkpoint)
  except run_dir_lib.BrokenCheckpointError as e:
    raise run_dir_lib.BrokenCheckpointError(
        f"{e}: it is {what}; --restart (train(..., restart=True)) trains the run again") from None


def training_input(config: TrainConfig, dataset: reading.BuiltDataset,
                   strategy: tf.distribute.Strategy, asynchronous: bool, holdout,
                   skip_steps: int = 0):
  """The distributed training input: one sampling pipeline per worker, repeated; `skip_steps`:
  start after the batches that many synchronous steps consumed (a stream resumed)."""

  def input_fn(ctx: tf.distribute.InputContext):
    # Each worker's pipeline reads its own shards (or every n-th record): the sampler shards by ctx.
    per_replica = ctx.get_per_replica_batch_size(config.batch_size)
    ds = samplers.make_training_dataset(dataset, config.sampling, per_replica, input_context=ctx,
                                        keep=holdout.train_keep())
    ds = ds.repeat()
    if skip_steps:  # A step takes one batch per replica of the pipeline.
      ds = ds.skip(skip_steps * (ctx.num_replicas_in_sync // ctx.num_input_pipelines))
    return ds

  if asynchronous:
    # Keras hands the function to the ClusterCoordinator, which builds one pipeline per worker.
    return keras.utils.experimental.DatasetCreator(input_fn)
  return strategy.distribute_datasets_from_function(input_fn)


def _compiled_model(config: TrainConfig, dataset: reading.BuiltDataset,
                    strategy: tf.distribute.Strategy) -> UMA2Model:
  with strategy.scope():
    model = build_model(config, dataset)
    model.compile(optimizer=optimizers.make(config.optimizer, config.learning_rate))
    # BackupAndRestore needs built variables (optimizer slots included) before fit restores them.
    model(next(iter(samplers.make_training_dataset(dataset, config.sampling, 2, shuffle=False))))
  return model


def _save_weights(model, path: str, task: distribute.Task) -> None:
  """Saves on every worker, as TensorFlow requires (a save may read variables collectively); only
  the chief's copy is kept at `path`."""
  if task.is_chief:
    model.save_weights(path)
    return
  scratch = os.path.join(os.path.dirname(path), f".{task.type}_{task.index}_scratch")
  model.save_weights(os.path.join(scratch, os.path.basename(path)))
  tf.io.gfile.rmtree(scratch)

"""The evaluators of a training run (`training.train`): the test day's, the validation records'
(model selection) and `test_random`'s when the dataset has one. `config` is a
`training.TrainConfig`.

    users = held_out_users(dataset, config)                       # sequential protocol, else None
    evaluator = test_evaluator(None, dataset, config, users)      # or check one given
    holdout = training_holdout(dataset, config, users)            # what training leaves out
    selector = validation_evaluator(dataset, config, holdout)     # None without validation

Under `config.protocol == "sequential"` the evaluators are `SequentialEvaluator`s of the held-out
validation and test users (`splits.user_holdout`).
"""
from __future__ import annotations

import uma2_tf  # noqa: F401

from absl import logging

from uma2_tf import evaluation, sequential_evaluation
from uma2_tf.data import reading, splits


def held_out_users(dataset: reading.BuiltDataset, config) -> splits.UserHoldout | None:
  """The sequential protocol's training, validation and test users (None under the daily one):
  read once per run and passed to `test_evaluator` and `training_holdout`."""
  return splits.user_holdout(dataset) if _sequential(config) else None


def test_evaluator(evaluator: evaluation.Evaluator | None, dataset: reading.BuiltDataset,
                   config, users: splits.UserHoldout | None = None) -> evaluation.Evaluator:
  """The evaluator given (checked against the run) or a new one of the test split (of `users`'
  test users under the sequential protocol; read here if None)."""
  if evaluator is None and _sequential(config):
    return _sequential_evaluator(dataset, config, users or splits.user_holdout(dataset), "test")
  if evaluator is None:
    return evaluation.Evaluator(dataset, config.eval_ks, max_history=config.sampling.max_history)
  if isinstance(evaluator, sequential_evaluation.SequentialEvaluator) != _sequential(config):
    raise ValueError(f"the evaluator given is not one of --protocol={config.protocol}")
  if (evaluator.dataset.directory != dataset.directory
      or evaluator.ks != tuple(sorted(config.eval_ks))
      or evaluator.max_history != config.sampling.max_history):
    raise ValueError(f"the evaluator given was built for {evaluator.dataset.directory}, ks "
                     f"{evaluator.ks}, history {evaluator.max_history}; this run needs "
                     f"{dataset.directory}, {tuple(sorted(config.eval_ks))}, "
                     f"{config.sampling.max_history}")
  return evaluator


def training_holdout(dataset: reading.BuiltDataset, config,
                     users: splits.UserHoldout | None = None
                     ) -> splits.Holdout | splits.UserHoldout:
  """The records training leaves out: the validation records, or the held-out users (`users`,
  read here if None)."""
  if _sequential(config):
    return users or splits.user_holdout(dataset)
  return splits.holdout(dataset, config.validation, seed=config.seed)


def validation_evaluator(dataset: reading.BuiltDataset, config,
                         holdout: splits.Holdout | splits.UserHoldout
                         ) -> evaluation.Evaluator | None:
  """The evaluator of the validation records (None without a validation split)."""
  if not holdout.enabled or config.validation == splits.NONE:
    return None
  if isinstance(holdout, splits.UserHoldout):
    return _sequential_evaluator(dataset, config, holdout, splits.VALIDATION)
  try:
    return evaluation.Evaluator(dataset, config.eval_ks, max_history=config.sampling.max_history,
                                split="train", keep=holdout.keep_validation,
                                name=f"{splits.VALIDATION} ({config.validation})")
  except evaluation.NoClicksError as e:
    raise ValueError(f"--validation={config.validation}: {e}; choose another validation") from None


def test_random_evaluator(dataset: reading.BuiltDataset,
                          config) -> evaluation.Evaluator | None:
  """An evaluator of the dataset's `test_random` split, if it has one with clicks (else None)."""
  if evaluation.TEST_RANDOM not in dataset.split_files:
    return None
  try:
    return evaluation.Evaluator(dataset, config.eval_ks, max_history=config.sampling.max_history,
                                split=evaluation.TEST_RANDOM)
  except evaluation.NoClicksError as e:
    logging.warning("%s: not evaluated on %s: %s", config.dataset, evaluation.TEST_RANDOM, e)
    return None


def _sequential(config) -> bool:
  return getattr(config, "protocol", "daily") == "sequential"


def _sequential_evaluator(dataset, config, holdout: splits.UserHoldout, part: str):
  sources, users = holdout.sources(part)
  try:
    return sequential_evaluation.SequentialEvaluator(
        dataset, config.eval_ks, max_history=config.sampling.max_history, splits=sources,
        users=users, name=f"{part} users")
  except evaluation.NoClicksError as e:
    raise ValueError(f"--protocol=sequential: {e}") from None

"""The TensorFlow side of the sampler search: one tower trained by several candidate samplers.

    trainer = CandidateTrainer(configs, dataset, holdout, strategy, scorer, "runs/x/search", seed=0)
    seconds = trainer.train(2, steps=20)                  # 20 steps on candidate 2's negatives
    snapshot = trainer.snapshot(); trainer.restore(snapshot)
    trainer.score()                                       # the validation subset's monitor

`configs` are the candidates' `TrainConfig`s (`search_space.Candidate.train_config` of one base):
each gets the model `training.build_model` builds for it, all around one tower and one pair of
NSDN heads, compiled with one Adam, so a candidate continues from the weights and the optimiser
state another left. Each candidate draws from one stream of its own, seeded by (seed, candidate),
built once and read on by every probe and commit; a resumed search (`load_phase`) skips what each
stream had given. `autosample.search` drives it.
"""
from __future__ import annotations

import uma2_tf  # noqa: F401

import dataclasses
import hashlib
import os
import time
from typing import Sequence

import numpy as np
import tensorflow as tf

from uma2_tf import evaluation, optimizers, training
from uma2_tf.data import reading, samplers
from uma2_tf.experiment import autosample


class ValidationScorer:
  """`metric` of a tower on the validation records' users, or a fixed random `users` of them."""

  def __init__(self, evaluator: evaluation.Evaluator, metric: str, users: int = 0, seed: int = 0):
    self.evaluator = evaluator.subset(users, seed) if users else evaluator
    self.metric = metric

  @property
  def num_users(self) -> int:
    return len(self.evaluator.truth)

  def __call__(self, tower) -> float:
    return float(self.evaluator.model_metrics(tower)[self.metric])


class CandidateTrainer:
  """The candidates' models around one tower, with what `autosample.search` asks of a trainer."""

  def __init__(self, configs: Sequence[training.TrainConfig], dataset: reading.BuiltDataset,
               holdout, strategy: tf.distribute.Strategy, scorer: ValidationScorer,
               phase_dir: str, seed: int = 0):
    towers = {(c.tower, c.num_interests, c.hard_readout, c.share_embeddings) for c in configs}
    if len(towers) != 1:
      raise ValueError(f"the candidates of a search must share one tower, got {sorted(towers)}")
    self.configs = list(configs)
    self.dataset, self.holdout, self.strategy = dataset, holdout, strategy
    self.scorer, self.phase_dir, self.seed = scorer, phase_dir, seed
    self._streams: dict[int, object] = {}  # candidate -> its input iterator, built when first read
    self._consumed: dict[int, int] = {}  # candidate -> steps its stream had given at a resume
    with strategy.scope():
      tower = training.build_tower(configs[0], dataset)
      self.optimizer = optimizers.make(configs[0].optimizer, configs[0].learning_rate)
      self.models, nsdn = [], None
      for config in configs:
        model = training.build_model(config, dataset, tower=tower, nsdn=nsdn)
        nsdn = nsdn or model.nsdn
        model.compile(optimizer=self.optimizer)
        model(next(iter(samplers.make_training_dataset(dataset, config.sampling, 2,
                                                       shuffle=False))))
        self.models.append(model)
      # One Adam for every candidate: its slots must cover the union of their variables first.
      self.trainable = _distinct(v for m in self.models for v in m.trainable_variables)
      self.optimizer.build(self.trainable)
    # The training state a probe starts from; counters summed across replicas on read (the fill
    # events) are not state: they count every step run, probes included.
    self.state = _distinct([v for m in self.models for v in m.variables
                            if v.synchronization != tf.VariableSynchronization.ON_READ]
                           + list(self.optimizer.variables))
    self.checkpoint = tf.train.Checkpoint(
        optimizer=self.optimizer, **{f"candidate_{i}": m for i, m in enumerate(self.models)})

  @property
  def tower(self):
    return self.models[0].tower

  def train(self, index: int, steps: int) -> float:
    """`steps` steps on candidate `index`'s next batches; the seconds they took."""
    model = self.models[index]
    # Keras's own step function, as `fit` runs it, without a new input pipeline per call.
    step = model.make_train_function()
    start = time.perf_counter()
    stream = self._stream(index)
    logs = None
    for _ in range(steps):
      logs = step(stream)
    if logs is not None:
      float(logs["loss"])  # Waits for the last step before reading the clock.
    return time.perf_counter() - start

  def _stream(self, index: int):
    if index not in self._streams:
      config = self.configs[index]
      config = dataclasses.replace(config, sampling=dataclasses.replace(
          config.sampling, seed=autosample.stream_seed(self.seed, index)))
      self._streams[index] = iter(training.training_input(
          config, self.dataset, self.strategy, False, self.holdout,
          skip_steps=self._consumed.get(index, 0)))
    return self._streams[index]

  def score(self) -> float:
    return self.scorer(self.tower)

  def snapshot(self) -> list[np.ndarray]:
    return [v.numpy() for v in self.state]

  def restore(self, snapshot: list[np.ndarray]) -> None:
    for variable, value in zip(self.state, snapshot):
      variable.assign(value)

  def fingerprint(self) -> str:
    """sha256 of the trainable weights (tower and heads), in order."""
    digest = hashlib.sha256()
    for variable in self.trainable:
      digest.update(variable.numpy().tobytes())
    return digest.hexdigest()

  def phase_checkpoint(self, phase: int) -> str:
    return os.path.join(self.phase_dir, f"phase-{phase:02d}")

  def save_phase(self, phase: int) -> None:
    self.checkpoint.write(self.phase_checkpoint(phase))

  def load_phase(self, phase: int, consumed: dict[int, int]) -> None:
    """The state saved after `phase`; `consumed`: the steps each candidate's stream had given by
    then (its next batch is the one after them)."""
    self.checkpoint.read(self.phase_checkpoint(phase)).assert_existing_objects_matched()
    self._streams, self._consumed = {}, dict(consumed)


def _distinct(variables) -> list:
  """Variables in first-seen order, each once (the candidates' models share theirs)."""
  seen, out = set(), []
  for v in variables:
    if v.ref() not in seen:
      seen.add(v.ref())
      out.append(v)
  return out

"""`uma2_simulated`: the simulator's logs as a TFDS dataset (configs `tiny`, `default`, `paper`).

    # After importing this module:
    builder = tfds.builder("uma2_simulated/default", data_dir=data_dir)
    builder.download_and_prepare()
    # or, with the side files:
    dataset = uma2_tf.sources.registry.load("uma2_simulated/default", data_dir)

Splits: `train` (days 1..N-1) and `test` (day N), one request record per example (DESIGN.md §4).
Beside the shards the builder writes what training and evaluation need:
  schema.json   `LogSchema` (id spaces, user features)
  catalog.npz   `ItemCatalog` (item features, train-day click/exposure counts)
  world.npz     the ground truth (`simulator.World`) for oracle metrics
  stats.json    `simulator.compute_stats`
  simulator_config.json  every knob of the world, and for a world of the user's own (`custom`)
                the config it started from and the knobs it overrode
Every record passes `validation.RecordValidator` with policy `error`: the simulator never writes a
record a real-log reader would reject.

TFDS prepares into a temporary directory and renames it when complete, so a dataset directory with
side files and shards is never half-written.
"""
from __future__ import annotations

import dataclasses
import json
import os
import time

import tensorflow_datasets as tfds
from absl import logging

from uma2_tf.data import schema as schema_lib
from uma2_tf import atomic_files
from uma2_tf.data import reading
from uma2_tf.data import validation
from uma2_tf.sources import simulator



SIMULATOR_CONFIG_FILE = "simulator_config.json"


class Uma2SimulatedConfig(tfds.core.BuilderConfig):
  """A named `simulator.SimulatorConfig`; `base` and `overrides` say how a custom one was made."""

  def __init__(self, *, simulator_config: simulator.SimulatorConfig, base: str | None = None,
               overrides: dict | None = None, **kwargs):
    super().__init__(**kwargs)
    self.simulator_config = simulator_config
    self.base = base
    self.overrides = dict(overrides or {})

  def record(self) -> dict:
    """What `simulator_config.json` holds."""
    return {"name": self.name, "base": self.base or self.name, "overrides": self.overrides,
            "simulator_config": dataclasses.asdict(self.simulator_config)}


_DESCRIPTIONS = {
    "tiny": "For tests: a few hundred users, builds in seconds.",
    "default": "For `make train`: 20K users, 10K items, ~1.6e5 train positives.",
    "paper": "Table 2 scale of the UMA2 paper: 1.63M users, 283K items, ~950K train positives.",
    "learned": "`default` whose recall and ranking are models learned from its own logs.",
}


class Uma2Simulated(tfds.core.GeneratorBasedBuilder):
  """Request logs of a simulated legacy recommender (see `uma2_tf.sources.simulator`)."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "First release."}
  BUILDER_CONFIGS = [
      Uma2SimulatedConfig(name=name, description=_DESCRIPTIONS[name], simulator_config=config)
      for name, config in simulator.CONFIGS.items()
  ]

  @property
  def simulator_config(self) -> simulator.SimulatorConfig:
    return self.builder_config.simulator_config

  def _info(self) -> tfds.core.DatasetInfo:
    return tfds.core.DatasetInfo(
        builder=self,
        description=__doc__.split("\n", 1)[0],
        features=schema_lib.tfds_features(self.simulator_config.schema),
        homepage="https://arxiv.org/abs/2303.03213",
    )

  def _split_generators(self, dl_manager):
    del dl_manager  # Nothing to download: the data is simulated.
    config = self.simulator_config
    start = time.time()

    def progress(day, num_days):
      logging.info("uma2_simulated/%s: simulated day %d/%d (%.0f s)", self.builder_config.name, day,
                   num_days, time.time() - start)

    world, log = simulator.simulate(config, progress=progress)
    # `self.data_dir` is TFDS's temporary directory while preparing; it is renamed when complete.
    directory = str(self.data_dir)
    os.makedirs(directory, exist_ok=True)
    config.schema.save(directory)
    simulator.item_catalog(config, world, log).save(directory)
    world.save(directory)
    stats = simulator.compute_stats(log, config)
    atomic_files.atomic_write_text(os.path.join(directory, reading.STATS_FILE),
                                   json.dumps(stats, indent=2))
    atomic_files.atomic_write_text(os.path.join(directory, SIMULATOR_CONFIG_FILE),
                                   json.dumps(self.builder_config.record(), indent=2))
    last_train_day = config.num_days - 1
    return {
        "train": self._generate_examples(world, log, (1, last_train_day)),
        "test": self._generate_examples(world, log, (config.num_days, config.num_days)),
    }

  def _generate_examples(self, world, log, days):
    validator = validation.RecordValidator(self.simulator_config.schema, policy="error",
                                           source=f"uma2_simulated/{self.builder_config.name}")
    for record in log.records(world, days):
      validator.check(record)
      yield int(record[schema_lib.REQUEST_ID]), record


def stats_table(stats: dict) -> str:
  """stats.json as a markdown table: one row per figure, a column per split."""
  rows = ["| figure | train | test |", "|---|---|---|"]
  names = [k[len("train_"):] for k in stats if k.startswith("train_")]
  for key in ("num_users", "num_items", "num_days"):
    rows.append(f"| {key} | {stats[key]} | |")
  for name in names:
    rows.append(f"| {name} | {stats['train_' + name]} | {stats.get('test_' + name, '')} |")
  return "\n".join(rows)


def custom(name: str, base: str, overrides: dict, data_dir: str) -> Uma2Simulated:
  """The builder of a world of the user's own: config `base` with `overrides` (field -> value),
  built as `uma2_simulated/<name>`. Once built it is read back by name from its directory."""
  if name in simulator.CONFIGS:
    raise ValueError(f"{name!r} is a built-in config; give the world of your own another name")
  if base not in simulator.CONFIGS:
    raise ValueError(f"unknown base config {base!r}; known: {sorted(simulator.CONFIGS)}")
  config = dataclasses.replace(simulator.CONFIGS[base], **overrides)
  overridden = ", ".join(f"{k}={v}" for k, v in sorted(overrides.items()))
  builder_config = Uma2SimulatedConfig(
      name=name, description=f"{base} with {overridden or 'no override'}", simulator_config=config,
      base=base, overrides=overrides)
  return Uma2Simulated(data_dir=data_dir, config=builder_config)


def recorded_config(directory: str) -> dict | None:
  """The `simulator_config.json` of a built dataset dir (None for one built before it existed)."""
  import tensorflow as tf

  path = os.path.join(directory, SIMULATOR_CONFIG_FILE)
  if not tf.io.gfile.exists(path):
    return None
  with tf.io.gfile.GFile(path) as f:
    return json.load(f)

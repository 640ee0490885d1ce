"""`uma2_movielens`: simulated request logs over a world fitted from real MovieLens ratings.

    import tensorflow_datasets as tfds
    builder = registry.builder("uma2_movielens/ml100k", data_dir)
    builder.download_and_prepare(download_config=tfds.download.DownloadConfig(manual_dir="~/ml-100k"))
    dataset = registry.load("uma2_movielens/ml100k", data_dir)
    # or:  python -m pipelines.simulate --movielens_dir=~/ml-100k --data_dir=...

The ratings file is read from TFDS's manual dir (`u.data` for `ml100k` and `tiny`, `ratings.dat`
for `ml1m`); `movielens.fit_world` fits the world and `simulator.simulate` runs the legacy pipeline
on it. Configs: `ml100k`, `ml1m` (their pipeline knobs: `movielens.CONFIGS`) and `tiny` (for tests
and small files such as the fixture `data/movielens/u.data`).

The records, splits and side files are those of `uma2_simulated` (schema.json, catalog.npz,
world.npz, stats.json), so loading, training and evaluation (oracle metrics included) work
unchanged; two more side files trace the data back to the file:
  movielens_ids.npz   `user_raw_id` / `item_raw_id`: the file's id of each dense id
  source.json         the file (path, sha256, sizes) and the fit (method, affinity spreads)
Every record passes `validation.RecordValidator` with policy `error`.

The features declare only field names and dtypes (`schema.tfds_features`); the vocabulary sizes
depend on the file and are written to schema.json at build time, so `_info` needs no file.
"""
from __future__ import annotations

import json
import os
import time

import tensorflow_datasets as tfds
from absl import logging

from uma2_tf.data import validation
from uma2_tf.sources import movielens
from uma2_tf.sources import simulator
from uma2_tf import atomic_files
from uma2_tf.sources import manual_files
from uma2_tf.data import reading
from uma2_tf.data import schema as schema_lib

FILES = {"ml100k": "u.data", "ml1m": "ratings.dat", "tiny": "u.data"}
_DESCRIPTIONS = {
    "ml100k": "MovieLens 100K (943 users, 1682 items) from u.data.",
    "ml1m": "MovieLens 1M (6040 users, 3706 items) from ratings.dat.",
    "tiny": "For tests and small files in u.data format: more requests per user and day.",
}


class Uma2MovielensConfig(tfds.core.BuilderConfig):
  """A ratings file name and the simulator knobs (sizes come from the file)."""

  def __init__(self, *, filename: str, simulator_config: simulator.SimulatorConfig, **kwargs):
    super().__init__(**kwargs)
    self.filename = filename
    self.simulator_config = simulator_config


class Uma2Movielens(tfds.core.GeneratorBasedBuilder):
  """Request logs of the simulated legacy recommender over real MovieLens tastes."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "First release."}
  BUILDER_CONFIGS = [
      Uma2MovielensConfig(name=name, description=_DESCRIPTIONS[name], filename=FILES[name],
                          simulator_config=movielens.CONFIGS[name])
      for name in FILES
  ]
  MANUAL_DOWNLOAD_INSTRUCTIONS = """\
  Download MovieLens 100K (ml-100k.zip) from https://grouplens.org/datasets/movielens/100k/ and
  unzip it; the directory `ml-100k` holds `u.data`. Pass that directory as the manual dir:
  `python -m pipelines.simulate --movielens_dir=<dir>` or
  `download_and_prepare(download_config=tfds.download.DownloadConfig(manual_dir=<dir>))`.
  For `ml1m`: https://grouplens.org/datasets/movielens/1m/, the directory holding `ratings.dat`.
  """

  def _info(self) -> tfds.core.DatasetInfo:
    # Only the user feature names are used here; the file's sizes go to schema.json (see above).
    return tfds.core.DatasetInfo(
        builder=self,
        description=__doc__.split("\n", 1)[0],
        features=schema_lib.tfds_features(self.builder_config.simulator_config.schema),
        homepage="https://grouplens.org/datasets/movielens/",
    )

  def _split_generators(self, dl_manager):
    path = ratings_path(dl_manager, self.builder_config.filename)
    name = f"uma2_movielens/{self.builder_config.name}"
    start = time.time()
    interactions = movielens.read_interactions(path)
    base = self.builder_config.simulator_config
    world, config = movielens.fit_world(interactions, base, seed=base.seed)
    logging.info("%s: fitted a world to %d ratings of %d users and %d items from %s (%.0f s)", name,
                 len(interactions), config.num_users, config.num_items, path, time.time() - start)

    def progress(day, num_days):
      logging.info("%s: simulated day %d/%d (%.0f s)", name, day, num_days, time.time() - start)

    world, log = simulator.simulate(config, progress=progress, world=world)
    # `self.data_dir` is TFDS's temporary directory while preparing; it is renamed when complete.
    directory = str(self.data_dir)
    os.makedirs(directory, exist_ok=True)
    config.schema.save(directory)
    simulator.item_catalog(config, world, log).save(directory)
    world.save(directory)
    atomic_files.atomic_write_text(os.path.join(directory, reading.STATS_FILE),
                                 json.dumps(simulator.compute_stats(log, config), indent=2))
    movielens.save_id_maps(directory, interactions)
    movielens.write_source(directory,
                           movielens.source_description(interactions, world, config, base.seed))
    return {
        "train": self._generate_examples(config, world, log, (1, config.num_days - 1)),
        "test": self._generate_examples(config, world, log, (config.num_days, config.num_days)),
    }

  def _generate_examples(self, config, world, log, days):
    validator = validation.RecordValidator(config.schema, policy="error",
                                           source=f"uma2_movielens/{self.builder_config.name}")
    for record in log.records(world, days):
      validator.check(record)
      yield int(record[schema_lib.REQUEST_ID]), record


def ratings_path(dl_manager, filename: str) -> str:
  """`<manual dir>/<filename>`, or one FileNotFoundError naming that path and where to get it."""
  manual = manual_files.manual_dir(dl_manager)
  path = os.path.join(manual, filename) if manual else filename
  if not os.path.isfile(path):
    raise FileNotFoundError(
        f"{path}: no MovieLens ratings file; download ml-100k from "
        f"https://grouplens.org/datasets/movielens/100k/, unzip it and pass the directory holding "
        f"{filename} (python -m pipelines.simulate --movielens_dir=<dir>)")
  return path

"""Builds a simulated dataset (`make data`) and prints its statistics.

    python -m pipelines.simulate --config=default --data_dir=~/tensorflow_datasets
    python -m pipelines.simulate --config=noisy_ranker --base=default --simulator.ranking_noise=2.0
    python -m pipelines.simulate --config=noise_inf --base=default \
        --simulator.old_model_noise=inf --simulator.ranking_noise=inf   # logs that know nothing
    python -m pipelines.simulate --config=learned   # recall and ranking learned from its own logs
    python -m pipelines.simulate --movielens_dir=~/ml-100k --data_dir=~/tensorflow_datasets

Builds `uma2_simulated/<config>` with TFDS (progress bars per split) unless it is already built,
then prints the statistics table; the same figures are in `stats.json` beside the shards.
A world of your own: `--config=<a name of your choosing> --base=<tiny|default|paper>` with any
`SimulatorConfig` field as `--simulator.<field>`; it is built as `uma2_simulated/<name>` (train on
it with `--dataset=uma2_simulated/<name>`), and `simulator_config.json` beside the shards records
the base and the overrides. Asking for a built name with other knobs is an error, never a silent
reuse.
With `--movielens_dir` it builds `uma2_movielens/<movielens_config>` instead: the simulator's world
fitted from the MovieLens ratings file in that directory (`u.data` of ml-100k; `ratings.dat` for
`--movielens_config=ml1m`). A dataset already built from a different file is an error, not reused.
"""
import uma2_tf  # noqa: F401  (before TensorFlow: selects tf_keras)

import dataclasses
import json
import os
import sys
import time

from absl import app, flags

from uma2_tf import config_flags
from uma2_tf.sources import movielens, simulator

FLAGS = flags.FLAGS
flags.DEFINE_string("config", "default",
                    f"Simulator config to build: {', '.join(simulator.CONFIGS)}, "
                    "or the name of a world of your own (with --base and --simulator.* overrides).")
flags.DEFINE_enum("base", None, list(simulator.CONFIGS),
                  "The built-in config a world of your own starts from (--config names it).")
config_flags.define(simulator.SimulatorConfig, prefix="simulator.")
flags.DEFINE_string("data_dir", os.path.expanduser("~/tensorflow_datasets"), "TFDS data dir.")
flags.DEFINE_string("movielens_dir", None,
                    "Directory holding a MovieLens ratings file (ml-100k's u.data): builds "
                    "uma2_movielens/<movielens_config> from it instead of a simulated world.")
flags.DEFINE_enum("movielens_config", "ml100k", list(movielens.CONFIGS),
                  "uma2_movielens config built with --movielens_dir.")


class UserError(Exception):
  """A mistake of the user's (a flag, a missing or malformed file): one line, exit status 2."""


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments {argv[1:]}; use --config and --data_dir")
  from uma2_tf import atomic_files
  from uma2_tf.data import reading
  from uma2_tf.sources import registry, simulated

  data_dir = os.path.expanduser(FLAGS.data_dir)
  try:
    if FLAGS.movielens_dir is not None:
      name, download_config = _movielens(data_dir)
    else:
      if FLAGS["movielens_config"].present:
        raise UserError("--movielens_config needs --movielens_dir")
      name, download_config = f"uma2_simulated/{FLAGS.config}", None
    builder = (_simulated_builder(data_dir) if download_config is None
               else registry.builder(name, data_dir))
    if builder.is_prepared():
      if download_config is not None:
        _check_same_source(builder, os.path.join(str(download_config.manual_dir), _ratings_file()))
      print(f"{name} is already built in {builder.data_dir}")
    else:
      try:
        atomic_files.check_writable(data_dir, "--data_dir")
      except ValueError as e:
        raise UserError(str(e)) from None
      start = time.time()
      try:
        builder.download_and_prepare(download_config=download_config)
      except (ValueError, FileNotFoundError) as e:  # A malformed or missing ratings file.
        raise UserError(f"cannot build {name}: {e}") from None
      except OSError as e:
        print(f"error: cannot build {name} in {data_dir}: {e}", file=sys.stderr)
        return 1
      print(f"built {name} in {time.time() - start:.0f} s: {builder.data_dir}")
  except UserError as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  dataset = registry.load(name, data_dir)
  print(simulated.stats_table(dataset.stats()))
  print(f"statistics: {os.path.join(dataset.directory, reading.STATS_FILE)}")
  return 0


def _overrides() -> dict:
  """The `--simulator.<field>` flags given, as SimulatorConfig field -> typed value."""
  try:
    return config_flags.given_values(simulator.SimulatorConfig, prefix="simulator.")
  except ValueError as e:
    raise UserError(str(e)) from None


def _simulated_builder(data_dir: str):
  """The builder `--config` (with `--base` and overrides, for a world of the user's own) names."""
  from uma2_tf.sources import registry, simulated

  name, overrides = FLAGS.config, _overrides()
  if name in simulator.CONFIGS:
    if overrides or FLAGS.base:
      raise UserError(f"--config={name} is a built-in world; to change its knobs, name your own "
                      f"world: --config=<name> --base={name} --simulator.<field>=<value>")
    return registry.builder(f"uma2_simulated/{name}", data_dir)
  if not overrides and not FLAGS.base:
    prepared = registry.prepared_directory(f"uma2_simulated/{name}", data_dir)
    if prepared is None:
      raise UserError(f"--config={name}: not a built-in config "
                      f"({', '.join(simulator.CONFIGS)}) and not built in {data_dir}; "
                      f"build a world of your own with --config={name} "
                      f"--base=<{'|'.join(simulator.CONFIGS)}> --simulator.<field>=<value> ...")
    return registry.builder(f"uma2_simulated/{name}", data_dir)
  if not FLAGS.base:
    raise UserError(f"--simulator.* overrides need --base=<{'|'.join(simulator.CONFIGS)}>: the "
                    f"config world {name} starts from")
  try:
    builder = simulated.custom(name, FLAGS.base, overrides, data_dir)
  except ValueError as e:
    raise UserError(f"--config={name}: {e}") from None
  if builder.is_prepared():
    built = simulated.recorded_config(str(builder.data_dir))
    wanted = builder.builder_config.record()
    if built is not None:  # A world built before a field existed was built with its default.
      built["simulator_config"] = {**_field_defaults(), **built["simulator_config"]}
    if built is None or built["simulator_config"] != wanted["simulator_config"]:
      raise UserError(f"uma2_simulated/{name} is already built in {builder.data_dir} from other "
                      f"knobs ({built['base'] if built else '?'} with "
                      f"{built['overrides'] if built else '?'}); "
                      f"choose another --config name or remove that directory")
  return builder


def _field_defaults() -> dict:
  return {f.name: f.default for f in dataclasses.fields(simulator.SimulatorConfig)}


def _ratings_file() -> str:
  from uma2_tf.sources import movielens_builder
  return movielens_builder.FILES[FLAGS.movielens_config]


def _movielens(data_dir):
  """The dataset name and TFDS download config for --movielens_dir, after checking the file."""
  import tensorflow_datasets as tfds

  if FLAGS["config"].present:
    raise UserError("--config selects a simulated world; "
                    "with --movielens_dir use --movielens_config")
  directory = os.path.expanduser(FLAGS.movielens_dir)
  path = os.path.join(directory, _ratings_file())
  if not os.path.isfile(path):
    raise UserError(f"--movielens_dir={FLAGS.movielens_dir}: no {path}; download ml-100k from "
                    f"https://grouplens.org/datasets/movielens/100k/, unzip it and pass the "
                    f"directory holding {_ratings_file()}")
  return (f"uma2_movielens/{FLAGS.movielens_config}",
          tfds.download.DownloadConfig(manual_dir=os.path.abspath(directory)))


def _check_same_source(builder, path):
  """A built uma2_movielens dataset is reused only if it came from the same file (by content)."""
  source = os.path.join(str(builder.data_dir), movielens.SOURCE_FILE)
  with open(source) as f:
    built = json.load(f)
  if built["sha256"] != movielens.file_digest(path):
    raise UserError(f"{builder.data_dir} was built from {built['file']} "
                    f"(sha256 {built['sha256'][:12]}...), "
                    f"not from {path}; remove that directory or use another --data_dir")


if __name__ == "__main__":
  app.run(main)

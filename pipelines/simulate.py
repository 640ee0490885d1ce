"""Builds a simulated dataset (`make data`) and prints its statistics.

    python -m pipelines.simulate --config=default --data_dir=~/tensorflow_datasets
    python -m pipelines.simulate --movielens_dir=~/ml-100k --data_dir=~/tensorflow_datasets

Builds `uma2_simulated/<config>` with TFDS (progress bars per split) unless it is already built,
then prints the statistics table; the same figures are in `stats.json` beside the shards.
With `--movielens_dir` it builds `uma2_movielens/<movielens_config>` instead: the simulator's world
fitted from the MovieLens ratings file in that directory (`u.data` of ml-100k; `ratings.dat` for
`--movielens_config=ml1m`). A dataset already built from a different file is an error, not reused.
"""
import uma2_tf  # noqa: F401  (before TensorFlow: selects tf_keras)

import json
import os
import sys
import time

from absl import app, flags

from uma2_tf.data import movielens, simulator

FLAGS = flags.FLAGS
flags.DEFINE_enum("config", "default", list(simulator.CONFIGS), "Simulator config to build.")
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
  from uma2_tf.data import datasets, simulated

  data_dir = os.path.expanduser(FLAGS.data_dir)
  try:
    if FLAGS.movielens_dir is not None:
      name, download_config = _movielens(data_dir)
    else:
      if FLAGS["movielens_config"].present:
        raise UserError("--movielens_config needs --movielens_dir")
      name, download_config = f"uma2_simulated/{FLAGS.config}", None
    builder = datasets.builder(name, data_dir)
    if builder.is_prepared():
      if download_config is not None:
        _check_same_source(builder, os.path.join(str(download_config.manual_dir), _ratings_file()))
      print(f"{name} is already built in {builder.data_dir}")
    else:
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
  dataset = datasets.load(name, data_dir)
  print(simulated.stats_table(dataset.stats()))
  print(f"statistics: {os.path.join(dataset.directory, datasets.STATS_FILE)}")
  return 0


def _ratings_file() -> str:
  from uma2_tf.data import movielens_builder
  return movielens_builder.FILES[FLAGS.movielens_config]


def _movielens(data_dir):
  """The dataset name and TFDS download config for --movielens_dir, after checking the file."""
  import tensorflow_datasets as tfds

  if FLAGS["config"].present:
    raise UserError("--config selects a simulated world; with --movielens_dir use --movielens_config")
  directory = os.path.expanduser(FLAGS.movielens_dir)
  path = os.path.join(directory, _ratings_file())
  if not os.path.isfile(path):
    raise UserError(f"--movielens_dir={FLAGS.movielens_dir}: no {path}; download ml-100k from "
                    f"https://grouplens.org/datasets/movielens/100k/, unzip it and pass the directory "
                    f"holding {_ratings_file()}")
  return (f"uma2_movielens/{FLAGS.movielens_config}",
          tfds.download.DownloadConfig(manual_dir=os.path.abspath(directory)))


def _check_same_source(builder, path):
  """A built uma2_movielens dataset is reused only if it came from the same file (by content)."""
  source = os.path.join(str(builder.data_dir), movielens.SOURCE_FILE)
  with open(source) as f:
    built = json.load(f)
  if built["sha256"] != movielens.file_digest(path):
    raise UserError(f"{builder.data_dir} was built from {built['file']} (sha256 {built['sha256'][:12]}...), "
                    f"not from {path}; remove that directory or use another --data_dir")


if __name__ == "__main__":
  app.run(main)

"""Builds a simulated dataset (`make data`) and prints its statistics.

    python -m pipelines.simulate --config=default --data_dir=~/tensorflow_datasets

Builds `uma2_simulated/<config>` with TFDS (progress bars per split) unless it is already built,
then prints the statistics table; the same figures are in `stats.json` beside the shards.
"""
import uma2_tf  # noqa: F401  (before TensorFlow: selects tf_keras)

import os
import sys
import time

from absl import app, flags

from uma2_tf.data import simulator

FLAGS = flags.FLAGS
flags.DEFINE_enum("config", "default", list(simulator.CONFIGS), "Simulator config to build.")
flags.DEFINE_string("data_dir", os.path.expanduser("~/tensorflow_datasets"), "TFDS data dir.")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments {argv[1:]}; use --config and --data_dir")
  from uma2_tf.data import datasets, simulated

  name = f"uma2_simulated/{FLAGS.config}"
  data_dir = os.path.expanduser(FLAGS.data_dir)
  builder = datasets.builder(name, data_dir)
  if builder.is_prepared():
    print(f"{name} is already built in {builder.data_dir}")
  else:
    start = time.time()
    try:
      builder.download_and_prepare()
    except OSError as e:
      print(f"error: cannot build {name} in {data_dir}: {e}", file=sys.stderr)
      return 1
    print(f"built {name} in {time.time() - start:.0f} s: {builder.data_dir}")
  dataset = datasets.load(name, data_dir)
  print(simulated.stats_table(dataset.stats()))
  print(f"statistics: {os.path.join(dataset.directory, datasets.STATS_FILE)}")
  return 0


if __name__ == "__main__":
  app.run(main)

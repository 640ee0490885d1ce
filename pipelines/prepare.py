"""Builds a dataset of real logs from the files a user downloaded (TFDS manual dir).

    python -m pipelines.prepare --dataset=request_logs/mylogs --manual_dir=/data/our_logs
    python -m pipelines.prepare --dataset=recflow/default --manual_dir=/data/RecFlow
    python -m pipelines.prepare --dataset=kuairand/pure --manual_dir=/data/KuaiRand-Pure/data

Then train on it with `python -m pipelines.train --dataset=<the same name>`. For `request_logs`
the config name is yours: its fields (user features, stages, whether there is a recall log) are
read from the files. The build is TFDS's: into a temporary directory renamed when complete, so a
failed build leaves nothing a trainer would read. A malformed file stops it with one line naming the
file, the request or row, and the column.
"""
import uma2_tf  # noqa: F401  (before TensorFlow: selects tf_keras)

import json
import os
import sys

from absl import app, flags

FLAGS = flags.FLAGS
flags.DEFINE_string("dataset", None, "TFDS name with config: request_logs/<any name>, recflow/<config>, "
                    "kuairand/<config>.")
flags.DEFINE_string("manual_dir", None, "Directory holding the dataset's files.")
flags.DEFINE_string("data_dir", os.path.expanduser("~/tensorflow_datasets"), "TFDS data dir.")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments {argv[1:]}")
  import tensorflow_datasets as tfds

  from uma2_tf.data import datasets, logs, validation

  name, manual_dir = FLAGS.dataset, FLAGS.manual_dir
  try:
    if not name or "/" not in name:
      raise ValueError(f"--dataset must be <builder>/<config>, got {name!r}")
    if name.split("/")[0] not in datasets.REAL_LOG_BUILDERS:
      raise ValueError(f"--dataset: {name.split('/')[0]!r} is not a real-log builder "
                       f"({', '.join(datasets.REAL_LOG_BUILDERS)}); simulated data: make data")
    if not manual_dir or not os.path.isdir(os.path.expanduser(manual_dir)):
      raise ValueError(f"--manual_dir must be the directory holding the files, got {manual_dir!r}")
    manual_dir = os.path.expanduser(manual_dir)
    if name.split("/")[0] == "request_logs":
      from uma2_tf.data import request_logs

      builder = request_logs.RequestLogs(data_dir=FLAGS.data_dir,
                                         config=request_logs.config_for(name.split("/")[1], manual_dir))
    else:
      builder = datasets.builder(name, FLAGS.data_dir)
    if builder.is_prepared():
      print(f"{name} is already built in {builder.data_dir}")
    else:
      builder.download_and_prepare(download_config=tfds.download.DownloadConfig(manual_dir=manual_dir))
  except (ValueError, FileNotFoundError, logs.LogFormatError, validation.InvalidRecordError) as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  with open(os.path.join(str(builder.data_dir), datasets.STATS_FILE)) as f:
    print(json.dumps(json.load(f), indent=2))
  return 0


if __name__ == "__main__":
  app.run(main)

"""Builds a dataset of real logs from the files a user downloaded (TFDS manual dir).

    python -m pipelines.prepare --dataset=request_logs/mylogs --manual_dir=/data/our_logs
    python -m pipelines.prepare --dataset=recflow/default --manual_dir=/data/RecFlow
    python -m pipelines.prepare --dataset=kuairand/pure --manual_dir=/data/KuaiRand-Pure/data

RecFlow's 37 days can be prepared by an Apache Beam pipeline instead (`pip install -e '.[beam]'`):

    python -m pipelines.prepare --dataset=recflow/default --manual_dir=/data/RecFlow \
        --beam_pipeline_options=runner=DirectRunner,direct_num_workers=8,direct_running_mode=multi_processing

(Dataflow, Flink and Spark: README, "Preparing RecFlow with Apache Beam".)

Then train on it with `python -m pipelines.train --dataset=<the same name>`. For `request_logs` the
config name is yours: its fields (user features, stages, whether there is a recall log) are
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
flags.DEFINE_string("dataset", None,
                    "TFDS name with config: request_logs/<any name>, recflow/<config>, "
                    "kuairand/<config>.")
flags.DEFINE_string("manual_dir", None, "Directory holding the dataset's files.")
flags.DEFINE_string("data_dir", os.path.expanduser("~/tensorflow_datasets"), "TFDS data dir.")
flags.DEFINE_string("beam_pipeline_options", None,
                    "Prepare with Apache Beam (recflow only; needs the [beam] extra): the "
                    "pipeline's options as comma-separated key=value pairs, as `tfds build` takes "
                    "them, e.g. runner=DirectRunner or "
                    "runner=DataflowRunner,project=P,region=R,temp_location=gs://B/tmp.")

BEAM_BUILDERS = ("recflow",)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments {argv[1:]}")
  import tensorflow as tf
  import tensorflow_datasets as tfds

  from uma2_tf.data import validation
  from uma2_tf.sources import logs
  from uma2_tf.data import reading
  from uma2_tf.sources import registry

  name, manual_dir = FLAGS.dataset, FLAGS.manual_dir
  try:
    if not name or "/" not in name:
      raise ValueError(f"--dataset must be <builder>/<config>, got {name!r}")
    if name.split("/")[0] not in registry.REAL_LOG_BUILDERS:
      raise ValueError(f"--dataset: {name.split('/')[0]!r} is not a real-log builder "
                       f"({', '.join(registry.REAL_LOG_BUILDERS)}); simulated data: make data")
    manual_dir = os.path.expanduser(manual_dir) if manual_dir else manual_dir
    # tf.io.gfile: the manual and data dirs of a Beam preparation may be buckets (gs://...).
    try:
      is_dir = bool(manual_dir) and tf.io.gfile.isdir(manual_dir)
    except tf.errors.OpError as e:
      # A file system TensorFlow cannot open (no such scheme, no access).
      raise ValueError(f"--manual_dir {manual_dir!r} cannot be read: {e.message}") from None
    if not is_dir:
      raise ValueError(f"--manual_dir must be the directory holding the files, got {manual_dir!r}")
    use_beam = FLAGS.beam_pipeline_options is not None
    if use_beam and name.split("/")[0] not in BEAM_BUILDERS:
      raise ValueError(f"--beam_pipeline_options: Beam preparation is written for "
                       f"{', '.join(BEAM_BUILDERS)}; "
                       f"{name.split('/')[0]} is prepared in memory (leave the flag out)")
    beam_options = None
    if use_beam:
      try:
        from uma2_tf.sources import logs_beam
      except ImportError:
        raise ValueError("--beam_pipeline_options needs Apache Beam: "
                         "pip install -e '.[beam]'") from None
      beam_options = logs_beam.pipeline_options(FLAGS.beam_pipeline_options,
                                                flag="--beam_pipeline_options")
    download_config = tfds.download.DownloadConfig(manual_dir=manual_dir, beam_options=beam_options)
    if use_beam:
      import logging

      from uma2_tf.sources import recflow_beam

      # Beam logs a failing step's traceback, then raises its exception here: a bad log is then
      # reported once, below; any other exception still ends the program with its traceback.
      logging.getLogger("apache_beam.runners.common").setLevel(logging.CRITICAL)

      builder = recflow_beam.RecflowBeam(data_dir=FLAGS.data_dir, config=name.split("/")[1])
    elif name.split("/")[0] == "request_logs":
      from uma2_tf.sources import request_logs

      builder = request_logs.RequestLogs(
          data_dir=FLAGS.data_dir, config=request_logs.config_for(name.split("/")[1], manual_dir))
    else:
      builder = registry.builder(name, FLAGS.data_dir)
    if builder.is_prepared():
      print(f"{name} is already built in {builder.data_dir}")
    else:
      builder.download_and_prepare(download_config=download_config)
  except (ValueError, FileNotFoundError, logs.LogFormatError, validation.InvalidRecordError) as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  with tf.io.gfile.GFile(os.path.join(str(builder.data_dir), reading.STATS_FILE)) as f:
    print(json.dumps(json.load(f), indent=2))
  return 0


if __name__ == "__main__":
  app.run(main)

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
read from the files; `--skip=out_of_split,date_mismatch` leaves out the requests breaking those
rules (counted in the dataset's validation.json) instead of stopping (rules: request_logs.py).
The build is TFDS's: into a temporary directory renamed when complete; a failed build also removes
the directories it created, so it leaves nothing behind. A malformed file stops it with one line
naming the file, the request or row, and the column (exit status 2).

A built dataset is reused; a `request_logs` one whose files changed since (sha256 in its
source.json) is an error naming them. `--overwrite` rebuilds: the old dataset is set aside and
removed once the new one is built (restored if the build fails).
"""
import uma2_tf  # noqa: F401  (before TensorFlow: selects tf_keras)

import contextlib
import json
import os
import sys

from absl import app, flags

FLAGS = flags.FLAGS
flags.DEFINE_string("dataset", None,
                    "TFDS name with config: request_logs/<any name>, recflow/<config>, "
                    "kuairand/<config>, amazon_books|gowalla|retailrocket|taobao/<config>.")
flags.DEFINE_string("manual_dir", None, "Directory holding the dataset's files.")
flags.DEFINE_string("data_dir", os.path.expanduser("~/tensorflow_datasets"), "TFDS data dir.")
flags.DEFINE_string("beam_pipeline_options", None,
                    "Prepare with Apache Beam (recflow only; needs the [beam] extra): the "
                    "pipeline's options as comma-separated key=value pairs, as `tfds build` takes "
                    "them, e.g. runner=DirectRunner or "
                    "runner=DataflowRunner,project=P,region=R,temp_location=gs://B/tmp.")
flags.DEFINE_list("skip", [], "request_logs only: rules whose breaking requests are left out "
                  "(counted in validation.json) instead of stopping the build: out_of_split, "
                  "date_mismatch.")
flags.DEFINE_bool("overwrite", False, "Rebuild the dataset even if it is already built (e.g. "
                  "after its files changed).")

BEAM_BUILDERS = ("recflow",)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments {argv[1:]}")
  import tensorflow as tf
  import tensorflow_datasets as tfds

  from uma2_tf import atomic_files
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
    if FLAGS.skip and name.split("/")[0] != "request_logs":
      raise ValueError(f"--skip applies to request_logs only, not {name}")
    unknown = sorted(set(FLAGS.skip) - set(logs.REQUEST_RULES))
    if unknown:
      raise ValueError(f"--skip: unknown rule(s) {unknown}; the rules are "
                       f"{', '.join(logs.REQUEST_RULES)}")
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
    atomic_files.check_writable(FLAGS.data_dir, "--data_dir")
    download_config = tfds.download.DownloadConfig(manual_dir=manual_dir, beam_options=beam_options)
    make_builder = _builder_factory(name, manual_dir, use_beam)
    with _removed_on_failure(FLAGS.data_dir, name):
      builder = make_builder()
      if not builder.is_prepared():
        builder.download_and_prepare(download_config=download_config)
      elif FLAGS.overwrite:
        with _set_aside(str(builder.data_dir)):
          builder = make_builder()
          builder.download_and_prepare(download_config=download_config)
      else:
        _check_not_stale(name, builder, manual_dir)
        print(f"{name} is already built in {builder.data_dir}")
  except (ValueError, FileNotFoundError, logs.LogFormatError, validation.InvalidRecordError) as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  with tf.io.gfile.GFile(os.path.join(str(builder.data_dir), reading.STATS_FILE)) as f:
    print(json.dumps(json.load(f), indent=2))
  return 0


def _builder_factory(name: str, manual_dir: str, use_beam: bool):
  """A function making the builder of `name` (again: after `--overwrite` set the old one aside)."""
  from uma2_tf.sources import registry

  if use_beam:
    import logging

    from uma2_tf.sources import recflow_beam

    # Beam logs a failing step's traceback, then raises its exception here: a bad log is then
    # reported once, in `main`; any other exception still ends the program with its traceback.
    logging.getLogger("apache_beam.runners.common").setLevel(logging.CRITICAL)
    return lambda: recflow_beam.RecflowBeam(data_dir=FLAGS.data_dir, config=name.split("/")[1])
  if name.split("/")[0] == "request_logs":
    from uma2_tf.sources import request_logs

    # Read (and checked) once, here: the config names the files' fields.
    config = request_logs.config_for(name.split("/")[1], manual_dir, skip=FLAGS.skip)
    return lambda: request_logs.RequestLogs(data_dir=FLAGS.data_dir, config=config)
  return lambda: registry.builder(name, FLAGS.data_dir)


def _check_not_stale(name: str, builder, manual_dir: str) -> None:
  """A built `request_logs` dataset is reused only if its files are the same (by content)."""
  if name.split("/")[0] != "request_logs":
    return
  from uma2_tf.sources import request_logs

  changed = request_logs.changed_sources(str(builder.data_dir), manual_dir, FLAGS.skip)
  if changed is None:
    print(f"{name}: built without a record of its files ({request_logs.SOURCE_FILE}); "
          "--overwrite rebuilds it from the files now", file=sys.stderr)
  elif changed:
    raise ValueError(f"{name} is already built in {builder.data_dir} from other files than those "
                     f"in {manual_dir}: {', '.join(changed)}; rebuild it with --overwrite (or "
                     "prepare it under another name)")


@contextlib.contextmanager
def _removed_on_failure(data_dir: str, name: str):
  """Removes the directories a failed build created (TFDS removes only its temporary one), so
  nothing of it is left: not even an empty `<builder>/<config>` directory."""
  import tensorflow as tf

  candidates = [data_dir, os.path.join(data_dir, name.split("/")[0]),
                os.path.join(data_dir, *name.split("/")[:2]), os.path.join(data_dir, "downloads")]
  existed = {path: tf.io.gfile.exists(path) for path in candidates}
  try:
    yield
  except BaseException:
    for path in candidates:  # outermost first
      if not existed[path] and tf.io.gfile.exists(path):
        tf.io.gfile.rmtree(path)
    raise


@contextlib.contextmanager
def _set_aside(directory: str):
  """Moves a built dataset aside while it is rebuilt: removed on success, restored on failure."""
  import tensorflow as tf

  aside = directory.rstrip("/") + ".replaced"
  if tf.io.gfile.exists(aside):
    tf.io.gfile.rmtree(aside)
  tf.io.gfile.rename(directory, aside)
  try:
    yield
  except BaseException:
    if tf.io.gfile.exists(directory):
      tf.io.gfile.rmtree(directory)
    tf.io.gfile.rename(aside, directory)
    raise
  tf.io.gfile.rmtree(aside)


if __name__ == "__main__":
  app.run(main)

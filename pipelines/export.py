"""Exports a trained run for serving (`make export`); only wires flags onto `export.ExportConfig`.

    python -m pipelines.export --run_dir=runs/uma2_default --export_dir=exports/uma2_default
    python -m pipelines.export --scann_leaves_to_search=50 --max_k=500

Writes `<export_dir>/<version>/` (see `uma2_tf.export`) and prints what it wrote.
"""
import uma2_tf  # noqa: F401  (before TensorFlow: selects tf_keras)

import sys

from absl import app, flags

FLAGS = flags.FLAGS
flags.DEFINE_string("run_dir", "runs/uma2_default", "Training output dir to export.")
flags.DEFINE_string("export_dir", "exports/uma2_default", "Base dir of the model's versions.")
flags.DEFINE_integer("version", 0, "Version to write (0: one more than the highest present).")
flags.DEFINE_string("model_name", "uma2", "Name the model is served under.")
flags.DEFINE_integer("max_k", 0, "Largest k the retrieval models answer (0: min(1000, corpus)).")
flags.DEFINE_integer("scann_leaves", 0, "ScaNN partitions (0: about sqrt(corpus)).")
flags.DEFINE_integer("scann_leaves_to_search", 0,
                     "Partitions searched per query (0: a tenth, at least 25K items).")
flags.DEFINE_integer("scann_reorder", 0, "Candidates re-scored exactly (0: max(400, max_k)).")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments {argv[1:]}")
  from uma2_tf import export

  try:
    config = export.ExportConfig(
        run_dir=FLAGS.run_dir, export_dir=FLAGS.export_dir, version=FLAGS.version,
        model_name=FLAGS.model_name, max_k=FLAGS.max_k, scann_leaves=FLAGS.scann_leaves,
        scann_leaves_to_search=FLAGS.scann_leaves_to_search, scann_reorder=FLAGS.scann_reorder)
    version_dir = export.export_run(config)
  except (ValueError, FileNotFoundError, FileExistsError) as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  metadata = export.read_metadata(version_dir)
  print(f"exported {config.run_dir} as {metadata['model_name']} version {metadata['version']}: {version_dir}")
  for name, what in metadata["models"].items():
    print(f"  {name:<18} {what}")
  print(f"  ScaNN: {metadata['scann']}")
  return 0


if __name__ == "__main__":
  app.run(main)

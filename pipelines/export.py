"""Exports a trained run for serving (`make export`); only wires flags onto `export.ExportConfig`.

    python -m pipelines.export --run_dir=runs/uma2_default --export_dir=exports/uma2_default
    python -m pipelines.export --scann_leaves_to_search=50 --max_k=500

Writes `<export_dir>/<version>/` (see `uma2_tf.export`) and prints what it wrote, with the ScaNN
index's check on real user queries (`uma2_tf.index_check`: recall@k against exact search, queries/s
against brute force), also in the version's index_check.md.

    python -m pipelines.export --scann_min_recall=0.98      # tune the automatic index further
    python -m pipelines.export --check_queries=0            # skip the check
"""
import uma2_tf  # noqa: F401  (before TensorFlow: selects tf_keras)

import sys

from absl import app, flags

from uma2_tf import config_flags, export, index_check

FLAGS = flags.FLAGS
# Every field of `ExportConfig` is a flag, with the dataclass's default and docstring.
config_flags.define(export.ExportConfig)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments {argv[1:]}")
  try:
    config = config_flags.resolve(export.ExportConfig)
    version_dir = export.export_run(config)
  except (ValueError, FileNotFoundError, FileExistsError) as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  metadata = export.read_metadata(version_dir)
  print(f"exported {config.run_dir} as {metadata['model_name']} version {metadata['version']}: "
        f"{version_dir}")
  for name, what in metadata["models"].items():
    print(f"  {name:<18} {what}")
  print(f"  ScaNN: {metadata['scann']}")
  if "scann_check" in metadata:
    print("\n" + index_check.markdown(metadata["scann_check"]), end="")
  return 0


if __name__ == "__main__":
  app.run(main)

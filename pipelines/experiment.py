"""Reproduces the paper's Table 1 on a dataset (`make experiment`); see `uma2_tf.experiment`.

    python -m pipelines.experiment --quick                      # YouTube DNN chain + SOS, ~30 min
    python -m pipelines.experiment --report_dir=reports/table1  # the full grid (hours on 2 cores)
    python -m pipelines.experiment --report_only                # rewrite the report from the runs

Writes to --report_dir: table1.md (the table, lifts, paired tests), runs.csv (every run),
comparisons.json, table1.png, experiment.json (the grid) and runs/<run id>/ (each training run's
own outputs). Killed, the same command resumes: finished runs are kept, the interrupted one
resumes from its last backup.
"""
import uma2_tf  # noqa: F401  (before TensorFlow: selects tf_keras)

import os
import sys
import time

from absl import app, flags, logging

FLAGS = flags.FLAGS
flags.DEFINE_string("dataset", "uma2_simulated/default", "TFDS dataset name with config.")
flags.DEFINE_string("data_dir", os.path.expanduser("~/tensorflow_datasets"), "TFDS data dir.")
flags.DEFINE_string("report_dir", None, "Where the report and the runs go "
                    "(default: reports/experiment_<dataset config>[_quick]).")
flags.DEFINE_boolean("quick", False, "The quick grid (YouTube DNN: SS-A, SS-AB, SS-ABC(random), "
                     "SS-ABC(fixed), UMA², UMA²_SOS), 2 epochs each, evaluated once at the end.")
flags.DEFINE_list("seeds", None, "Seeds of every cell (default: 0,1,2; --quick: 0,1).")
flags.DEFINE_integer("epochs", None, "Epochs per run (default: 5 with early stopping; --quick: 2).")
flags.DEFINE_integer("batch_size", 512, "Global batch size in positives.")
flags.DEFINE_float("learning_rate", 1e-3, "Adam learning rate.")
flags.DEFINE_string("strategy", "auto", "tf.distribute strategy of every run.")
flags.DEFINE_boolean("report_only", False, "Only rewrite the report from the finished runs.")
flags.DEFINE_list("towers", None, "Keep only the grid's runs on these towers (e.g. youtube_dnn,dat).")
flags.DEFINE_list("rows", None, "Keep only these rows, by run-id slug: ss_a, ss_ab, ss_abc_random, "
                  "ss_abc_fixed, uma2, uma2_sos, uma2_self_norm.")

QUICK_SEEDS, QUICK_EPOCHS = ("0", "1"), 2


def settings():
  """(grid, base TrainConfig, report_dir) from the flags; ValueError naming the flag if bad."""
  from uma2_tf import experiment, training

  seeds = FLAGS.seeds or (QUICK_SEEDS if FLAGS.quick else ("0", "1", "2"))
  try:
    seeds = tuple(int(s) for s in seeds)
  except ValueError:
    raise ValueError(f"--seeds: expected comma-separated integers, got {','.join(seeds)!r}") from None
  if not seeds or len(set(seeds)) != len(seeds):
    raise ValueError(f"--seeds: expected distinct integers, got {seeds}")
  grid = experiment.quick_grid(seeds) if FLAGS.quick else experiment.full_grid(seeds)
  if FLAGS.towers:
    unknown = sorted(set(FLAGS.towers) - {spec.tower for spec in grid})
    if unknown:
      raise ValueError(f"--towers: {', '.join(unknown)} not in the grid; it has "
                       f"{', '.join(sorted({spec.tower for spec in grid}))}")
    grid = [spec for spec in grid if spec.tower in FLAGS.towers]
  if FLAGS.rows:
    slugs = {spec.row_slug for spec in grid}
    unknown = sorted(set(FLAGS.rows) - slugs)
    if unknown:
      raise ValueError(f"--rows: {', '.join(unknown)} not in the grid; it has {', '.join(sorted(slugs))}")
    grid = [spec for spec in grid if spec.row_slug in FLAGS.rows]
  if not grid:
    raise ValueError("--towers/--rows: no run of the grid is left")
  epochs = FLAGS.epochs or (QUICK_EPOCHS if FLAGS.quick else 5)
  try:
    base = training.TrainConfig(
        dataset=FLAGS.dataset, data_dir=os.path.expanduser(FLAGS.data_dir), strategy=FLAGS.strategy,
        batch_size=FLAGS.batch_size, learning_rate=FLAGS.learning_rate, epochs=epochs,
        # Quick runs are too short for early stopping to matter: one evaluation, at the end.
        early_stopping_patience=0 if FLAGS.quick else 2, evaluate_each_epoch=not FLAGS.quick)
  except ValueError as e:
    raise ValueError(f"flags: {e}") from None
  config_name = FLAGS.dataset.split("/")[-1]
  report_dir = FLAGS.report_dir or os.path.join(
      "reports", f"experiment_{config_name}{'_quick' if FLAGS.quick else ''}")
  return grid, base, report_dir


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments {argv[1:]}")
  from uma2_tf import experiment
  from uma2_tf.data import datasets

  try:
    grid, base, report_dir = settings()
    if not FLAGS.report_only:
      datasets.load(base.dataset, base.data_dir)
  except (ValueError, FileNotFoundError) as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  title = (f"Table 1 on {base.dataset}: {'quick grid' if FLAGS.quick else 'full grid'}, "
           f"{base.epochs} epoch{'s' if base.epochs > 1 else ''}, seeds {', '.join(str(s) for s in sorted({g.seed for g in grid}))}")
  start = time.perf_counter()
  if not FLAGS.report_only:
    try:
      experiment.run_grid(grid, base, report_dir)
    except ValueError as e:  # A run dir from another config: nothing was trained.
      print(f"error: {e}", file=sys.stderr)
      return 2
  try:
    report = experiment.write_report(report_dir, grid, title)
  except ValueError as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  print(report["table"])
  logging.info("experiment finished in %.0f s; report in %s", time.perf_counter() - start,
               os.path.abspath(report_dir))
  for path in report["paths"].values():
    print(path)
  return 0


if __name__ == "__main__":
  app.run(main)

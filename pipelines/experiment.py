"""Reproduces the paper's Table 1 on a dataset (`make experiment`), the negative samplers' table,
or the ablation of UMA²'s gain across worlds; see `uma2_tf.experiment`.

    python -m pipelines.experiment --quick                      # YouTube DNN chain + SOS, ~30 min
    python -m pipelines.experiment --report_dir=reports/table1  # the full grid (hours on 2 cores)
    python -m pipelines.experiment --report_only                # rewrite the report from the runs
    python -m pipelines.experiment --table=samplers             # every sampler on YTB and DAT
    python -m pipelines.experiment --table=ablation \
        --datasets=uma2_simulated/default,uma2_simulated/learned,uma2_simulated/noise_inf
    python -m pipelines.experiment --table=remi                 # IHN and RR on MIND, ComiRec

Writes to --report_dir: table1.md (the table, lifts, paired tests), runs.csv (every run),
comparisons.json, table1.png, experiment.json (the grid) and runs/<run id>/ (each training run's
own outputs); with --table=samplers (default dir reports/samplers_<dataset config>[_quick]):
samplers.md (per tower: accuracy, popularity bias, s/epoch, paired tests against uniform and UMA²,
the samplers' claims), samplers.csv, samplers.json, samplers.png and experiment_samplers.json;
with --table=ablation (default dir reports/ablation[_quick]): ablation.md (per world and tower the
rows, the named comparisons and the decomposition of UMA²'s gain), ablation.csv, ablation.json,
ablation.png, and per world <world config name>/experiment_ablation.json and its runs/;
with --table=remi (default dir reports/remi_<dataset config>[_quick]): remi.md (per backbone the
rows base, +IHN, +RR, +IHN+RR under the sequential protocol, their routing collapse and paired
tests against base), remi.csv, remi.json, remi.png and experiment_remi.json.
Killed, the same command resumes: finished runs are kept, the interrupted one resumes from its
last backup; a run the other table already trained in the same report dir (same config) is
reused. The settings every run shares are `TrainConfig`'s own flags (`SHARED_FIELDS`: --dataset,
--epochs, --batch_size, ...) with its defaults; `--quick` makes the default 2 epochs, evaluated
once at the end, without early stopping.
"""
import uma2_tf  # noqa: F401  (before TensorFlow: selects tf_keras)

import dataclasses
import os
import sys
import time

from absl import app, flags, logging

from uma2_tf import atomic_files, config_flags, training

SHARED_FIELDS = ("dataset", "data_dir", "strategy", "precision", "batch_size", "learning_rate",
                 "epochs", "eval_ks", "backup_every_steps", "validation", "num_interests", "remi")

FLAGS = flags.FLAGS
# The training settings every run of the grid shares, as `TrainConfig`'s own flags and defaults
# (the grid sets each run's tower, negatives, loss, seed and output dir itself).
config_flags.define(training.TrainConfig, only=SHARED_FIELDS)
flags.DEFINE_string("table", "table1", "Which table: table1 (the paper's Table 1), samplers "
                    "(SS-A, uniform, popularity^0.75, in-batch with and without logQ, mixed, "
                    "hybrid, SS-ABC(fixed) and UMA² on YouTube DNN and DAT) or ablation (where "
                    "UMA²'s gain comes from: GMM(random), GMM(fixed), multi-task only, own tables, "
                    "UMA², self-norm, in each world of --datasets) or remi (IHN and RR on "
                    "MIND, ComiRec-SA and ComiRec-DR under the sequential protocol; IHN's β and "
                    "RR's λ: --remi.ihn_beta, --remi.rr_lambda, default 1 and 12800).")
flags.DEFINE_list("datasets", None, "--table=ablation: the worlds to compare, in this order "
                  "(default: --dataset).")
flags.DEFINE_string("report_dir", None, "Where the report and the runs go (default: "
                    "reports/experiment_<dataset config>[_quick], --table=samplers: "
                    "reports/samplers_<dataset config>[_quick], --table=ablation: "
                    "reports/ablation[_quick], --table=remi: reports/remi_<dataset config>"
                    "[_quick]).")
flags.DEFINE_boolean("quick", False, "2 epochs each, evaluated once at the end; for Table 1 also "
                     "the quick grid (YouTube DNN: SS-A, SS-AB, SS-ABC(random), SS-ABC(fixed), "
                     "UMA², UMA²_SOS).")
flags.DEFINE_list("seeds", None, "Seeds of every cell (default: 0,1,2; --quick, "
                  "--table=samplers, ablation or remi: 0,1).")
flags.DEFINE_boolean("report_only", False, "Only rewrite the report from the finished runs.")
flags.DEFINE_boolean("cost_only", False, "Train nothing: measure each cell's step, FLOPs and "
                     "evaluation and write what the grid costs here and, projected, on one GPU "
                     "(grid_cost.md / grid_cost.json in --report_dir; minutes).")
flags.DEFINE_list("towers", None,
                  "Keep only the grid's runs on these towers (e.g. youtube_dnn,dat); "
                  "--table=ablation: its towers, any but ESAM's (default youtube_dnn); "
                  "--table=remi: multi-interest towers (default mind,comirec_sa,comirec_dr).")
flags.DEFINE_list("rows", None, "Keep only these rows, by run-id slug: ss_a, ss_ab, ss_abc_random, "
                  "ss_abc_fixed, uma2, uma2_sos, uma2_self_norm; --table=samplers: ss_a, "
                  "ss_abc_random, popularity_0_75, in_batch, in_batch_logq, mixed, hybrid, "
                  "ss_abc_fixed, uma2; --table=ablation: ss_abc_random, ss_abc_fixed, "
                  "uma2_multitask, uma2_own_tables, uma2, uma2_self_norm; --table=remi: "
                  "remi_base, remi_ihn, remi_rr, remi_ihn_rr.")

QUICK_SEEDS, QUICK_EPOCHS = ("0", "1"), 2
TABLES = ("table1", "samplers", "ablation", "remi")
SAMPLERS_SEEDS = ("0", "1")
# Each table's file of the grid it ran (per world for the ablation).
EXPERIMENT_FILES = {"table1": "experiment.json", "samplers": "experiment_samplers.json",
                    "ablation": "experiment_ablation.json", "remi": "experiment_remi.json"}


def check_table() -> str:
  """--table, or ValueError naming the flag."""
  if FLAGS.table not in TABLES:
    raise ValueError(f"--table: expected one of {', '.join(TABLES)}, got {FLAGS.table!r}")
  return FLAGS.table


def worlds() -> list[str]:
  """The datasets of the table: --datasets for the ablation (default --dataset), else --dataset;
  ValueError naming the flag if bad."""
  from uma2_tf.experiment import ablation_table

  if FLAGS.table != "ablation":
    if FLAGS.datasets:
      raise ValueError(f"--datasets: only --table=ablation compares worlds; --table={FLAGS.table} "
                       "runs on --dataset")
    return [FLAGS.dataset]
  datasets = FLAGS.datasets or [FLAGS.dataset]
  try:
    ablation_table.check_worlds(datasets)
  except ValueError as e:
    raise ValueError(f"--datasets: {e}") from None
  return datasets


def settings():
  """(grid, base TrainConfig, report_dir) from the flags; ValueError naming the flag if bad."""
  from uma2_tf.experiment import grid as grid_lib

  table = check_table()
  default_seeds = SAMPLERS_SEEDS if table in ("samplers", "ablation", "remi") else (
      QUICK_SEEDS if FLAGS.quick else ("0", "1", "2"))
  seeds = FLAGS.seeds or default_seeds
  try:
    seeds = tuple(int(s) for s in seeds)
  except ValueError:
    raise ValueError(f"--seeds: expected comma-separated integers, "
                     f"got {','.join(seeds)!r}") from None
  if not seeds or len(set(seeds)) != len(seeds):
    raise ValueError(f"--seeds: expected distinct integers, got {seeds}")
  if table == "samplers":
    grid = grid_lib.samplers_grid(seeds)
  elif table == "ablation":  # Its towers are chosen, not filtered: the rows run on any tower.
    try:
      grid = grid_lib.ablation_grid(seeds, FLAGS.towers or ("youtube_dnn",))
    except ValueError as e:
      raise ValueError(f"--towers: {e}") from None
  elif table == "remi":
    try:
      grid = grid_lib.remi_grid(seeds, FLAGS.towers or grid_lib.REMI_TOWERS)
    except ValueError as e:
      raise ValueError(f"--towers: {e}") from None
  else:
    grid = grid_lib.quick_grid(seeds) if FLAGS.quick else grid_lib.full_grid(seeds)
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
      raise ValueError(f"--rows: {', '.join(unknown)} not in the grid; it has "
                       f"{', '.join(sorted(slugs))}")
    grid = [spec for spec in grid if spec.row_slug in FLAGS.rows]
  if not grid:
    raise ValueError("--towers/--rows: no run of the grid is left")
  defaults = training.TrainConfig()
  if FLAGS.quick:
    # Quick runs are too short for early stopping to matter: one evaluation, at the end.
    defaults = dataclasses.replace(defaults, epochs=QUICK_EPOCHS, early_stopping_patience=0,
                                   evaluate_each_epoch=False)
  if table == "remi":
    # The cells' own settings, so that --remi.ihn_beta / --remi.rr_lambda make a valid base.
    defaults = dataclasses.replace(
        defaults, tower=grid_lib.REMI_TOWERS[0], loss=dataclasses.replace(defaults.loss,
                                                                          use_nsdn=False),
        sampling=dataclasses.replace(defaults.sampling, strategy="sampled"))
  base = config_flags.resolve(training.TrainConfig, base=defaults)
  config_name = FLAGS.dataset.split("/")[-1]
  quick = "_quick" if FLAGS.quick else ""
  report_dir = FLAGS.report_dir or os.path.join("reports", {
      "samplers": f"samplers_{config_name}{quick}", "ablation": f"ablation{quick}",
      "remi": f"remi_{config_name}{quick}"}.get(
          table, f"experiment_{config_name}{quick}"))
  return grid, base, report_dir


def title(grid, base) -> str:
  """The report's title line: the table, dataset, grid, epochs and seeds."""
  from uma2_tf.experiment import grid as grid_lib

  epochs = f"{base.epochs} epoch{'s' if base.epochs > 1 else ''}"
  seeds = f"seeds {', '.join(str(s) for s in sorted({g.seed for g in grid}))}"
  towers = ", ".join(grid_lib.TOWER_NAMES.get(t, t) for t in dict.fromkeys(g.tower for g in grid))
  if FLAGS.table == "samplers":
    return (f"Negative samplers table on {base.dataset}: {towers}"
            f"{', quick' if FLAGS.quick else ''}, {epochs}, {seeds}")
  if FLAGS.table == "remi":
    return (f"REMI on {base.dataset} (sequential protocol): {towers}"
            f"{', quick' if FLAGS.quick else ''}, "
            f"{'up to ' if base.early_stopping_patience else ''}{epochs}, {seeds}")
  if FLAGS.table == "ablation":
    return (f"Where UMA²'s gain comes from, on {', '.join(worlds())}: {towers}"
            f"{', quick' if FLAGS.quick else ''}, "
            f"{'up to ' if base.early_stopping_patience else ''}{epochs}, {seeds}")
  return (f"Table 1 on {base.dataset}: {'quick grid' if FLAGS.quick else 'full grid'}, "
          f"{epochs}, {seeds}")


def cost_only(grid, base, report_dir) -> int:
  """`--cost_only`: the grid's measured cost per cell, written to report_dir and printed."""
  from tqdm import tqdm

  from uma2_tf.experiment import grid_cost
  from uma2_tf.sources import registry

  dataset = registry.load(base.dataset, base.data_dir)
  costs, shared = grid_cost.measure(grid, base, dataset,
                                    progress=lambda cells: tqdm(cells, desc="cells", unit="cell"))
  print(grid_cost.write_report(report_dir, costs, shared, len({s.seed for s in grid})))
  return 0


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments {argv[1:]}")
  try:  # Before anything else: a bad --table is one line, at once.
    table = check_table()
  except ValueError as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  from uma2_tf.experiment import ablation_table
  from uma2_tf.experiment import grid as grid_lib
  from uma2_tf.experiment import report as report_lib
  from uma2_tf.experiment import remi_table, samplers_table
  from uma2_tf.sources import registry

  try:
    grid, base, report_dir = settings()
    datasets = worlds()
    if not FLAGS.report_only:
      for dataset in datasets:  # Every world is there before hours of training, not after.
        registry.load(dataset, base.data_dir)
  except (ValueError, FileNotFoundError) as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  if FLAGS.cost_only:
    return cost_only(grid, base, report_dir)
  # Where each world's grid runs: the report dir itself, or a dir per world for the ablation.
  runs = [(dataclasses.replace(base, dataset=dataset),
           ablation_table.world_dir(report_dir, dataset) if table == "ablation" else report_dir)
          for dataset in datasets]
  start = time.perf_counter()
  if not FLAGS.report_only:
    try:
      atomic_files.check_writable(report_dir, "--report_dir")
      for world_base, world_dir in runs:  # Every world's runs checked before any trains.
        grid_lib.check_grid(grid, world_base, world_dir)
      for world_base, world_dir in runs:
        grid_lib.run_grid(grid, world_base, world_dir, experiment_file=EXPERIMENT_FILES[table])
    except ValueError as e:  # A run dir of another config (nothing trained), a corrupt shard.
      print(f"error: {e}", file=sys.stderr)
      return 2
  try:
    if table == "ablation":
      report = ablation_table.write_report(report_dir, datasets, grid, title(grid, base))
    elif table == "remi":
      report = remi_table.write_report(report_dir, grid, title(grid, base))
    else:
      write = samplers_table.write_report if table == "samplers" else report_lib.write_report
      report = write(report_dir, grid, title(grid, base))
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

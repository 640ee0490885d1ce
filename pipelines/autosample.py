"""Searches the negative sampler a dataset and tower want (`make autosample`); see
`uma2_tf.experiment.autosample`.

    python -m pipelines.autosample --dataset=uma2_simulated/default --tower=dat \
        --candidates=uniform,popularity:0.5,popularity:1,mixed,uma2 --budget=3 --seeds=0,1
    python -m pipelines.autosample --grid_dir=reports/samplers_default   # compared with the grid
    python -m pipelines.autosample --report_only                        # rewrite the report

Each seed's search is an ordinary run dir, `<report_dir>/seed<N>` (`make export
RUN_DIR=<report_dir>/seed0` exports its model); the report over the seeds is
`<report_dir>/autosample.md` (with autosample_report.json and the trajectory, autosample.png).
Killed, the same command resumes each search after its last finished phase. Every `TrainConfig`
flag but --output_dir and --seed sets what the candidates share (tower, batch, learning rate,
validation split, ...); the candidates set the negatives and the loss.
"""
import uma2_tf  # noqa: F401  (before TensorFlow: selects tf_keras)

import dataclasses
import os
import sys

from absl import app, flags, logging

from uma2_tf import atomic_files, config_flags, training
from uma2_tf.experiment import autosample

FLAGS = flags.FLAGS
SHARED_FIELDS = tuple(f.name for f in dataclasses.fields(training.TrainConfig)
                      if f.name not in ("output_dir", "seed"))
config_flags.define(training.TrainConfig, only=SHARED_FIELDS)
config_flags.define(autosample.SearchConfig, prefix="autosample.")
config_flags.define_aliases({"candidates": "autosample.candidates",
                             "budget": "autosample.budget", "phases": "autosample.phases",
                             "probe_steps": "autosample.probe_steps"})
flags.DEFINE_list("seeds", ["0"], "One search per seed, each in <report_dir>/seed<N>.")
flags.DEFINE_string("report_dir", None, "Where the searches and the report go (default "
                    "reports/autosample_<dataset config>_<tower>).")
flags.DEFINE_string("grid_dir", None, "An experiment report dir with the candidates' own runs "
                    "on the same tower and seeds (experiment --table=samplers for the default "
                    "candidates), to compare the search with.")
flags.DEFINE_boolean("report_only", False, "Only rewrite the report from the finished searches.")


def settings():
  """(base TrainConfig, SearchConfig, seeds, report_dir); ValueError naming the flag if bad."""
  try:
    seeds = [int(s) for s in FLAGS.seeds]
  except ValueError:
    raise ValueError(f"--seeds: expected comma-separated integers, got "
                     f"{','.join(FLAGS.seeds)!r}") from None
  if not seeds or len(set(seeds)) != len(seeds):
    raise ValueError(f"--seeds: expected distinct integers, got {FLAGS.seeds}")
  base = config_flags.resolve(training.TrainConfig)
  search_config = dataclasses.replace(autosample.SearchConfig(), **config_flags.given_values(
      autosample.SearchConfig, prefix="autosample."))
  from uma2_tf.experiment import autosample_run
  autosample_run.check_config(base)
  report_dir = FLAGS.report_dir or os.path.join(
      "reports", f"autosample_{base.dataset.split('/')[-1]}_{base.tower}")
  return base, search_config, seeds, report_dir


def seed_config(base: training.TrainConfig, seed: int, report_dir: str) -> training.TrainConfig:
  return dataclasses.replace(base, seed=seed, output_dir=os.path.join(report_dir, f"seed{seed}"),
                             sampling=dataclasses.replace(base.sampling, seed=seed))


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments {argv[1:]}")
  from uma2_tf.experiment import autosample_report, autosample_run
  from uma2_tf.sources import registry

  try:
    base, search_config, seeds, report_dir = settings()
    if not FLAGS.report_only:
      registry.load(base.dataset, base.data_dir)
      atomic_files.check_writable(report_dir, "--report_dir")
  except (ValueError, FileNotFoundError) as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  import tf_keras as keras

  dirs = []
  for seed in seeds:
    config = seed_config(base, seed, report_dir)
    dirs.append(config.output_dir)
    if FLAGS.report_only:
      continue
    keras.backend.clear_session()  # Searches share the process, not their graphs.
    try:
      autosample_run.run(config, search_config, verbose=1 if sys.stdout.isatty() else 0)
    except ValueError as e:  # A state file of another search, a budget the probes eat, ...
      print(f"error: {e}", file=sys.stderr)
      return 2
  try:
    report = autosample_report.write_report(
        report_dir, dirs, FLAGS.grid_dir,
        title=f"AutoSample on {base.dataset}, {base.tower}, seeds {', '.join(map(str, seeds))}",
        epochs=base.epochs)
  except (ValueError, FileNotFoundError) as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  print(report["table"])
  logging.info("report in %s", os.path.abspath(report_dir))
  for path in report["paths"].values():
    print(path)
  return 0


if __name__ == "__main__":
  app.run(main)

"""The report on Table 1's runs: the table, each row against its baseline, the paper's orderings.

    report_lib.write_report("reports/experiment_default", grid)  # table1.md, runs.csv, table1.png

(`from uma2_tf.experiment import report as report_lib`; `grid` is the list of `grid.RunSpec` that
`grid.run_grid` trained.) Only the finished runs are reported (`load_results`). Each cell is
compared with its baseline (`RunSpec.baseline`) by the relative lift of the means over seeds and a
paired test over the same test users (`compare`); the same test decides the paper's orderings
(`orderings`).
"""
from __future__ import annotations

import uma2_tf  # noqa: F401

import csv
import dataclasses
import io
import json
import math
import os
import textwrap
from typing import Sequence

import numpy as np
from absl import logging

from uma2_tf import atomic_files
from uma2_tf import run_dir
from uma2_tf.run_dir import RunDir
from uma2_tf.data import schema as schema_lib
from uma2_tf.experiment.grid import (ABLATION_ROWS, RUNS_DIR, SS_A, SS_AB, SS_ABC_FIXED,
                                     SS_ABC_RANDOM, UMA2, UMA2_SOS, RunSpec)

TABLE_METRICS = ("hitrate", "precision", "recall")
TABLE_KS = (100, 200)
TEST_METRIC = "recall@100"  # What the paired tests and the chart compare.
# Also tested in the orderings: an ordering can hold on the hit rate or deeper in the list and not
# at Recall@100.
SECONDARY_METRICS = ("hitrate@100", "recall@100", "recall@200")

# Characters of a 10-point title that fit in an inch of figure, with a margin.
TITLE_CHARS_PER_INCH = 12


@dataclasses.dataclass
class RunResult:
  spec: RunSpec
  metrics: dict  # The model's mean metrics (metrics.json "model").
  per_user: dict  # user_id and per-user metric arrays (per_user.npz).
  train_seconds: float
  epochs_run: int | None = None  # metrics.json "run" "epochs_run" (None in runs without it)
  routing: dict | None = None  # metrics.json "routing": a multi-interest tower's routing collapse
  steps_per_epoch: int | None = None  # metrics.json "run" "steps_per_epoch" (None without it)


def load_results(report_dir: str, grid: Sequence[RunSpec]) -> tuple[list[RunResult], dict]:
  """The finished runs of `grid` and the reference retrievers' metrics (popularity, oracle)."""
  results, reference = [], {}
  for spec in grid:
    run = RunDir(os.path.join(report_dir, RUNS_DIR, spec.run_id))
    if not run.is_finished():
      continue
    metrics = run.read_json(run_dir.METRICS_JSON)
    with np.load(run.file(run_dir.PER_USER)) as z:
      per_user = {k: z[k] for k in z.files}
    results.append(RunResult(spec, metrics["model"], per_user, metrics["run"]["train_seconds"],
                             metrics["run"].get("epochs_run"), metrics.get("routing"),
                             metrics["run"].get("steps_per_epoch")))
    for name in ("oracle", "popularity"):
      if name in metrics:
        reference[name] = metrics[name]
  return results, reference


@dataclasses.dataclass(frozen=True)
class Comparison:
  """A row against its baseline over the seeds both have, on `TEST_METRIC` (and the lift on every
  table metric)."""

  row: str
  baseline: str
  seeds: int
  lift: dict  # metric -> relative lift of the means over seeds, e.g. 0.031 for +3.1 %
  mean_difference: float  # mean over users (seed-averaged) of row - baseline
  ci95: tuple[float, float]
  p_value: float  # paired t-test over users of the seed-averaged differences (two-sided)
  p_values: dict  # the same test on each metric of SECONDARY_METRICS the runs have per user
  seeds_better: int  # seeds where the row's mean beats the baseline's


def compare(row: list[RunResult], baseline: list[RunResult],
            extra_lifts: Sequence[str] = (), metric: str = TEST_METRIC,
            secondary: Sequence[str] = SECONDARY_METRICS,
            lift_metrics: Sequence[str] | None = None) -> Comparison | None:
  """`row` against `baseline` over the seeds both ran (None without one); `extra_lifts`: metrics
  beyond the table's to give the lift of, where every paired run has them (e.g. the list-level
  oracle_recall@100, which has no per-user values to test). `metric` is the one tested (its
  p in `p_value`), `secondary` the others tested, `lift_metrics` those given a lift (default: Table
  1's columns)."""
  from scipy import stats

  by_seed = {r.spec.seed: r for r in baseline}
  pairs = [(r, by_seed[r.spec.seed]) for r in row if r.spec.seed in by_seed]
  if not pairs:
    return None
  for a, b in pairs:
    if not np.array_equal(a.per_user[schema_lib.USER_ID], b.per_user[schema_lib.USER_ID]):
      raise ValueError(f"{a.spec.run_id} and {b.spec.run_id} were evaluated on different "
                       f"test users")
  # Averaging a user's difference over seeds first keeps users the unit of the test: seeds are
  # repeated measurements of the same user, not more users.
  def seed_averaged_difference(metric):
    return np.mean([a.per_user[metric] - b.per_user[metric] for a, b in pairs], axis=0)

  def paired_p(diff):
    if len(diff) < 2 or not np.std(diff) > 0:
      return float("nan")
    return float(stats.ttest_1samp(diff, 0.0).pvalue)

  diff = seed_averaged_difference(metric)
  n = len(diff)
  sem = float(np.std(diff, ddof=1) / math.sqrt(n)) if n > 1 else float("nan")
  mean = float(np.mean(diff))
  p_value = paired_p(diff)
  p_values = {m: paired_p(seed_averaged_difference(m)) for m in secondary
              if all(m in a.per_user and m in b.per_user for a, b in pairs)}
  half = float(stats.t.ppf(0.975, n - 1) * sem) if n > 1 else float("nan")
  lift = {}
  extra = [m for m in extra_lifts if all(m in a.metrics and m in b.metrics for a, b in pairs)]
  for name in list(lift_metrics or _table_columns()) + extra:
    ours = np.mean([a.metrics[name] for a, _ in pairs])
    theirs = np.mean([b.metrics[name] for _, b in pairs])
    lift[name] = float(ours / theirs - 1) if theirs > 0 else float("nan")
  return Comparison(row=pairs[0][0].spec.label_row, baseline=pairs[0][1].spec.label_row,
                    seeds=len(pairs), lift=lift, mean_difference=mean,
                    ci95=(mean - half, mean + half), p_value=p_value, p_values=p_values,
                    seeds_better=sum(a.metrics[metric] > b.metrics[metric] for a, b in pairs))


def _table_columns() -> list[str]:
  return [f"{m}@{k}" for k in TABLE_KS for m in TABLE_METRICS]


def _mean_std(values: Sequence[float]) -> str:
  if len(values) == 1:
    return f"{values[0]:.4f}"
  return f"{np.mean(values):.4f} ± {np.std(values, ddof=1):.4f}"


def _section(spec: RunSpec) -> str:
  return SS_ABC_FIXED if spec.row in (UMA2,) + ABLATION_ROWS else spec.row


def _group(results: list[RunResult]) -> dict[RunSpec, list[RunResult]]:
  """Runs by their cell (seed 0 stands for the cell), in grid order."""
  groups: dict[RunSpec, list[RunResult]] = {}
  for r in results:
    groups.setdefault(dataclasses.replace(r.spec, seed=0), []).append(r)
  return groups


def _p(p: float) -> str:
  """A p-value for the table; below double precision's range a t-test returns 0."""
  return "n/a" if math.isnan(p) else "< 1e-300" if p < 1e-300 else f"{p:.1e}"


def _significance(p: float) -> str:
  if math.isnan(p):
    return "n/a"
  return "***" if p < 0.001 else "**" if p < 0.01 else "*" if p < 0.05 else "n.s."


def comparisons(results: list[RunResult]) -> list[Comparison]:
  groups = _group(results)
  out = []
  for cell, runs in groups.items():
    base = cell.baseline
    if base is not None and base in groups:
      comparison = compare(runs, groups[base])
      if comparison is not None:
        out.append(comparison)
  return out


# The paper's claims, as (lower, higher) rows on the same tower.
ORDERINGS = ((SS_A, SS_AB), (SS_AB, SS_ABC_RANDOM), (SS_ABC_RANDOM, UMA2), (SS_ABC_FIXED, UMA2),
             (UMA2_SOS, UMA2))


def orderings(results: list[RunResult]) -> list[dict]:
  """Whether each of the paper's orderings holds on each tower that ran both rows: the lift of the
  higher row over the lower one and the paired test (`compare`). `verdict`: holds (higher, p <
  0.05), not significant, or reversed (lower, p < 0.05)."""
  groups = _group(results)
  out = []
  for cell in groups:
    for lower, higher in ORDERINGS:
      if cell.row != higher:
        continue
      low_cell = dataclasses.replace(cell, row=lower)
      if low_cell not in groups:
        continue
      c = compare(groups[cell], groups[low_cell])
      if c is None:
        continue
      significant = not math.isnan(c.p_value) and c.p_value < 0.05
      verdict = (("holds" if c.mean_difference > 0 else "reversed") if significant
                 else "not significant")
      out.append({"claim": f"{low_cell.label_row} < {cell.label_row}", "verdict": verdict,
                  **dataclasses.asdict(c)})
  return out


def table1_markdown(results: list[RunResult], reference: dict, title: str) -> str:
  columns = _table_columns()
  groups = _group(results)
  seeds = sorted({r.spec.seed for r in results})
  lines = [f"# {title}", "",
           f"Mean ± std over seeds {', '.join(map(str, seeds))} (runs per cell in brackets when "
           "fewer). Lift: relative change of Recall@100 over the row's baseline (see below).", "",
           "| sampling | model | " + " | ".join(_column_title(c) for c in columns) +
           " | lift R@100 | p |",
           "|---|---|" + "---:|" * (len(columns) + 2)]
  by_row = {c.row: c for c in comparisons(results)}
  for section in (SS_A, SS_AB, SS_ABC_RANDOM, SS_ABC_FIXED):
    for cell, runs in groups.items():
      if _section(cell) != section:
        continue
      cells = [_mean_std([r.metrics[c] for r in runs]) for c in columns]
      name = cell.label + (f" ({len(runs)} runs)" if len(runs) < len(seeds) else "")
      comparison = by_row.get(cell.label_row)
      lift = f"{100 * comparison.lift[TEST_METRIC]:+.2f} %" if comparison else ""
      p = f"{_p(comparison.p_value)} {_significance(comparison.p_value)}" if comparison else ""
      lines.append(f"| {section} | {name} | " + " | ".join(cells) + f" | {lift} | {p} |")
  for name in ("popularity", "oracle"):
    if name in reference:
      lines.append(f"| reference | {name} | " +
                   " | ".join(f"{reference[name][c]:.4f}" for c in columns) + " | | |")
  lines += ["", "## Each row against its baseline", "",
            "Paired over the same test users: per user, Recall@100 of the row minus its "
            "baseline's, averaged over the seeds both ran; the mean of that difference with its "
            "95 % confidence interval and a two-sided paired t-test (users are the unit; "
            "* p<0.05, ** p<0.01, *** p<0.001). `seeds better`: seeds whose run beat the "
            "baseline's.", "",
            "| row | baseline | lift HR@100 | lift P@100 | lift R@100 | lift R@200 | "
            "mean ΔR@100 [95 % CI] | p | seeds better |",
            "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
  for c in comparisons(results):
    lo, hi = c.ci95
    lines.append(
        f"| {c.row} | {c.baseline} | {100 * c.lift['hitrate@100']:+.2f} % | "
        f"{100 * c.lift['precision@100']:+.2f} % | {100 * c.lift['recall@100']:+.2f} % | "
        f"{100 * c.lift['recall@200']:+.2f} % | {c.mean_difference:+.4f} [{lo:+.4f}, {hi:+.4f}] | "
        f"{_p(c.p_value)} {_significance(c.p_value)} | {c.seeds_better}/{c.seeds} |")
  claims = orderings(results)
  if claims:
    lines += ["", "## The paper's orderings", "",
              "SS-A < SS-AB < SS-ABC(random) < UMA², UMA² above the GMM with its own negatives "
              "(SS-ABC(fixed)) and above the SOS ablation. The verdict is on Recall@100, paired as "
              "above; the same test on HitRate@100 and Recall@200 in the last columns.", "",
              "| claim | verdict | lift R@100 | mean ΔR@100 [95 % CI] | p | seeds better | "
              "lift HR@100, p | lift R@200, p |",
              "|---|---|---:|---:|---:|---:|---:|---:|"]
    for claim in claims:
      lo, hi = claim["ci95"]
      others = [f"{100 * claim['lift'][m]:+.2f} %, {_p(claim['p_values'].get(m, float('nan')))}"
                for m in ("hitrate@100", "recall@200")]
      lines.append(f"| {claim['claim']} | {claim['verdict']} | "
                   f"{100 * claim['lift']['recall@100']:+.2f} % | "
                   f"{claim['mean_difference']:+.4f} [{lo:+.4f}, {hi:+.4f}] | "
                   f"{_p(claim['p_value'])} | "
                   f"{claim['seeds_better']}/{claim['seeds']} | {' | '.join(others)} |")
  return "\n".join(lines) + "\n"


def _column_title(column: str) -> str:
  metric, k = column.split("@")
  return {"hitrate": "HitRate", "precision": "Precision", "recall": "Recall"}[metric] + f"@{k}"


def runs_csv(results: list[RunResult]) -> str:
  buffer = io.StringIO()
  metric_names = sorted({m for r in results for m in r.metrics})
  writer = csv.writer(buffer, lineterminator="\n")
  writer.writerow(["run_id", "row", "tower", "label", "seed", "train_seconds", *metric_names])
  for r in results:
    writer.writerow([r.spec.run_id, r.spec.row, r.spec.tower, r.spec.label, r.spec.seed,
                     r.train_seconds, *[r.metrics.get(m, "") for m in metric_names]])
  return buffer.getvalue()


def chart(results: list[RunResult], reference: dict, path: str, title: str) -> None:
  """Recall@100 per cell, mean with the seeds' min-max as error bars, popularity and oracle
  lines."""
  plt = pyplot()

  groups = _group(results)
  labels = [cell.label_row for cell in groups]
  means = [np.mean([r.metrics[TEST_METRIC] for r in runs]) for runs in groups.values()]
  lows = [m - min(r.metrics[TEST_METRIC] for r in runs) for m, runs in zip(means, groups.values())]
  highs = [max(r.metrics[TEST_METRIC] for r in runs) - m for m, runs in zip(means, groups.values())]
  colors = ["tab:red" if cell.row == UMA2 else "tab:orange" if cell.row in ABLATION_ROWS
            else "tab:blue" for cell in groups]
  fig, ax = plt.subplots(figsize=(max(6, 0.9 * len(labels) + 2), 4.5))
  ax.bar(range(len(labels)), means, yerr=[lows, highs], color=colors, capsize=4)
  for name, style in (("popularity", ":"), ("oracle", "--")):
    if name in reference:
      ax.axhline(reference[name][TEST_METRIC], color="gray", linestyle=style, label=name)
  ax.set_xticks(range(len(labels)))
  ax.set_xticklabels(labels, rotation=30, ha="right", fontsize=8)
  ax.set_ylabel("Recall@100 (mean, min-max over seeds)")
  ax.set_title(title, fontsize=10)
  if reference:
    ax.legend(fontsize=8)
  save_figure(fig, path)


def pyplot():
  """matplotlib.pyplot on the Agg backend: no display on a training host."""
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  return plt


def save_figure(fig, path: str) -> None:
  """Writes a chart to `path` whole or not at all (a temporary file renamed), then closes it."""
  plt = pyplot()
  for ax in fig.axes:  # A title wider than the figure is cut at its edge: wrap it instead.
    title = ax.get_title()
    if title:
      ax.set_title(textwrap.fill(title, int(TITLE_CHARS_PER_INCH * fig.get_figwidth())),
                   fontsize=ax.title.get_fontsize())
  fig.tight_layout()
  tmp = path + ".tmp.png"
  fig.savefig(tmp, dpi=120)
  plt.close(fig)
  os.replace(tmp, path)


def selection_note(report_dir: str, results: list[RunResult]) -> str:
  """How the runs' models were selected, read from a run's own config.json ("" without one)."""
  run = RunDir(os.path.join(report_dir, RUNS_DIR, results[0].spec.run_id))
  if not run.exists(run_dir.CONFIG):
    return ""
  config = run.read_json(run_dir.CONFIG)
  validation = config.get("validation", "last_day")
  if validation == "none":
    return ("Model selection: none (`--validation=none`): the weights after the last of "
            f"{config['epochs']} epochs; the test day is evaluated once, on them.")
  if config["early_stopping_patience"]:
    how = (f"early stopping (patience {config['early_stopping_patience']}) on the validation "
           f"records' {config['monitor']}, best epoch's weights restored")
  else:
    how = f"the weights after the last of {config['epochs']} epochs, no early stopping"
  if config.get("protocol") == "sequential":
    return (f"Model selection: {how}. The validation users (10 %) are held out of training like "
            "the test users (10 %); the test users are evaluated once, on the selected model, "
            "and never seen by selection.")
  return (f"Model selection: {how}. Validation `{validation}` is carved from the training days "
          "and held out of training; the test day is evaluated once, on the selected model, and "
          "never seen by selection.")


def finished_results(report_dir: str, grid: Sequence[RunSpec]) -> tuple[list[RunResult], dict, int]:
  """`load_results`, an error when no run has finished, and how many have not (logged)."""
  results, reference = load_results(report_dir, grid)
  if not results:
    raise ValueError(f"{report_dir}: no finished run to report on")
  missing = len(grid) - len(results)
  if missing:
    logging.warning("report on %d of %d runs (%d not finished)", len(results), len(grid), missing)
  return results, reference, missing


def with_selection_note(report_dir: str, results: list[RunResult], table: str) -> str:
  """`table` with the model-selection note after its title paragraph."""
  note = selection_note(report_dir, results)
  return table.replace("\n\n", f"\n\n{note}\n\n", 1) if note else table


def write_report(report_dir: str, grid: Sequence[RunSpec], title: str = "Table 1") -> dict:
  """Writes table1.md, runs.csv, comparisons.json and table1.png; returns what it wrote."""
  results, reference, missing = finished_results(report_dir, grid)
  table = with_selection_note(report_dir, results, table1_markdown(results, reference, title))
  paths = {name: os.path.join(report_dir, name) for name in
           ("table1.md", "runs.csv", "comparisons.json", "table1.png")}
  atomic_files.atomic_write_text(paths["table1.md"], table)
  atomic_files.atomic_write_text(paths["runs.csv"], runs_csv(results))
  atomic_files.atomic_write_text(paths["comparisons.json"], json.dumps(
      {"baselines": [dataclasses.asdict(c) for c in comparisons(results)],
       "orderings": orderings(results)}, indent=2))
  chart(results, reference, paths["table1.png"], title)
  return {"paths": paths, "table": table, "runs": len(results), "missing": missing}

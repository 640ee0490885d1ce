"""The REMI table (`experiment --table=remi`): IHN and RR on each multi-interest backbone.

    grid = grid_lib.remi_grid(seeds=(0, 1))          # MIND, ComiRec-SA, ComiRec-DR x 4 rows
    grid_lib.run_grid(grid, base, "reports/remi_default", experiment_file="experiment_remi.json")
    remi_table.write_report("reports/remi_default", grid, title)   # remi.md/.csv/.json/.png

Every cell trains under the sequential protocol (held-out users, history = their first 80 %
clicks; `sequential_evaluation`) on the sampled softmax (`--negatives=sampled`), with the hard
readout, and is selected on the validation users' Recall@50 (`grid.RunSpec._remi_config`).

Per backbone: Recall / HitRate @20 and @50 and NDCG@50 of each row, mean ± std over seeds; the
routing collapse (`routing_metrics`: the largest routing weight and the entropy of an interest's
routing row, averaged over interests and test users); each row against the backbone's base with
the lift of the mean Recall@50 and a paired t-test over the same test users (also on R@20, HR@20,
HR@50), and the change of the routing entropy (list-level: no test).
"""
from __future__ import annotations

import uma2_tf  # noqa: F401

import dataclasses
import json
import math
import os
from typing import Sequence

import numpy as np

from uma2_tf import atomic_files
from uma2_tf.experiment import report as report_lib
from uma2_tf.experiment import samplers_table
from uma2_tf.experiment.grid import REMI_BASE, REMI_ROWS, TOWER_NAMES, RunSpec
from uma2_tf.experiment.report import RunResult

METRIC = "recall@50"
TESTED = ("recall@20", "recall@50", "hitrate@20", "hitrate@50")
COLUMNS = (("recall@20", "R@20"), ("recall@50", "R@50"), ("hitrate@20", "HR@20"),
           ("hitrate@50", "HR@50"), ("ndcg@50", "NDCG@50"))
FILES = ("remi.md", "remi.csv", "remi.json", "remi.png")


def collapse(run: RunResult) -> dict | None:
  """A run's routing collapse averaged over its interests: {"max_weight", "entropy",
  "uniform_entropy"}, None without the diagnostic."""
  if not run.routing or not run.routing.get("entropy"):
    return None
  return {"max_weight": float(np.mean(run.routing["max_weight"])),
          "entropy": float(np.mean(run.routing["entropy"])),
          # A list per interest, or one number in runs written before it was.
          "uniform_entropy": float(np.mean(run.routing["uniform_entropy"]))}


def _collapse_mean(runs: Sequence[RunResult], key: str) -> float:
  values = [c[key] for c in map(collapse, runs) if c is not None]
  return float(np.mean(values)) if values else float("nan")


def _cells(results: Sequence[RunResult]) -> dict[tuple[str, str], list[RunResult]]:
  return samplers_table._cells(results, REMI_ROWS)


def comparisons(results: Sequence[RunResult]) -> list[tuple[str, str, report_lib.Comparison,
                                                             float]]:
  """(tower, row, comparison with its base, change of the mean routing entropy) per cell."""
  cells = _cells(results)
  out = []
  for (tower, row), runs in cells.items():
    if row == REMI_BASE or (tower, REMI_BASE) not in cells:
      continue
    base = cells[tower, REMI_BASE]
    c = report_lib.compare(runs, base, metric=METRIC, secondary=TESTED,
                           lift_metrics=[m for m, _ in COLUMNS])
    if c is not None:
      seeds = {r.spec.seed for r in runs} & {r.spec.seed for r in base}
      entropy = (_collapse_mean([r for r in runs if r.spec.seed in seeds], "entropy")
                 - _collapse_mean([r for r in base if r.spec.seed in seeds], "entropy"))
      out.append((tower, row, c, entropy))
  return out


def _versus(c: report_lib.Comparison, metric: str) -> str:
  p = c.p_value if metric == METRIC else c.p_values.get(metric, float("nan"))
  return (f"{100 * c.lift[metric]:+.2f} %, p {report_lib._p(p)} "
          f"{report_lib._significance(p)}")


def _number(value: float) -> str:
  return "n/a" if math.isnan(value) else f"{value:.4f}"


def remi_markdown(results: Sequence[RunResult], reference: dict, missing: Sequence[RunSpec],
                  title: str) -> str:
  seeds = sorted({r.spec.seed for r in results})
  cells = _cells(results)
  lines = [f"# {title}", "",
           f"Mean ± std over seeds {', '.join(map(str, seeds))} (runs per cell in brackets when "
           "fewer), on the held-out test users of the sequential protocol. Routing: the largest "
           "weight and the entropy (nats) of an interest's routing row over the user's history, "
           "averaged over interests and test users (uniform rows: the `uniform` entropy; a "
           "collapsed interest: weight near 1, entropy near 0). vs base: relative change of the "
           "mean over the seeds both rows ran, two-sided paired t-test over the same test users "
           "(seed-averaged; * p<0.05, ** p<0.01, *** p<0.001).", ""]
  for tower in dict.fromkeys(t for t, _ in cells):
    lines += [f"## {TOWER_NAMES.get(tower, tower)}", "",
              "| row | " + " | ".join(t for _, t in COLUMNS) +
              " | routing max weight | routing entropy (uniform) | epochs run | s/epoch |",
              "|---|" + "---:|" * (len(COLUMNS) + 4)]
    for (t, row), runs in cells.items():
      if t != tower:
        continue
      name = row + (f" ({len(runs)} runs)" if len(runs) < len(seeds) else "")
      s = samplers_table.seconds_per_epoch(runs)
      values = [samplers_table._mean_std(runs, m) for m, _ in COLUMNS]
      entropy = _collapse_mean(runs, "entropy")
      lines.append(f"| {name} | " + " | ".join(values) +
                   f" | {_number(_collapse_mean(runs, 'max_weight'))} | {_number(entropy)} "
                   f"({_number(_collapse_mean(runs, 'uniform_entropy'))}) | "
                   f"{', '.join(str(r.epochs_run) for r in runs)} | "
                   f"{'n/a' if math.isnan(s) else f'{s:.1f}'} |")
    for name in ("popularity", "oracle"):
      if name in reference:
        lines.append(f"| {name} (reference) | " + " | ".join(
            _number(reference[name][m]) if m in reference[name] else "n/a" for m, _ in COLUMNS)
            + " | | | | |")
    lines += ["", "| vs base | R@50 | R@20 | HR@20 | HR@50 | routing entropy | seeds |",
              "|---|---:|---:|---:|---:|---:|---:|"]
    for t, row, c, entropy in comparisons(results):
      if t == tower:
        lines.append(f"| {row} | {_versus(c, METRIC)} | {_versus(c, 'recall@20')} | "
                     f"{_versus(c, 'hitrate@20')} | {_versus(c, 'hitrate@50')} | "
                     f"{'n/a' if math.isnan(entropy) else f'{entropy:+.4f}'} | {c.seeds} |")
    lines.append("")
  if missing:
    lines += ["## Missing runs", "", "Not finished, so left out of the tables above:", ""]
    lines += [f"- {TOWER_NAMES.get(s.tower, s.tower)} {s.row}, seed {s.seed}" for s in missing]
    lines.append("")
  return "\n".join(lines) + "\n"


def remi_json(results: Sequence[RunResult], missing: Sequence[RunSpec]) -> dict:
  out = {"comparisons": [], "collapse": [],
         "missing": [dataclasses.asdict(s) for s in missing]}
  for tower, row, c, entropy in comparisons(results):
    fields = dataclasses.asdict(c)
    labels = {"label": fields.pop("row"), "against_label": fields.pop("baseline")}
    out["comparisons"].append({"tower": tower, "row": row, "against": REMI_BASE, **labels,
                               **fields, "entropy_change": entropy})
  for r in results:
    out["collapse"].append({"run_id": r.spec.run_id, "routing": r.routing})
  return out


def chart(results: Sequence[RunResult], path: str, title: str) -> None:
  """Recall@50 (top) and the mean routing entropy (bottom) of each backbone's rows: bars of the
  mean over seeds with their std."""
  plt = report_lib.pyplot()
  cells = _cells(results)
  towers = list(dict.fromkeys(t for t, _ in cells))
  rows = [row for row in REMI_ROWS if any(r == row for _, r in cells)]
  fig, axes = plt.subplots(2, 1, figsize=(max(6, 2.2 * len(towers) + 2), 7), sharex=True)

  def recall(tower, row):
    return samplers_table.chart_point(cells.get((tower, row), []), METRIC)

  def entropy(tower, row):
    return samplers_table.mean_std(
        [c["entropy"] for c in map(collapse, cells.get((tower, row), [])) if c is not None])

  for ax, label, point in zip(axes, ("Recall@50", "routing entropy (nats)"), (recall, entropy)):
    samplers_table.grouped_bars(ax, towers, rows, point, str)
    ax.set_ylabel(f"{label}\n(mean, std over seeds)", fontsize=9)
    ax.legend(fontsize=8)
  axes[0].set_title(title, fontsize=10)
  axes[-1].set_xticks(range(len(towers)))
  axes[-1].set_xticklabels([TOWER_NAMES.get(t, t) for t in towers], fontsize=9)
  report_lib.save_figure(fig, path)


def write_report(report_dir: str, grid: Sequence[RunSpec], title: str = "REMI") -> dict:
  """Writes remi.md, remi.csv, remi.json and remi.png; returns what it wrote."""
  results, reference, _ = report_lib.finished_results(report_dir, grid)
  done = {r.spec for r in results}
  missing = [s for s in grid if s not in done]
  table = report_lib.with_selection_note(report_dir, results,
                                         remi_markdown(results, reference, missing, title))
  paths = {name: os.path.join(report_dir, name) for name in FILES}
  atomic_files.atomic_write_text(paths["remi.md"], table)
  atomic_files.atomic_write_text(paths["remi.csv"], samplers_table.samplers_csv(results))
  atomic_files.atomic_write_text(paths["remi.json"], json.dumps(remi_json(results, missing),
                                                                indent=2))
  chart(results, paths["remi.png"], title)
  return {"paths": paths, "table": table, "runs": len(results), "missing": len(missing)}

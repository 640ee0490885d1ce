"""The negative samplers' table: each sampler's accuracy, popularity bias and cost, and the
samplers' claims decided on the numbers (`experiment --table=samplers`).

    samplers_table.write_report("reports/samplers_default", grid)  # samplers.md/.csv/.json/.png

(`grid` is `grid.samplers_grid(seeds)`, trained by `grid.run_grid`.) Per tower, one line per row
(`grid.SAMPLERS_TABLE_ROWS`): HitRate and Recall at 100 and 200, the oracle recall@100 (the share
of the simulator's true top 100 retrieved), the bias of the top 100 lists (catalog coverage,
average training clicks of a retrieved item, Gini of the retrieval counts, share of tail items),
mean ± std over seeds; training seconds per epoch; and Recall@100 against the uniform sampler
(SS-ABC(random)) and UMA² of the same tower, paired over the same test users and seeds
(`report.compare`). The popularity and oracle retrievers are reference rows.

`claims` decides the samplers' claims (`CLAIMS`) per tower: Recall@100 by the paired test (holds:
the claimed sign and p < 0.05; does not hold: the other sign and p < 0.05; else not significant);
avg popularity@100, a list-level metric with no per-user value, by the seeds (holds: every seed's
pair has the claimed sign; does not hold: every seed's has the other; else not significant).
"""
from __future__ import annotations

import uma2_tf  # noqa: F401

import csv
import dataclasses
import io
import json
import math
import os
from typing import Callable, Sequence

import numpy as np

from uma2_tf import atomic_files
from uma2_tf.experiment import report as report_lib
from uma2_tf.experiment.grid import (HYBRID, IN_BATCH, IN_BATCH_LOGQ, MIXED, POPULARITY,
                                     SAMPLERS_TABLE_ROWS, SS_A, SS_ABC_FIXED, SS_ABC_RANDOM,
                                     TOWER_NAMES, UMA2, RunSpec)
from uma2_tf.experiment.report import RunResult, TEST_METRIC

UNIFORM = SS_ABC_RANDOM
POPULARITY_METRIC = "avg_popularity@100"
# (metric, column title) of the table, each mean ± std over seeds.
COLUMNS = (("hitrate@100", "HR@100"), ("recall@100", "R@100"), ("hitrate@200", "HR@200"),
           ("recall@200", "R@200"), ("oracle_recall@100", "oracle R@100"),
           ("coverage@100", "coverage@100"), (POPULARITY_METRIC, "avg pop@100"),
           ("gini@100", "gini@100"), ("tail_share@100", "tail share@100"))
# Row -> how it draws its negatives (every row but UMA² is a plain GMM, no NSDN).
ROW_NOTES = {
    SS_A: "exposed-unclicked items only, 25 per positive, BCE",
    UNIFORM: "25 uniform corpus items per positive, BCE",
    POPULARITY: "25 corpus items per positive from popularity^0.75 (training clicks), BCE",
    IN_BATCH: "softmax over the batch's positives, no logQ correction",
    IN_BATCH_LOGQ: "softmax over the batch's positives, logQ from training click counts",
    MIXED: "in-batch plus uniform corpus items shared by the batch, logQ from click counts",
    HYBRID: "half of the 25 from space B (recalled, not exposed), half uniform, BCE",
    SS_ABC_FIXED: "A:B:C = 1:4:20, BCE",
    UMA2: "A:B:C = 1:4:20, NSDN inverse-propensity weights",
}
# (id, claim, row, reference, metric, claimed sign of row - reference).
CLAIMS = (
    ("a", "popularity^0.75 beats uniform", POPULARITY, UNIFORM, TEST_METRIC, 1),
    # In-batch negatives are drawn in proportion to clicks: without logQ popular items are
    # over-penalised as negatives, so the model demotes them (Yi et al., 2019).
    ("b", "without logQ, in-batch demotes popular items", IN_BATCH, IN_BATCH_LOGQ,
     POPULARITY_METRIC, -1),
    ("b", "logQ raises in-batch's recall", IN_BATCH_LOGQ, IN_BATCH, TEST_METRIC, 1),
    ("c", "hybrid beats uniform (its naive part alone)", HYBRID, UNIFORM, TEST_METRIC, 1),
    ("d", "SS-A is below uniform", SS_A, UNIFORM, TEST_METRIC, -1),
    ("d", "SS-A is below popularity^0.75", SS_A, POPULARITY, TEST_METRIC, -1),
)


def row_name(row: str) -> str:
  """A row as this table names it: the uniform sampler is SS-ABC(random)."""
  return {UNIFORM: "uniform (SS-ABC(random))"}.get(row, row)


def _cells(results: Sequence[RunResult],
           order: Sequence[str] = SAMPLERS_TABLE_ROWS) -> dict[tuple[str, str], list[RunResult]]:
  """(tower, row) -> its runs; towers in the order they come, rows in the table's `order`."""
  towers = list(dict.fromkeys(r.spec.tower for r in results))
  rows = [row for row in order if any(r.spec.row == row for r in results)]
  rows += list(dict.fromkeys(r.spec.row for r in results if r.spec.row not in rows))
  cells = {(t, row): [r for r in results if (r.spec.tower, r.spec.row) == (t, row)]
           for t in towers for row in rows}
  return {key: runs for key, runs in cells.items() if runs}


def _number(value: float, metric: str) -> str:
  return format(value, ".1f" if metric.startswith("avg_popularity") else ".4f")


def _mean_std(runs: Sequence[RunResult], metric: str) -> str:
  values = [r.metrics[metric] for r in runs if metric in r.metrics]
  if len(values) < len(runs) or not values:
    return "n/a"
  if len(values) == 1:
    return _number(values[0], metric)
  return f"{_number(np.mean(values), metric)} ± {_number(np.std(values, ddof=1), metric)}"


def seconds_per_epoch(runs: Sequence[RunResult]) -> float:
  """Mean over runs of training seconds / epochs run (nan without epochs_run)."""
  values = [r.train_seconds / r.epochs_run for r in runs if r.epochs_run]
  return float(np.mean(values)) if values else float("nan")


def _versus(c: report_lib.Comparison | None) -> str:
  if c is None:
    return ""
  return (f"{100 * c.lift[TEST_METRIC]:+.2f} %, p {report_lib._p(c.p_value)} "
          f"{report_lib._significance(c.p_value)}")


def _comparisons(results: Sequence[RunResult]) -> dict[tuple[str, str, str],
                                                      report_lib.Comparison]:
  """(tower, row, against) -> every cell against uniform and against UMA² of its tower."""
  cells = _cells(results)
  out = {}
  for (tower, row), runs in cells.items():
    for against in (UNIFORM, UMA2):
      if row != against and (tower, against) in cells:
        c = report_lib.compare(runs, cells[tower, against])
        if c is not None:
          out[tower, row, against] = c
  return out


def comparisons(results: Sequence[RunResult]) -> list[dict]:
  """`_comparisons` as JSON-ready dicts (samplers.json)."""
  out = []
  for (tower, row, against), c in _comparisons(results).items():
    fields = dataclasses.asdict(c)
    labels = {"label": fields.pop("row"), "against_label": fields.pop("baseline")}
    out.append({"tower": tower, "row": row, "against": against, **labels, **fields})
  return out


def _verdict(signs: Sequence[float], sign: int, p: float | None) -> str:
  """`signs`: the differences row - reference (one for a paired test with its `p`, else one per
  seed)."""
  if p is not None:
    if math.isnan(p) or p >= 0.05:
      return "not significant"
    return "holds" if signs[0] * sign > 0 else "does not hold"
  if all(s * sign > 0 for s in signs):
    return "holds"
  return "does not hold" if all(s * sign < 0 for s in signs) else "not significant"


def claims(results: Sequence[RunResult]) -> list[dict]:
  """Each claim of `CLAIMS` on each tower that ran both rows: values, lift, p, verdict."""
  cells = _cells(results)
  towers = list(dict.fromkeys(tower for tower, _ in cells))
  out = []
  for tower in towers:
    for claim_id, claim, row, reference, metric, sign in CLAIMS:
      if (tower, row) not in cells or (tower, reference) not in cells:
        continue
      by_seed = {r.spec.seed: r for r in cells[tower, reference]}
      pairs = [(r, by_seed[r.spec.seed]) for r in cells[tower, row]
               if r.spec.seed in by_seed and metric in r.metrics
               and metric in by_seed[r.spec.seed].metrics]
      if not pairs:
        continue
      ours = float(np.mean([a.metrics[metric] for a, _ in pairs]))
      theirs = float(np.mean([b.metrics[metric] for _, b in pairs]))
      per_seed = [a.metrics[metric] - b.metrics[metric] for a, b in pairs]
      if metric == TEST_METRIC:
        c = report_lib.compare(cells[tower, row], cells[tower, reference])
        p, test = c.p_value, "paired t-test over users"
        verdict = _verdict([c.mean_difference], sign, p)
      else:
        p, test = float("nan"), "direction on every seed"
        verdict = _verdict(per_seed, sign, None)
      out.append({"id": claim_id, "claim": claim, "tower": tower, "row": row,
                  "reference": reference, "metric": metric, "row_value": ours,
                  "reference_value": theirs,
                  "lift": ours / theirs - 1 if theirs > 0 else float("nan"), "p_value": p,
                  "test": test, "seeds": len(pairs),
                  "seeds_agreeing": sum(d * sign > 0 for d in per_seed), "verdict": verdict})
  return out


def samplers_markdown(results: Sequence[RunResult], reference: dict, title: str) -> str:
  cells = _cells(results)
  seeds = sorted({r.spec.seed for r in results})
  versus = _comparisons(results)
  lines = [f"# {title}", "",
           f"Mean ± std over seeds {', '.join(map(str, seeds))} (runs per cell in brackets when "
           "fewer). Every row but UMA² is a plain GMM (no NSDN). oracle R@100: share of the "
           "simulator's true top 100 retrieved; coverage: share of the catalog in some top-100 "
           "list; avg pop: mean training clicks of a retrieved item; gini: of the items' retrieval "
           "counts; tail share: retrieved slots holding tail items. s/epoch: training seconds per "
           "epoch. vs uniform / vs UMA²: relative change of the mean Recall@100 against that row "
           "of the same tower, and a two-sided paired t-test over the same test users (seed-"
           "averaged; * p<0.05, ** p<0.01, *** p<0.001).", ""]
  header = ("| row | " + " | ".join(t for _, t in COLUMNS) +
            " | s/epoch | vs uniform: lift R@100, p | vs UMA²: lift R@100, p |")
  rule = "|---|" + "---:|" * (len(COLUMNS) + 3)
  for tower in dict.fromkeys(t for t, _ in cells):
    lines += [f"## {TOWER_NAMES.get(tower, tower)}", "", header, rule]
    for (t, row), runs in cells.items():
      if t != tower:
        continue
      name = row_name(row) + (f" ({len(runs)} runs)" if len(runs) < len(seeds) else "")
      s = seconds_per_epoch(runs)
      lines.append(f"| {name} | " + " | ".join(_mean_std(runs, m) for m, _ in COLUMNS) +
                   f" | {'n/a' if math.isnan(s) else f'{s:.1f}'} | "
                   f"{'—' if row == UNIFORM else _versus(versus.get((tower, row, UNIFORM)))} | "
                   f"{'—' if row == UMA2 else _versus(versus.get((tower, row, UMA2)))} |")
    for name in ("popularity", "oracle"):
      if name in reference:
        lines.append(f"| {name} (reference) | " + " | ".join(
            _number(reference[name][m], m) if m in reference[name] else "n/a"
            for m, _ in COLUMNS) + " | | | |")
    lines.append("")
  found = claims(results)
  if found:
    lines += ["## Claims", "",
              "Decided per tower from the runs above. Recall@100: the paired t-test (holds: the "
              "claimed sign and p < 0.05; does not hold: the other sign and p < 0.05; else not "
              "significant). avg pop@100 is a list-level metric with no per-user value: holds when "
              "every seed's pair has the claimed sign, does not hold when every seed's has the "
              "other, else not significant. lift: row over reference, means over the seeds both "
              "ran.", "",
              "| | claim | tower | metric | row | reference | lift | p | seeds agreeing | "
              "verdict |", "|---|---|---|---|---:|---:|---:|---:|---:|---|"]
    for c in found:
      metric = c["metric"]
      lines.append(
          f"| ({c['id']}) | {c['claim']} | {TOWER_NAMES.get(c['tower'], c['tower'])} | {metric} | "
          f"{row_name(c['row'])}: {_number(c['row_value'], metric)} | "
          f"{row_name(c['reference'])}: {_number(c['reference_value'], metric)} | "
          f"{100 * c['lift']:+.2f} % | "
          f"{'n/a (list-level)' if metric != TEST_METRIC else report_lib._p(c['p_value'])} | "
          f"{c['seeds_agreeing']}/{c['seeds']} | {c['verdict']} |")
    lines.append("")
  lines += ["## Rows", ""]
  rows = list(dict.fromkeys(row for _, row in cells))
  lines += [f"- {row_name(row)}: {ROW_NOTES.get(row, row)}" for row in rows]
  return "\n".join(lines) + "\n"


def samplers_csv(results: Sequence[RunResult], worlds: Sequence[str] | None = None) -> str:
  """One line per run; `worlds`: each run's dataset, as a first column (runs of several worlds)."""
  buffer = io.StringIO()
  metric_names = sorted({m for r in results for m in r.metrics})
  writer = csv.writer(buffer, lineterminator="\n")
  first = [] if worlds is None else ["world"]
  writer.writerow(first + ["run_id", "row", "tower", "label", "seed", "train_seconds",
                           "epochs_run", "seconds_per_epoch", *metric_names])
  for i, r in enumerate(results):
    s = seconds_per_epoch([r])
    writer.writerow(([] if worlds is None else [worlds[i]]) + [
        r.spec.run_id, r.spec.row, r.spec.tower, r.spec.label, r.spec.seed, r.train_seconds,
        "" if r.epochs_run is None else r.epochs_run, "" if math.isnan(s) else round(s, 2),
        *[r.metrics.get(m, "") for m in metric_names]])
  return buffer.getvalue()


def mean_std(values: Sequence[float]) -> tuple[float, float] | None:
  """(mean, std) of a cell's values over seeds (std 0 for one value), None for none."""
  if not len(values):
    return None
  return float(np.mean(values)), float(np.std(values, ddof=1)) if len(values) > 1 else 0.0


def chart_point(runs: Sequence[RunResult], metric: str) -> tuple[float, float] | None:
  """A cell in a chart: the mean of `metric` over its runs and their std (0 for one run), None
  when no run has it."""
  return mean_std([r.metrics[metric] for r in runs if metric in r.metrics])


def grouped_bars(ax, groups: Sequence, series: Sequence, point: Callable, label: Callable) -> None:
  """Bars on `ax`: the groups along x, within each a bar per series side by side, its height
  and error bar `point(group, series)` = (mean, std), or no bar for None."""
  width = 0.8 / max(1, len(series))
  for j, one in enumerate(series):
    bars = [(i + (j - (len(series) - 1) / 2) * width, p) for i, group in enumerate(groups)
            for p in [point(group, one)] if p]
    ax.bar([x for x, _ in bars], [p[0] for _, p in bars], width=width,
           yerr=[p[1] for _, p in bars], capsize=3, label=label(one))


def chart(results: Sequence[RunResult], reference: dict, path: str, title: str) -> None:
  """Recall@100 (top) and avg popularity@100 (bottom) per row, one bar per tower: the mean with
  the seeds' std as error bars; the popularity and oracle retrievers as lines."""
  plt = report_lib.pyplot()

  cells = _cells(results)
  towers = list(dict.fromkeys(t for t, _ in cells))
  rows = list(dict.fromkeys(row for _, row in cells))
  fig, axes = plt.subplots(2, 1, figsize=(max(7, 1.1 * len(rows) + 2), 8), sharex=True)
  for ax, metric, label in zip(axes, (TEST_METRIC, POPULARITY_METRIC),
                               ("Recall@100", "avg popularity@100 (training clicks)")):
    grouped_bars(ax, rows, towers,
                 lambda row, tower, metric=metric: chart_point(cells.get((tower, row), []), metric),
                 lambda tower: TOWER_NAMES.get(tower, tower))
    for name, style in (("popularity", ":"), ("oracle", "--")):
      if metric in reference.get(name, {}):
        ax.axhline(reference[name][metric], color="gray", linestyle=style, label=name)
    ax.set_ylabel(f"{label}\n(mean, std over seeds)", fontsize=9)
    ax.legend(fontsize=8)
  axes[0].set_title(title, fontsize=10)
  axes[-1].set_xticks(range(len(rows)))
  axes[-1].set_xticklabels([row_name(r) for r in rows], rotation=30, ha="right", fontsize=8)
  report_lib.save_figure(fig, path)


def write_report(report_dir: str, grid: Sequence[RunSpec],
                 title: str = "Negative samplers") -> dict:
  """Writes samplers.md, samplers.csv, samplers.json and samplers.png; returns what it wrote."""
  results, reference, missing = report_lib.finished_results(report_dir, grid)
  table = report_lib.with_selection_note(report_dir, results,
                                         samplers_markdown(results, reference, title))
  paths = {name: os.path.join(report_dir, name) for name in
           ("samplers.md", "samplers.csv", "samplers.json", "samplers.png")}
  atomic_files.atomic_write_text(paths["samplers.md"], table)
  atomic_files.atomic_write_text(paths["samplers.csv"], samplers_csv(results))
  atomic_files.atomic_write_text(paths["samplers.json"], json.dumps(
      {"comparisons": comparisons(results), "claims": claims(results)}, indent=2))
  chart(results, reference, paths["samplers.png"], title)
  return {"paths": paths, "table": table, "runs": len(results), "missing": missing}

"""Where UMA²'s gain comes from, world by world (`experiment --table=ablation`).

    worlds = ["uma2_simulated/default", "uma2_simulated/noise_inf"]
    grid = grid_lib.ablation_grid(seeds=(0, 1))
    for world in worlds:                      # each world's runs in its own dir
      grid_lib.run_grid(grid, dataclasses.replace(base, dataset=world),
                        ablation_table.world_dir("reports/ablation", world))
    ablation_table.write_report("reports/ablation", worlds, grid)  # ablation.md/.csv/.json/.png

UMA² differs from the GMM on its own negatives (SS-ABC(fixed)) in two ways: the NSDN heads' ER/RE
tasks train the embeddings the heads share with the tower, and the heads' propensities weight the
A and B negatives. Two ablations take them apart (`grid.ABLATION_TABLE_ROWS`): multi-task only (the
heads and their tasks, every negative weighted 1) and own tables (the weights, with the heads on
their own embedding tables so their tasks cannot shape the tower's).

Per world and tower: HR@100, R@100, R@200 and oracle R@100 of each row, mean ± std over seeds, the
epochs each seed ran and the training seconds per epoch; the named comparisons (`PAIRS`) with the
lift of the mean R@100 and the paired test over the same test users (`report.compare`), and the
lift of oracle R@100 (list-level: per_user.npz has no per-user values of it, so no test); and the
decomposition of UMA²'s gain over GMM(fixed) (`decomposition`): the share of it each ablation
reaches. A partial grid is reported from the runs that finished, naming the missing ones.
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
from uma2_tf.experiment.grid import (ABLATION_TABLE_ROWS, SS_ABC_FIXED, SS_ABC_RANDOM,
                                     TOWER_NAMES, UMA2, UMA2_MULTITASK, UMA2_OWN_TABLES,
                                     UMA2_SELF_NORM, RunSpec)
from uma2_tf.experiment.report import RunResult, TEST_METRIC

ORACLE_METRIC = "oracle_recall@100"
# (metric, column title) of the table, each mean ± std over seeds.
COLUMNS = (("hitrate@100", "HR@100"), (TEST_METRIC, "R@100"), ("recall@200", "R@200"),
           (ORACLE_METRIC, "oracle R@100"))
ROW_NAMES = {SS_ABC_RANDOM: "GMM(random)", SS_ABC_FIXED: "GMM(fixed)",
             UMA2_MULTITASK: "multi-task only", UMA2_OWN_TABLES: "own tables", UMA2: "UMA²",
             UMA2_SELF_NORM: "self-norm"}
ROW_NOTES = {
    SS_ABC_RANDOM: "SS-ABC(random): the GMM on 25 uniform corpus negatives per positive, BCE",
    SS_ABC_FIXED: "SS-ABC(fixed): the GMM on UMA²'s negatives (A:B:C = 1:4:20), BCE",
    UMA2_MULTITASK: "UMA² (multi-task only): the NSDN heads and their ER/RE terms, every negative "
                    "weighted 1 (`--propensity_weights=false`)",
    UMA2_OWN_TABLES: "UMA² (own tables): UMA² with the heads on their own embedding tables "
                     "(`--noshare_embeddings`), so only the weights reach the tower",
    UMA2: "UMA²: the ER/RE tasks on the shared embeddings and their inverse-propensity weights",
    UMA2_SELF_NORM: "UMA² (self-norm): UMA² with each space's weights divided by their batch mean",
}
# (row, against, what the difference measures): the comparisons of every world and tower.
PAIRS = (
    (UMA2, SS_ABC_RANDOM, "the headline gain"),
    (UMA2, SS_ABC_FIXED, "UMA²'s loss on the same negatives"),
    (UMA2_MULTITASK, SS_ABC_FIXED, "the ER/RE tasks through the shared embeddings"),
    (UMA2_OWN_TABLES, SS_ABC_FIXED, "the weights alone"),
    (UMA2, UMA2_MULTITASK, "what the weights add on top"),
    (UMA2, UMA2_OWN_TABLES, "what sharing the embeddings adds"),
    (UMA2_SELF_NORM, UMA2, "self-normalising the weights"),
)
# A world's cells for the decomposition: UMA²'s gain over the GMM, and the two ablations.
_DECOMPOSED = (SS_ABC_FIXED, UMA2, UMA2_MULTITASK, UMA2_OWN_TABLES)
FILES = ("ablation.md", "ablation.csv", "ablation.json", "ablation.png")


def world_name(dataset: str) -> str:
  """A world's name in paths and headings: the dataset's config (`uma2_simulated/noise_inf` ->
  `noise_inf`)."""
  return dataset.split("/")[-1]


def world_dir(report_dir: str, dataset: str) -> str:
  """Where a world's runs go: `<report_dir>/<world config name>` (its `runs/` inside)."""
  return os.path.join(report_dir, world_name(dataset))


def check_worlds(datasets: Sequence[str]) -> None:
  """ValueError unless the worlds are distinct in their dirs (config names)."""
  names = [world_name(d) for d in datasets]
  repeated = sorted({n for n in names if names.count(n) > 1})
  if not datasets or repeated:
    raise ValueError(f"expected distinct worlds, got {', '.join(datasets) or 'none'}"
                     + (f" (config name {', '.join(repeated)} repeats)" if repeated else ""))


@dataclasses.dataclass
class World:
  """One world's finished runs, its reference retrievers' metrics and its unfinished cells."""

  dataset: str
  results: list[RunResult]
  reference: dict
  missing: list[RunSpec]


def load_worlds(report_dir: str, datasets: Sequence[str], grid: Sequence[RunSpec]) -> list[World]:
  """Every world's finished runs of `grid`; ValueError when no world has any."""
  check_worlds(datasets)
  worlds = []
  for dataset in datasets:
    # Not `report.finished_results`: a world with no finished run is a gap to report, not an error.
    results, reference = report_lib.load_results(world_dir(report_dir, dataset), grid)
    done = {r.spec for r in results}
    worlds.append(World(dataset, results, reference, [s for s in grid if s not in done]))
  if not any(w.results for w in worlds):
    raise ValueError(f"{report_dir}: no finished run to report on")
  return worlds


def _cells(results: Sequence[RunResult]) -> dict[tuple[str, str], list[RunResult]]:
  return samplers_table._cells(results, ABLATION_TABLE_ROWS)


def comparisons(results: Sequence[RunResult]) -> list[tuple[str, str, str, str,
                                                            report_lib.Comparison]]:
  """(tower, row, against, measures, comparison) for each pair of `PAIRS` a tower ran."""
  cells = _cells(results)
  out = []
  for tower in dict.fromkeys(t for t, _ in cells):
    for row, against, measures in PAIRS:
      if (tower, row) in cells and (tower, against) in cells:
        c = report_lib.compare(cells[tower, row], cells[tower, against],
                               extra_lifts=(ORACLE_METRIC,))
        if c is not None:
          out.append((tower, row, against, measures, c))
  return out


def decomposition(results: Sequence[RunResult]) -> list[dict]:
  """Per tower and metric (R@100, oracle R@100): UMA²'s gain over GMM(fixed) and the share of it
  multi-task only and own tables reach, (row - GMM(fixed)) / (UMA² - GMM(fixed)) on the means over
  the seeds all four ran; the shares are nan when UMA² does not gain."""
  cells = _cells(results)
  out = []
  for tower in dict.fromkeys(t for t, _ in cells):
    if any((tower, row) not in cells for row in _DECOMPOSED):
      continue
    seeds = sorted(set.intersection(*({r.spec.seed for r in cells[tower, row]}
                                      for row in _DECOMPOSED)))
    for metric in (TEST_METRIC, ORACLE_METRIC):
      runs = {row: [r for r in cells[tower, row] if r.spec.seed in seeds] for row in _DECOMPOSED}
      if not seeds or any(metric not in r.metrics for rs in runs.values() for r in rs):
        continue
      means = {row: float(np.mean([r.metrics[metric] for r in rs])) for row, rs in runs.items()}
      base, gain = means[SS_ABC_FIXED], means[UMA2] - means[SS_ABC_FIXED]
      shares = {row: (means[row] - base) / gain if gain > 0 else float("nan")
                for row in (UMA2_MULTITASK, UMA2_OWN_TABLES)}
      out.append({"tower": tower, "metric": metric, "seeds": seeds, "means": means, "gain": gain,
                  "lift": gain / base if base > 0 else float("nan"),
                  "share_multitask": shares[UMA2_MULTITASK],
                  "share_own_tables": shares[UMA2_OWN_TABLES]})
  return out


def _percent(value: float) -> str:
  return "n/a" if math.isnan(value) else f"{100 * value:.0f} %"


def _decomposition_line(d: dict) -> str:
  name = "R@100" if d["metric"] == TEST_METRIC else "oracle R@100"
  head = (f"{name} (seeds {', '.join(map(str, d['seeds']))}): UMA² {d['gain']:+.4f} "
          f"({100 * d['lift']:+.2f} %) over GMM(fixed)")
  if not d["gain"] > 0:
    return f"{head}: no gain to decompose."
  together = d["share_multitask"] + d["share_own_tables"]
  return (f"{head}; multi-task only reaches {_percent(d['share_multitask'])} of it, own tables "
          f"{_percent(d['share_own_tables'])} (together {_percent(together)}).")


def _epochs(runs: Sequence[RunResult]) -> str:
  epochs = [r.epochs_run for r in sorted(runs, key=lambda r: r.spec.seed)]
  return "n/a" if None in epochs else ", ".join(map(str, epochs))


def _world_section(world: World, seeds: Sequence[int]) -> list[str]:
  lines = [f"## {world.dataset}", ""]
  if not world.results:
    return lines + ["No finished run.", ""]
  cells = _cells(world.results)
  pairs = comparisons(world.results)
  found = decomposition(world.results)
  for tower in dict.fromkeys(t for t, _ in cells):
    lines += [f"### {TOWER_NAMES.get(tower, tower)}", "",
              "| row | " + " | ".join(t for _, t in COLUMNS) + " | epochs run | s/epoch |",
              "|---|" + "---:|" * (len(COLUMNS) + 2)]
    for (t, row), runs in cells.items():
      if t != tower:
        continue
      name = ROW_NAMES.get(row, row) + (f" ({len(runs)} runs)" if len(runs) < len(seeds) else "")
      s = samplers_table.seconds_per_epoch(runs)
      values = [samplers_table._mean_std(runs, m) for m, _ in COLUMNS]
      lines.append(f"| {name} | " + " | ".join(values) +
                   f" | {_epochs(runs)} | {'n/a' if math.isnan(s) else f'{s:.1f}'} |")
    for name in ("popularity", "oracle"):
      if name in world.reference:
        lines.append(f"| {name} (reference) | " + " | ".join(
            samplers_table._number(world.reference[name][m], m) if m in world.reference[name]
            else "n/a" for m, _ in COLUMNS) + " | | |")
    lines += ["", "| comparison | what it measures | lift R@100, p | lift oracle R@100 | seeds |",
              "|---|---|---:|---:|---:|"]
    for t, row, against, measures, c in pairs:
      if t == tower:
        oracle = c.lift.get(ORACLE_METRIC, float("nan"))
        lines.append(f"| {ROW_NAMES[row]} vs {ROW_NAMES[against]} | {measures} | "
                     f"{samplers_table._versus(c)} | "
                     f"{'n/a' if math.isnan(oracle) else f'{100 * oracle:+.2f} %'} | {c.seeds} |")
    decomposed = [d for d in found if d["tower"] == tower]
    lines += ["", "Decomposition of UMA²'s gain over GMM(fixed):" if decomposed else
              "Decomposition: needs GMM(fixed), UMA², multi-task only and own tables.", ""]
    lines += [f"- {_decomposition_line(d)}" for d in decomposed]
    lines.append("")
  return lines


def _missing_lines(worlds: Sequence[World]) -> list[str]:
  """One line per world and cell with unfinished seeds."""
  lines = []
  for world in worlds:
    cells: dict[tuple[str, str], list[int]] = {}
    for spec in world.missing:
      cells.setdefault((spec.tower, spec.row), []).append(spec.seed)
    lines += [f"- {world.dataset}: {TOWER_NAMES.get(tower, tower)} {ROW_NAMES.get(row, row)}, "
              f"seed{'s' if len(seeds) > 1 else ''} {', '.join(map(str, seeds))}"
              for (tower, row), seeds in cells.items()]
  return lines


def ablation_markdown(worlds: Sequence[World], title: str) -> str:
  seeds = sorted({r.spec.seed for w in worlds for r in w.results})
  lines = [f"# {title}", "",
           f"Mean ± std over seeds {', '.join(map(str, seeds))} (runs per cell in brackets when "
           "fewer); epochs run: per seed; s/epoch: training seconds per epoch. oracle R@100: share "
           "of the simulator's true top 100 retrieved. lift R@100: relative change of the mean "
           "Recall@100 over the seeds both rows ran, with a two-sided paired t-test over the same "
           "test users (seed-averaged; * p<0.05, ** p<0.01, *** p<0.001); the oracle recall is a "
           "list-level metric with no per-user values, so its lift has no test. Decomposition: "
           "(row - GMM(fixed)) / (UMA² - GMM(fixed)) of the means over the seeds the four cells "
           "ran, for multi-task only (what the ER/RE tasks give through the shared embeddings) "
           "and own tables (what the weights give alone).", ""]
  for world in worlds:
    lines += _world_section(world, seeds)
  missing = _missing_lines(worlds)
  if missing:
    lines += ["## Missing runs", "", "Not finished, so left out of the tables above:", "",
              *missing, ""]
  lines += ["## Rows", ""]
  rows = [row for row in ABLATION_TABLE_ROWS if any(r.spec.row == row for w in worlds
                                                    for r in w.results)]
  lines += [f"- {ROW_NAMES[row]}: {ROW_NOTES[row]}" for row in rows]
  return "\n".join(lines) + "\n"


def ablation_json(worlds: Sequence[World]) -> dict:
  out = {"worlds": [w.dataset for w in worlds], "comparisons": [], "decomposition": [],
         "missing": [{"world": w.dataset, **dataclasses.asdict(s)} for w in worlds
                     for s in w.missing]}
  for world in worlds:
    for tower, row, against, measures, c in comparisons(world.results):
      fields = dataclasses.asdict(c)
      labels = {"label": fields.pop("row"), "against_label": fields.pop("baseline")}
      out["comparisons"].append({"world": world.dataset, "tower": tower, "row": row,
                                 "against": against, "measures": measures, **labels, **fields})
    out["decomposition"] += [{"world": world.dataset, **d} for d in decomposition(world.results)]
  return out


def chart(worlds: Sequence[World], path: str, title: str) -> None:
  """R@100 (top) and oracle R@100 (bottom) of each row across the worlds in order: the mean with
  the seeds' std as error bars; one line per row (and tower, dashed beyond the first)."""
  plt = report_lib.pyplot()

  cells = {w.dataset: _cells(w.results) for w in worlds}
  keys = list(dict.fromkeys(key for c in cells.values() for key in c))
  keys.sort(key=lambda key: ABLATION_TABLE_ROWS.index(key[1]))
  towers = list(dict.fromkeys(t for t, _ in keys))
  colors = dict(zip(ABLATION_TABLE_ROWS, plt.rcParams["axes.prop_cycle"].by_key()["color"]))
  offset = 0.25 / max(1, len(keys))  # Side by side at each world, error bars apart.
  fig, axes = plt.subplots(2, 1, figsize=(max(6, 1.6 * len(worlds) + 3), 8), sharex=True)
  for ax, metric, label in zip(axes, (TEST_METRIC, ORACLE_METRIC), ("Recall@100",
                                                                      "oracle Recall@100")):
    for j, (tower, row) in enumerate(keys):
      xs, means, errors = [], [], []
      for i, world in enumerate(worlds):
        point = samplers_table.chart_point(cells[world.dataset].get((tower, row), []), metric)
        if point:
          xs.append(i + (j - (len(keys) - 1) / 2) * offset)
          means.append(point[0])
          errors.append(point[1])
      name = ROW_NAMES[row] + (f" ({TOWER_NAMES.get(tower, tower)})" if len(towers) > 1 else "")
      ax.errorbar(xs, means, yerr=errors, capsize=3, marker="o", color=colors[row], label=name,
                  linestyle="-" if tower == towers[0] else "--")
    ax.set_ylabel(f"{label}\n(mean, std over seeds)", fontsize=9)
    ax.legend(fontsize=8)
  axes[0].set_title(title, fontsize=10)
  axes[-1].set_xticks(range(len(worlds)))
  axes[-1].set_xticklabels([world_name(w.dataset) for w in worlds], fontsize=9)
  report_lib.save_figure(fig, path)


def write_report(report_dir: str, datasets: Sequence[str], grid: Sequence[RunSpec],
                 title: str = "Where UMA²'s gain comes from") -> dict:
  """Writes ablation.md, ablation.csv, ablation.json and ablation.png; returns what it wrote."""
  worlds = load_worlds(report_dir, datasets, grid)
  first = next(w for w in worlds if w.results)  # Every world's runs share the selection.
  table = report_lib.with_selection_note(world_dir(report_dir, first.dataset), first.results,
                                         ablation_markdown(worlds, title))
  paths = {name: os.path.join(report_dir, name) for name in FILES}
  atomic_files.atomic_write_text(paths["ablation.md"], table)
  atomic_files.atomic_write_text(paths["ablation.csv"], samplers_table.samplers_csv(
      [r for w in worlds for r in w.results], [w.dataset for w in worlds for _ in w.results]))
  atomic_files.atomic_write_text(paths["ablation.json"],
                                 json.dumps(ablation_json(worlds), indent=2))
  chart(worlds, paths["ablation.png"], title)
  missing = sum(len(w.missing) for w in worlds)
  return {"paths": paths, "table": table, "runs": sum(len(w.results) for w in worlds),
          "missing": missing}

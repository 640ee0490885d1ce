"""The report of a sampler search over seeds, beside the exhaustive grid of its candidates.

    report = autosample_report.write_report("reports/autosample_default_youtube_dnn",
                                            ["…/seed0", "…/seed1"], grid_dir="reports/samplers")
    report["table"], report["paths"]      # autosample.md, autosample_report.json, .png

Per seed: each phase's probes and their validation scores, the sampler committed to and the
validation score after the commit, the phase selected. Then the search's test metrics (mean ± std
over seeds) and its compute (training steps and seconds, probes included). With `grid_dir`, an
experiment report dir holding the candidates' own runs (`experiment --table=samplers` for the
default candidates: `search_space.Candidate.grid_row`) on the same tower and seeds: each
candidate trained to completion, the best of them, the search's Recall@100 as a share of the
best's with a paired t-test over the same test users, and the search's compute against the whole
grid's (every candidate trained once per seed). Without it the grid's steps are estimated as
candidates × `--epochs` × steps per epoch, labelled as such.
"""
from __future__ import annotations

import uma2_tf  # noqa: F401

import dataclasses
import json
import os
from typing import Sequence

import numpy as np

from uma2_tf import atomic_files
from uma2_tf import run_dir as run_dir_lib
from uma2_tf.experiment import report as report_lib
from uma2_tf.experiment import autosample, search_space
from uma2_tf.experiment.grid import RunSpec
from uma2_tf.experiment.report import RunResult, TEST_METRIC
from uma2_tf.run_dir import RunDir

RESULT_FILE = "autosample.json"
COLUMNS = (("hitrate@100", "HR@100"), ("recall@100", "R@100"), ("hitrate@200", "HR@200"),
           ("recall@200", "R@200"), ("oracle_recall@100", "oracle R@100"))
SEARCH_LABEL = "AutoSample"


@dataclasses.dataclass(frozen=True)
class SearchSpec:
  """A search run where `report.compare` reads a grid cell's spec."""

  seed: int
  run_id: str
  label_row: str = SEARCH_LABEL


@dataclasses.dataclass
class SearchRun:
  result: RunResult  # metrics, per-user metrics, training seconds
  summary: dict  # autosample.json


def load_search(search_dir: str) -> SearchRun:
  """A finished search run dir; FileNotFoundError naming it when unfinished."""
  run = RunDir(search_dir)
  if not run.is_finished() or not run.exists(RESULT_FILE):
    raise FileNotFoundError(f"{search_dir}: no finished search (metrics.json and {RESULT_FILE})")
  summary = run.read_json(RESULT_FILE)
  metrics = run.read_json(run_dir_lib.METRICS_JSON)
  with np.load(run.file(run_dir_lib.PER_USER)) as z:
    per_user = {k: z[k] for k in z.files}
  spec = SearchSpec(summary["seed"], os.path.basename(os.path.normpath(search_dir)))
  return SearchRun(RunResult(spec, metrics["model"], per_user, metrics["run"]["train_seconds"],
                             metrics["run"].get("epochs_run")), summary)


def grid_runs(grid_dir: str, tower: str, candidates: Sequence[str],
              seeds: Sequence[int]) -> dict[str, list[RunResult]]:
  """candidate name -> its finished grid runs on `tower` for `seeds`; candidates without a grid
  row or run are left out."""
  out = {}
  for candidate in search_space.parse(candidates):
    if candidate.grid_row is None:
      continue
    results, _ = report_lib.load_results(
        grid_dir, [RunSpec(candidate.grid_row, tower, s) for s in seeds])
    if results:
      out[candidate.name] = results
  return out


def _mean_std(values: Sequence[float]) -> str:
  return report_lib._mean_std(values) if len(values) else "n/a"


def _steps(run: RunResult) -> int:
  return int(round(run.epochs_run * run.steps_per_epoch))


def grid_protocol(grid: dict) -> str:
  """How the grid's runs were trained, from their own records: epochs and model selection."""
  epochs = sorted({int(r.epochs_run) for runs in grid.values() for r in runs})
  ran = f"{epochs[0]}" if len(epochs) == 1 else f"{epochs[0]}-{epochs[-1]}"
  return f"each trained for {ran} epochs"


def model_steps(summary: dict) -> int:
  """Training steps on the way to the search's model: the winners' probes and the commits of the
  phases up to the selected one (the steps the other probes took were thrown away)."""
  steps = 0
  for r in summary["phases"][:summary["selected_phase"] + 1]:
    steps += autosample.winner_probe(r)["steps"] + r["commit_steps"]
  return steps


def phases_markdown(run: SearchRun) -> str:
  """One seed's search: per phase the probes' validation scores, the winner, the commit."""
  s = run.summary
  monitor = s["monitor"]
  lines = [f"### Seed {s['seed']}: chose `{s['chosen']}` (phase {s['selected_phase'] + 1}'s "
           f"weights)", "",
           f"| phase | probes: validation {monitor} after {s['plan'][0]['probe_steps']} steps | "
           f"committed to | commit steps | validation {monitor} after the commit |",
           "|---:|---|---|---:|---:|"]
  for r in s["phases"]:
    probes = ", ".join(f"{p['candidate']} {p['score']:.4f}" for p in
                       sorted(r["probes"], key=lambda p: -p["score"]))
    mark = " (selected)" if r["phase"] == s["selected_phase"] else ""
    lines.append(f"| {r['phase'] + 1} | {probes} | `{r['winner']}` | {r['commit_steps']} | "
                 f"{r['score']:.4f}{mark} |")
  c = s["compute"]
  lines += ["", f"Compute: {c['steps']} training steps ({c['probe_steps']} probing, "
            f"{c['commit_steps']} committed), {c['train_seconds']:.0f} s of training "
            f"({c['probe_seconds']:.0f} s probing), {s.get('wall_seconds', float('nan')):.0f} s "
            f"of search wall time (scoring and input pipelines included)."]
  return "\n".join(lines)


def comparison(searches: Sequence[SearchRun], grid: dict) -> dict:
  """The search against the grid: per candidate its test metrics and compute, the best candidate
  (by mean test Recall@100), the search's share of it and a paired test, compute ratios."""
  seeds = [s.result.spec.seed for s in searches]
  rows = {}
  for name, runs in grid.items():
    rows[name] = {
        "seeds": [r.spec.seed for r in runs],
        **{m: [r.metrics[m] for r in runs if m in r.metrics] for m, _ in COLUMNS},
        "steps": float(np.mean([_steps(r) for r in runs])),
        "train_seconds": float(np.mean([r.train_seconds for r in runs]))}
  out = {"candidates": rows, "search_seeds": seeds}
  if not rows:
    return out
  best = max(rows, key=lambda n: np.mean(rows[n][TEST_METRIC]))
  search_metric = float(np.mean([s.result.metrics[TEST_METRIC] for s in searches]))
  test = report_lib.compare([s.result for s in searches], grid[best],
                           lift_metrics=(TEST_METRIC,))
  out.update({
      "best": best, "best_metric": float(np.mean(rows[best][TEST_METRIC])),
      "search_metric": search_metric,
      "share_of_best": search_metric / float(np.mean(rows[best][TEST_METRIC])),
      "p_value_vs_best": test.p_value if test else None,
      "beats_every_candidate": all(search_metric > np.mean(r[TEST_METRIC]) for r in rows.values()),
      "grid_steps": sum(r["steps"] for r in rows.values()),
      "grid_train_seconds": sum(r["train_seconds"] for r in rows.values()),
      "complete_grid": set(rows) == set(searches[0].summary["candidates"])})
  search_steps = float(np.mean([s.summary["compute"]["steps"] for s in searches]))
  search_seconds = float(np.mean([s.summary["compute"]["train_seconds"] for s in searches]))
  out.update({"search_steps": search_steps, "search_train_seconds": search_seconds,
              "steps_ratio": search_steps / out["grid_steps"],
              "seconds_ratio": search_seconds / out["grid_train_seconds"]})
  return out


def result_markdown(searches: Sequence[SearchRun], comp: dict, epochs: int | None) -> str:
  """The search's test metrics beside every candidate's, and the compute line."""
  header = ("| sampler | seeds | " + " | ".join(t for _, t in COLUMNS)
            + " | training steps | training s |")
  lines = [header, "|---|---:|" + "---:|" * (len(COLUMNS) + 2)]
  chosen = ", ".join(f"seed {s.summary['seed']}: {s.summary['chosen']}" for s in searches)
  lines.append(
      f"| **{SEARCH_LABEL}** ({chosen}) | {len(searches)} | "
      + " | ".join(_mean_std([s.result.metrics[m] for s in searches if m in s.result.metrics])
                   for m, _ in COLUMNS)
      + f" | {np.mean([s.summary['compute']['steps'] for s in searches]):.0f} | "
        f"{np.mean([s.summary['compute']['train_seconds'] for s in searches]):.0f} |")
  for name, row in comp["candidates"].items():
    best = " (best)" if name == comp.get("best") else ""
    lines.append(f"| `{name}`{best} | {len(row['seeds'])} | "
                 + " | ".join(_mean_std(row[m]) for m, _ in COLUMNS)
                 + f" | {row['steps']:.0f} | {row['train_seconds']:.0f} |")
  text = "\n".join(lines)
  if "best" in comp:
    p = comp["p_value_vs_best"]
    text += (
        f"\n\nThe search reaches **{100 * comp['share_of_best']:.1f} %** of the best single "
        f"candidate's test {TEST_METRIC} (`{comp['best']}`, {comp['best_metric']:.4f}; paired "
        f"t-test over the same test users p {report_lib._p(p) if p is not None else 'n/a'}) "
        f"with **{100 * comp['steps_ratio']:.1f} %** of the exhaustive grid's training steps "
        f"({comp['search_steps']:.0f} of {comp['grid_steps']:.0f} per seed) and "
        f"{100 * comp['seconds_ratio']:.1f} % of its training seconds "
        f"({comp['search_train_seconds']:.0f} of {comp['grid_train_seconds']:.0f}). "
        f"It {'beats' if comp['beats_every_candidate'] else 'does not beat'} every single "
        f"candidate. Its model trained "
        f"{np.mean([model_steps(s.summary) for s in searches]):.0f} steps (the winners' probes "
        f"and the commits up to the selected phase), a candidate of the grid "
        f"{np.mean([r['steps'] for r in comp['candidates'].values()]):.0f} on average.")
    if not comp["complete_grid"]:
      text += " The grid lacks some candidates' runs: its compute is that of those it has."
  else:
    k = len(searches[0].summary["candidates"])
    spe = searches[0].summary["steps_per_epoch"]
    if epochs:
      text += (f"\n\nNo grid of the candidates was given (`--grid_dir`): training every candidate "
               f"for {epochs} epochs would take an estimated {k * epochs * spe} steps per seed "
               f"({k} × {epochs} × {spe}) against the search's "
               f"{np.mean([s.summary['compute']['steps'] for s in searches]):.0f}.")
  return text


def chart(searches: Sequence[SearchRun], path: str, title: str) -> None:
  """Each seed's trajectory: validation score against the committed model's training steps;
  probes as points coloured by candidate, the committed path as a line."""
  plt = report_lib.pyplot()
  fig, axes = plt.subplots(1, len(searches), figsize=(6 * len(searches), 4.5), squeeze=False)
  names = searches[0].summary["candidates"]
  colours = {n: plt.cm.tab10(i % 10) for i, n in enumerate(names)}
  for ax, run in zip(axes[0], searches):
    x, previous = 0, None  # Where the phase starts: its steps and its validation score.
    for r in run.summary["phases"]:
      for p in r["probes"]:
        ax.scatter(x + p["steps"], p["score"], color=colours[p["candidate"]], s=18, zorder=3)
      won = autosample.winner_probe(r)
      end = x + won["steps"] + r["commit_steps"]
      points = ([(x, previous)] if previous is not None else []) + [
          (x + won["steps"], won["score"]), (end, r["score"])]
      ax.plot(*zip(*points), color=colours[r["winner"]], linewidth=2)
      x, previous = end, r["score"]
    for n in names:
      ax.scatter([], [], color=colours[n], label=n)
    ax.set_xlabel("training steps of the committed model")
    ax.set_ylabel(f"validation {run.summary['monitor']}")
    ax.set_title(f"seed {run.summary['seed']}: chose {run.summary['chosen']}")
    ax.legend(fontsize=7)
  fig.suptitle(title)
  report_lib.save_figure(fig, path)


def write_report(report_dir: str, search_dirs: Sequence[str], grid_dir: str | None = None,
                 title: str = "AutoSample", epochs: int | None = None) -> dict:
  """autosample.md, autosample_report.json and autosample.png in `report_dir`."""
  searches = [load_search(d) for d in search_dirs]
  tower = searches[0].summary["tower"]
  grid = grid_runs(grid_dir, tower, searches[0].summary["candidates"],
                   [s.result.spec.seed for s in searches]) if grid_dir else {}
  comp = comparison(searches, grid)
  s = searches[0].summary["search"]
  settings = (f"Candidates: {', '.join(f'`{n}`' for n in searches[0].summary['candidates'])}. "
              f"Budget {s['budget']} epochs of training steps, probes included, over "
              f"{s['phases']} phases; probes of {s['probe_steps']} steps"
              f"{', the better half probed again each phase' if s['halving'] else ''}; "
              f"scored on {searches[0].summary['score_users']} validation users (the last "
              f"training day, never the test day). The model is the phase whose committed "
              f"weights score best there; the test day is evaluated once, on it.")
  grid_note = (f"Grid: the candidates' own runs in `{grid_dir}` on the same tower and seeds, "
               f"{grid_protocol(grid)}." if grid else "")
  table = (f"# {title}\n\n{settings}\n\n{grid_note}\n\n## Test day\n\n"
           + result_markdown(searches, comp, epochs) + "\n\n## The search, per seed\n\n"
           + "\n\n".join(phases_markdown(r) for r in searches) + "\n")
  os.makedirs(report_dir, exist_ok=True)
  paths = {"markdown": os.path.join(report_dir, "autosample.md"),
           "json": os.path.join(report_dir, "autosample_report.json"),
           "chart": os.path.join(report_dir, "autosample.png")}
  atomic_files.atomic_write_text(paths["markdown"], table)
  atomic_files.atomic_write_text(paths["json"], json.dumps(
      {"comparison": comp, "searches": [r.summary for r in searches]}, indent=2))
  chart(searches, paths["chart"], title)
  return {"table": table, "paths": paths, "comparison": comp}

"""The Table 1 experiment: the grid's runs, the comparisons by hand, the report files, resuming."""
import uma2_tf  # noqa: F401

import dataclasses
import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest
from scipy import stats

from uma2_tf import run_dir, training
from uma2_tf.data import schema as schema_lib
from uma2_tf.experiment import grid as grid_lib
from uma2_tf.experiment import report as report_lib
from uma2_tf.experiment.grid import RunSpec

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_run_specs_map_to_train_configs():
  base = training.TrainConfig(dataset="uma2_simulated/tiny", epochs=3)
  want = {  # row -> (sampling strategy, use_nsdn, weight normalisation)
      grid_lib.SS_A: ("ss_a", False, "none"),
      grid_lib.SS_AB: ("ss_ab", False, "none"),
      grid_lib.SS_ABC_RANDOM: ("ss_abc_random", False, "none"),
      grid_lib.SS_ABC_FIXED: ("ss_abc_fixed", False, "none"),
      grid_lib.UMA2: ("ss_abc_fixed", True, "none"),
      grid_lib.UMA2_SOS: ("ss_abc_fixed", False, "none"),
      grid_lib.UMA2_SELF_NORM: ("ss_abc_fixed", True, "self_normalized"),
  }
  for row, (strategy, nsdn, normalization) in want.items():
    config = RunSpec(row, "dat", 7).train_config(base, "/tmp/report")
    assert config.sampling.strategy == strategy, row
    assert config.loss.use_nsdn is nsdn, row
    assert config.loss.weight_normalization == normalization, row
    assert config.tower == "dat" and config.seed == 7 and config.sampling.seed == 7
    assert config.epochs == 3 and config.dataset == base.dataset
    assert config.output_dir == os.path.join("/tmp/report", "runs", RunSpec(row, "dat", 7).run_id)
  from uma2_tf import tasks
  sos = RunSpec(grid_lib.UMA2_SOS, "youtube_dnn", 0).train_config(base, "r").loss
  assert sos.space_weights == (1.0, 1.0, tasks.SOS_RANDOM_WEIGHT)
  assert RunSpec(grid_lib.UMA2, "youtube_dnn", 0).train_config(base, "r").loss.space_weights == (
    1,
    1,
    1,
  )


def test_baselines_form_the_papers_chain():
  chain = {grid_lib.SS_AB: grid_lib.SS_A, grid_lib.SS_ABC_RANDOM: grid_lib.SS_AB,
           grid_lib.SS_ABC_FIXED: grid_lib.SS_ABC_RANDOM, grid_lib.UMA2: grid_lib.SS_ABC_FIXED,
           grid_lib.UMA2_SOS: grid_lib.SS_ABC_FIXED, grid_lib.UMA2_SELF_NORM: grid_lib.UMA2}
  for row, baseline in chain.items():
    assert RunSpec(row, "dat", 2).baseline == RunSpec(baseline, "dat", 2)
  assert RunSpec(grid_lib.SS_A, "dat", 0).baseline is None
  assert RunSpec(grid_lib.SS_ABC_FIXED, "esam_dat", 1).baseline == RunSpec(
      grid_lib.SS_ABC_FIXED, "dat", 1)
  ids = [s.run_id for s in grid_lib.full_grid((0, 1, 2))]
  assert len(ids) == len(set(ids)) == 3 * (16 + 2 + 6)
  assert RunSpec(grid_lib.UMA2, "youtube_dnn", 0).label == "UMA²_YTB"
  assert RunSpec(grid_lib.SS_AB, "mind", 0).label_row == "MIND [SS-AB]"
  with pytest.raises(ValueError, match="unknown row"):
    RunSpec("SS-X", "dat", 0)


def _result(row, seed, recall, users=(1, 2, 3, 4)):
  recall = np.asarray(recall, np.float64)
  metrics = {f"{m}@{k}": float(np.mean(recall)) * (1 + 0.1 * i)
             for i, m in enumerate(report_lib.TABLE_METRICS) for k in report_lib.TABLE_KS}
  metrics["recall@100"] = float(np.mean(recall))
  per_user = {schema_lib.USER_ID: np.asarray(users, np.int64), "recall@100": recall}
  return report_lib.RunResult(RunSpec(row, "youtube_dnn", seed), metrics, per_user, 1.0)


def test_compare_by_hand():
  base = [_result(grid_lib.SS_ABC_FIXED, 0, [0.0, 0.5, 0.5, 1.0]),
          _result(grid_lib.SS_ABC_FIXED, 1, [0.0, 0.5, 0.0, 1.0])]
  uma2 = [_result(grid_lib.UMA2, 0, [0.5, 0.5, 1.0, 1.0]),
          _result(grid_lib.UMA2, 1, [0.0, 1.0, 0.5, 1.0]),
          _result(grid_lib.UMA2, 2, [1.0, 1.0, 1.0, 1.0])]  # No baseline for seed 2: left out.
  c = report_lib.compare(uma2, base)
  diff = np.array([0.25, 0.25, 0.5, 0.0])  # per user, averaged over seeds 0 and 1
  assert c.seeds == 2 and c.seeds_better == 2
  assert c.mean_difference == pytest.approx(diff.mean())
  assert c.p_value == pytest.approx(
    stats.ttest_rel([0.25, 0.75, 0.75, 1.0], [0.0, 0.5, 0.25, 1.0]).pvalue
  )
  assert c.p_values == {
    "recall@100": c.p_value
  }  # The other metrics are not in these per-user files.
  half = stats.t.ppf(0.975, 3) * diff.std(ddof=1) / 2
  assert c.ci95 == pytest.approx((diff.mean() - half, diff.mean() + half))
  ours, theirs = np.mean([0.75, 0.625]), np.mean([0.5, 0.375])
  assert c.lift["recall@100"] == pytest.approx(ours / theirs - 1)
  assert c.row == "UMA²_YTB" and c.baseline == "YouTubeDNN [SS-ABC(fixed)]"
  other_users = [_result(grid_lib.UMA2, 0, [0.5, 0.5, 1.0, 1.0], users=(1, 2, 3, 5))]
  with pytest.raises(ValueError, match="different test users"):
    report_lib.compare(other_users, base)


def _write_run(report_dir, result, reference):
  out = os.path.join(report_dir, grid_lib.RUNS_DIR, result.spec.run_id)
  os.makedirs(out)
  np.savez(os.path.join(out, run_dir.PER_USER), **result.per_user)
  with open(os.path.join(out, "metrics.json"), "w") as f:
    json.dump({"model": result.metrics, **reference, "run": {"train_seconds": 1.0}}, f)


def test_report_files(tmp_path):
  reference = {"popularity": {m: 0.1 for m in _result(grid_lib.SS_A, 0, [0]).metrics},
               "oracle": {m: 0.9 for m in _result(grid_lib.SS_A, 0, [0]).metrics}}
  rng = np.random.default_rng(0)
  grid = grid_lib.quick_grid((0, 1))
  for spec in grid[:-1]:  # The last run is "not finished".
    result = _result(spec.row, spec.seed, rng.random(4))
    _write_run(str(tmp_path), result, reference)
  report = report_lib.write_report(str(tmp_path), grid, "test table")
  assert report["runs"] == len(grid) - 1 and report["missing"] == 1
  table = open(tmp_path / "table1.md").read()
  for label in ("YouTubeDNN", "UMA²_YTB", "UMA²_SOS_YTB", "popularity", "oracle", "SS-AB",
                "Each row against its baseline"):
    assert label in table
  rows = open(tmp_path / "runs.csv").read().strip().splitlines()
  assert len(rows) == len(grid)  # header + finished runs
  assert rows[0].startswith("run_id,row,tower,label,seed,train_seconds,")
  comparisons = json.load(open(tmp_path / "comparisons.json"))
  claims = {c["claim"]: c["verdict"] for c in comparisons["orderings"]}
  # The unfinished run is UMA²_SOS of seed 1: its claim rests on seed 0 alone.
  assert set(claims) == {"YouTubeDNN [SS-A] < YouTubeDNN [SS-AB]",
                         "YouTubeDNN [SS-AB] < YouTubeDNN [SS-ABC(random)]",
                         "YouTubeDNN [SS-ABC(random)] < UMA²_YTB",
                         "YouTubeDNN [SS-ABC(fixed)] < UMA²_YTB", "UMA²_SOS_YTB < UMA²_YTB"}
  assert set(claims.values()) <= {"holds", "not significant", "reversed"}
  assert "The paper's orderings" in table
  comparisons = comparisons["baselines"]
  assert {c["row"] for c in comparisons} == {
    "YouTubeDNN [SS-AB]",
    "YouTubeDNN [SS-ABC(random)]",
    "YouTubeDNN [SS-ABC(fixed)]",
    "UMA²_YTB",
    "UMA²_SOS_YTB",
  }
  assert open(tmp_path / "table1.png", "rb").read(8) == b"\x89PNG\r\n\x1a\n"


def _cli(*args, **kwargs):
  return subprocess.run([sys.executable, "-m", "pipelines.experiment", *args], cwd=REPO,
                        capture_output=True, text=True, **kwargs)


def test_experiment_cli_runs_reports_and_resumes(tmp_path, tiny_data_dir):
  report_dir = str(tmp_path / "report")
  args = [
    "--dataset=uma2_simulated/tiny",
    f"--data_dir={tiny_data_dir}",
    f"--report_dir={report_dir}",
    "--quick",
    "--rows=ss_a,uma2",  # Two of the quick grid's six runs: what is checked needs no more.
    "--seeds=0",
    "--epochs=1",
    "--batch_size=256",
  ]
  # Killed once its first run is finished: the restart must keep that run, not redo it.
  first = os.path.join(report_dir, "runs", grid_lib.quick_grid((0,))[0].run_id, "metrics.json")
  process = subprocess.Popen([sys.executable, "-m", "pipelines.experiment", *args], cwd=REPO,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
  try:
    import time
    deadline = time.time() + 600
    while not os.path.exists(first) and process.poll() is None and time.time() < deadline:
      time.sleep(0.5)
  finally:
    process.kill()
    process.wait()
  assert os.path.exists(first), "the first run never finished"
  written = os.stat(first).st_mtime_ns
  done = _cli(*args, timeout=1200)
  assert done.returncode == 0, done.stderr[-3000:]
  assert os.stat(first).st_mtime_ns == written
  for name in ("table1.md", "runs.csv", "comparisons.json", "table1.png", "experiment.json"):
    assert os.path.exists(os.path.join(report_dir, name)), name
  assert len(open(os.path.join(report_dir, "runs.csv")).read().strip().splitlines()) == 1 + 2
  assert "UMA²_YTB" in done.stdout
  table = open(os.path.join(report_dir, "table1.md")).read()
  assert ("Model selection: the weights after the last of 1 epochs, no early stopping. "
          "Validation `last_day` is carved from the training days") in table
  # Everything finished: a rerun trains nothing and rewrites the same table.
  again = _cli(*args, timeout=300)
  assert again.returncode == 0 and "0 to train" in again.stderr
  # The same report dir with another config is refused before training anything.
  other = _cli(*args[:-2], "--epochs=2", "--batch_size=256", timeout=300)
  assert other.returncode == 2 and "different config (epochs differ)" in other.stderr


def test_experiment_cli_bad_flags(tmp_path):
  bad = _cli("--seeds=0,x", f"--report_dir={tmp_path}", timeout=120)
  assert bad.returncode == 2 and "--seeds" in bad.stderr and "Traceback" not in bad.stderr
  bad = _cli("--table=foo", f"--report_dir={tmp_path}", timeout=120)
  lines = [line for line in bad.stderr.splitlines() if "--table" in line]
  assert bad.returncode == 2 and lines == ["error: --table: expected one of table1, samplers, "
                                           "ablation, remi, got 'foo'"], bad.stderr
  for flag, value in (("--rows", "uma3"), ("--towers", "bert")):
    bad = _cli(f"{flag}={value}", f"--report_dir={tmp_path}", timeout=120)
    assert bad.returncode == 2 and flag in bad.stderr and value in bad.stderr, bad.stderr
  missing = _cli("--dataset=uma2_simulated/tiny", f"--data_dir={tmp_path}/none", "--quick",
                 f"--report_dir={tmp_path}/r", timeout=120)
  assert missing.returncode == 2 and "Traceback" not in missing.stderr


def test_ordering_verdicts():
  users = tuple(range(1, 41))
  low = np.linspace(0.0, 0.4, 40)
  runs = [_result(grid_lib.SS_ABC_FIXED, s, low, users) for s in (0, 1)]
  runs += [
    _result(grid_lib.UMA2, s, low + 0.3 + 0.01 * np.sin(np.arange(40)), users) for s in (0, 1)
  ]
  runs += [_result(grid_lib.SS_ABC_RANDOM, s, low + 0.5 + 0.01 * np.cos(np.arange(40)), users)
           for s in (0, 1)]
  runs += [_result(grid_lib.UMA2_SOS, s, low + 0.3 + 0.02 * np.cos(np.arange(40) + s), users)
           for s in (0, 1)]
  verdicts = {c["claim"]: c["verdict"] for c in report_lib.orderings(runs)}
  assert verdicts == {"YouTubeDNN [SS-ABC(fixed)] < UMA²_YTB": "holds",
                      "YouTubeDNN [SS-ABC(random)] < UMA²_YTB": "reversed",
                      "UMA²_SOS_YTB < UMA²_YTB": "not significant"}


def test_samplers_grid_maps_rows_to_sampler_configs():
  from uma2_tf.data import samplers
  from uma2_tf.tasks import SoftmaxConfig
  # A base whose sampler knobs differ from the table's: the sampler rows set their own.
  base = training.TrainConfig(
      dataset="uma2_simulated/tiny", epochs=3, softmax=SoftmaxConfig(logq="streaming"),
      sampling=samplers.SamplingConfig(popularity_alpha=0.5, hybrid_share=0.2,
                                       c_distribution="popularity"))
  want = {  # row -> (strategy, softmax logq, use_nsdn, popularity_alpha, hybrid_share, c_dist.)
      grid_lib.SS_A: ("ss_a", "streaming", False, 0.5, 0.2, "popularity"),
      grid_lib.SS_ABC_RANDOM: ("ss_abc_random", "streaming", False, 0.5, 0.2, "popularity"),
      grid_lib.POPULARITY: ("popularity", "streaming", False, 0.75, 0.2, "popularity"),
      grid_lib.IN_BATCH: ("in_batch", "none", False, 0.5, 0.2, "popularity"),
      grid_lib.IN_BATCH_LOGQ: ("in_batch", "counts", False, 0.5, 0.2, "popularity"),
      grid_lib.MIXED: ("mixed", "counts", False, 0.5, 0.2, "popularity"),
      grid_lib.HYBRID: ("hybrid", "streaming", False, 0.5, 0.5, "uniform"),
      grid_lib.SS_ABC_FIXED: ("ss_abc_fixed", "streaming", False, 0.5, 0.2, "popularity"),
      grid_lib.UMA2: ("ss_abc_fixed", "streaming", True, 0.5, 0.2, "popularity"),
  }
  grid = grid_lib.samplers_grid((0, 1))
  assert len(grid) == 2 * 2 * len(want) and {s.tower for s in grid} == {"youtube_dnn", "dat"}
  assert [s.row for s in grid[:len(want)]] == list(want) == list(grid_lib.SAMPLERS_TABLE_ROWS)
  for spec in grid:
    config = spec.train_config(base, "/tmp/report")
    strategy, logq, nsdn, alpha, share, c_distribution = want[spec.row]
    assert (config.sampling.strategy, config.softmax.logq, config.loss.use_nsdn,
            config.sampling.popularity_alpha, config.sampling.hybrid_share,
            config.sampling.c_distribution) == want[spec.row], spec.row
    assert config.loss.weight_normalization == "none"
    assert config.tower == spec.tower and config.seed == config.sampling.seed == spec.seed
    assert config.sampling.corpus_negatives == base.sampling.corpus_negatives
    assert config.output_dir == os.path.join("/tmp/report", "runs", spec.run_id)
    if config.sampling.is_softmax:
      assert config.loss.use_nsdn is False
  # Table 1's rows keep Table 1's configs: the same run id is the same run in both tables.
  uniform = RunSpec(grid_lib.SS_ABC_RANDOM, "dat", 1).train_config(base, "r")
  assert uniform.softmax == base.softmax and uniform.sampling == dataclasses.replace(
      base.sampling, strategy="ss_abc_random", seed=1)
  slugs = {row: RunSpec(row, "dat", 0).row_slug for row in grid_lib.ROWS}
  assert len(set(slugs.values())) == len(grid_lib.ROWS)
  assert [slugs[r] for r in grid_lib.SAMPLER_ROWS] == [
      "popularity_0_75", "in_batch", "in_batch_logq", "mixed", "hybrid"]
  assert len({s.run_id for s in grid}) == len(grid)
  assert RunSpec(grid_lib.MIXED, "dat", 3).baseline == RunSpec(grid_lib.SS_ABC_RANDOM, "dat", 3)
  assert RunSpec(grid_lib.IN_BATCH_LOGQ, "youtube_dnn", 0).label_row == (
      "YouTubeDNN [in-batch + logQ]")


# Recall@100 of the fake sampler runs: SS-A worst, popularity above uniform, logQ above no logQ,
# hybrid equal to uniform on average (its claim is not significant); in-batch without logQ retrieves
# less popular items than with it.
_FAKE_RECALL = {grid_lib.SS_A: 0.10, grid_lib.SS_ABC_RANDOM: 0.30, grid_lib.POPULARITY: 0.36,
                grid_lib.IN_BATCH: 0.20, grid_lib.IN_BATCH_LOGQ: 0.33, grid_lib.MIXED: 0.34,
                grid_lib.HYBRID: 0.30, grid_lib.SS_ABC_FIXED: 0.37, grid_lib.UMA2: 0.40}


def _sampler_run(spec, users=40):
  """A fake finished run of the samplers table: metrics.json's model section and per_user."""
  shift = np.linspace(-0.1, 0.1, users)  # The users differ; each row moves them all.

  def noise(row):
    phase = len(spec.tower) + 3 * grid_lib.SAMPLERS_TABLE_ROWS.index(row)
    return 0.01 * np.sin(np.arange(users) * (spec.seed + 2) + phase)
  if spec.row == grid_lib.HYBRID:  # Uniform's users, +-0.02 alternately: a mean difference of 0.
    recall = _FAKE_RECALL[spec.row] + shift + noise(grid_lib.SS_ABC_RANDOM) + 0.02 * (
        (-1) ** np.arange(users))
  else:
    recall = _FAKE_RECALL[spec.row] + shift + noise(spec.row)
  recall = np.clip(recall, 0, 1)
  hits = (recall > 0.25).astype(np.float64)
  metrics = {"recall@100": float(recall.mean()), "hitrate@100": float(hits.mean()),
             "precision@100": float(recall.mean() / 10), "recall@200": float(recall.mean() + 0.1),
             "hitrate@200": float(min(1.0, hits.mean() + 0.1)),
             "precision@200": float(recall.mean() / 20), "oracle_recall@100": 0.2 + spec.seed / 100,
             "coverage@100": 0.5, "gini@100": 0.4, "tail_share@100": 0.1,
             "avg_popularity@100": 50.0 if spec.row == grid_lib.IN_BATCH else 100.0 + spec.seed}
  per_user = {schema_lib.USER_ID: np.arange(1, users + 1, dtype=np.int64), "recall@100": recall,
              "hitrate@100": hits}
  return metrics, per_user


def _write_sampler_runs(report_dir, grid, skip=()):
  """The runs of `grid` but `skip` as finished run dirs (metrics.json, per_user.npz, config.json),
  the way `report.load_results` reads them."""
  base = training.TrainConfig(dataset="uma2_simulated/tiny", epochs=3, early_stopping_patience=0,
                              evaluate_each_epoch=False)
  reference = {name: {**{m: value for m in _sampler_run(grid[0])[0]}, "avg_popularity@100": 900.0}
               for name, value in (("popularity", 0.05), ("oracle", 0.9))}
  for spec in grid:
    if spec in skip:
      continue
    metrics, per_user = _sampler_run(spec)
    out = os.path.join(report_dir, grid_lib.RUNS_DIR, spec.run_id)
    os.makedirs(out)
    np.savez(os.path.join(out, run_dir.PER_USER), **per_user)
    with open(os.path.join(out, "metrics.json"), "w") as f:
      json.dump({"model": metrics, **reference,
                 "run": {"train_seconds": 12.0 + spec.seed, "epochs_run": 3}}, f)
    with open(os.path.join(out, run_dir.CONFIG), "w") as f:
      f.write(spec.train_config(base, report_dir).to_json())


def test_samplers_report_files(tmp_path):
  from uma2_tf.experiment import samplers_table
  grid = grid_lib.samplers_grid((0, 1))
  unfinished = RunSpec(grid_lib.MIXED, "dat", 1)
  _write_sampler_runs(str(tmp_path), grid, skip={unfinished})
  report = samplers_table.write_report(str(tmp_path), grid, "samplers test")
  assert report["runs"] == len(grid) - 1 and report["missing"] == 1
  table = open(tmp_path / "samplers.md").read()
  for text in ("# samplers test", "## YouTubeDNN", "## DAT", "| uniform (SS-ABC(random)) |",
               "| popularity^0.75 |", "| in-batch |", "| in-batch + logQ |", "| mixed (1 runs) |",
               "| hybrid |", "| SS-A |", "| UMA² |", "| popularity (reference) |",
               "| oracle (reference) |", "## Claims", "## Rows",
               "Model selection: the weights after the last of 3 epochs, no early stopping"):
    assert text in table, text
  # Numbers: UMA²'s Recall@100 on YouTube DNN, the seconds per epoch (12 s and 13 s over 3 epochs).
  uma2 = [_sampler_run(RunSpec(grid_lib.UMA2, "youtube_dnn", s))[0]["recall@100"] for s in (0, 1)]
  assert f"{np.mean(uma2):.4f} ± {np.std(uma2, ddof=1):.4f}" in table
  assert "| 4.2 |" in table and "50.0 ± 0.0" in table and "900.0" in table
  # Popularity^0.75 against uniform on DAT, by hand: seed-averaged per-user differences.
  diff = np.mean([_sampler_run(RunSpec(grid_lib.POPULARITY, "dat", s))[1]["recall@100"] -
                  _sampler_run(RunSpec(grid_lib.SS_ABC_RANDOM, "dat", s))[1]["recall@100"]
                  for s in (0, 1)], axis=0)
  p = stats.ttest_1samp(diff, 0.0).pvalue
  written = json.load(open(tmp_path / "samplers.json"))
  claims = {(c["id"], c["claim"], c["tower"]): c for c in written["claims"]}
  assert claims["a", "popularity^0.75 beats uniform", "dat"]["p_value"] == pytest.approx(p)
  assert report_lib._p(p) in table
  verdicts = {(i, t): [] for i, _, t in claims}
  for (i, _, t), c in claims.items():
    verdicts[i, t].append(c["verdict"])
  for tower in ("youtube_dnn", "dat"):
    assert verdicts["a", tower] == ["holds"]
    assert verdicts["b", tower] == ["holds", "holds"]  # less popular without logQ; logQ recall
    assert verdicts["c", tower] == ["not significant"]
    assert verdicts["d", tower] == ["holds", "holds"]
  assert all(math.isfinite(c["p_value"]) for c in written["claims"]
             if c["metric"] == "recall@100")
  assert "n/a (list-level)" in table and "| holds |" in table and "| not significant |" in table
  # Every cell against uniform and UMA² of its tower; DAT's mixed on the seed both ran.
  versus = {(c["tower"], c["row"], c["against"]): c for c in written["comparisons"]}
  assert len(versus) == 2 * 2 * (len(grid_lib.SAMPLERS_TABLE_ROWS) - 1)
  assert versus["dat", grid_lib.MIXED, grid_lib.UMA2]["seeds"] == 1
  assert math.isfinite(versus["youtube_dnn", grid_lib.SS_A, grid_lib.SS_ABC_RANDOM]["p_value"])
  rows = open(tmp_path / "samplers.csv").read().strip().splitlines()
  assert len(rows) == len(grid) and rows[0].startswith(
      "run_id,row,tower,label,seed,train_seconds,epochs_run,seconds_per_epoch,")
  assert open(tmp_path / "samplers.png", "rb").read(8) == b"\x89PNG\r\n\x1a\n"


def test_grouped_bars_by_hand():
  from uma2_tf.experiment import samplers_table

  class Axes:  # Records what would be drawn.
    def __init__(self):
      self.bars = []

    def bar(self, xs, heights, width, yerr, capsize, label):
      self.bars.append((label, xs, heights, yerr, width))

  points = {("g0", "a"): (1.0, 0.1), ("g1", "a"): (2.0, 0.0), ("g1", "b"): (3.0, 0.5)}
  ax = Axes()
  samplers_table.grouped_bars(ax, ["g0", "g1"], ["a", "b"], lambda g, s: points.get((g, s)),
                              str.upper)
  # Two series: width 0.4, offsets -0.2 and +0.2 around each group; no bar where there is no point.
  assert ax.bars[0][0] == "A" and ax.bars[0][2:] == ([1.0, 2.0], [0.1, 0.0], 0.4)
  np.testing.assert_allclose(ax.bars[0][1], [-0.2, 0.8])
  assert ax.bars[1][0] == "B" and ax.bars[1][2:4] == ([3.0], [0.5])
  np.testing.assert_allclose(ax.bars[1][1], [1.2])
  assert samplers_table.mean_std([]) is None
  assert samplers_table.mean_std([2.0]) == (2.0, 0.0)
  assert samplers_table.mean_std([1.0, 3.0]) == pytest.approx((2.0, np.sqrt(2.0)))


def test_long_chart_titles_are_wrapped_not_cut(tmp_path):
  plt = report_lib.pyplot()
  fig, ax = plt.subplots(figsize=(5, 3))
  title = "REMI on uma2_simulated/default (sequential protocol): " + "MIND, ComiRec-SA, " * 4
  ax.set_title(title, fontsize=10)
  report_lib.save_figure(fig, str(tmp_path / "chart.png"))
  lines = ax.get_title().split("\n")
  assert len(lines) > 1 and " ".join(lines) == " ".join(title.split())
  assert max(map(len, lines)) <= report_lib.TITLE_CHARS_PER_INCH * 5
  assert open(tmp_path / "chart.png", "rb").read(8) == b"\x89PNG\r\n\x1a\n"


def test_samplers_cli_report_only(tmp_path):
  report_dir = str(tmp_path / "report")
  _write_sampler_runs(report_dir, grid_lib.samplers_grid((0, 1)))
  done = _cli("--table=samplers", "--report_only", f"--report_dir={report_dir}", timeout=300)
  assert done.returncode == 0, done.stderr[-3000:]
  assert "# Negative samplers table on uma2_simulated/default: YouTubeDNN, DAT" in done.stdout
  assert "## Claims" in done.stdout
  for name in ("samplers.md", "samplers.csv", "samplers.json", "samplers.png"):
    assert os.path.join(report_dir, name) in done.stdout
  # --rows and --towers take the new rows' slugs.
  some = _cli("--table=samplers", "--report_only", f"--report_dir={report_dir}",
              "--rows=in_batch,in_batch_logq", "--towers=dat", timeout=300)
  assert some.returncode == 0, some.stderr[-3000:]
  table = open(os.path.join(report_dir, "samplers.md")).read()
  assert "## DAT" in table and "## YouTubeDNN" not in table and "| in-batch + logQ |" in table
  assert "| mixed |" not in table

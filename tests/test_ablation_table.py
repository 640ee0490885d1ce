"""The ablation of UMA²'s gain: its rows' configs, the report by hand on fake runs, the CLI."""
import uma2_tf  # noqa: F401

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from scipy import stats

from uma2_tf import run_dir, training
from uma2_tf.data import schema as schema_lib
from uma2_tf.experiment import ablation_table
from uma2_tf.experiment import grid as grid_lib
from uma2_tf.experiment import report as report_lib
from uma2_tf.experiment.grid import RunSpec

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WORLDS = ("uma2_simulated/calm", "uma2_simulated/noisy")


def test_ablation_rows_map_to_train_configs():
  base = training.TrainConfig(dataset="uma2_simulated/tiny", epochs=3)
  multitask = RunSpec(grid_lib.UMA2_MULTITASK, "dat", 4).train_config(base, "/tmp/r")
  assert multitask.loss.use_nsdn and not multitask.loss.propensity_weights
  assert multitask.share_embeddings and multitask.sampling.strategy == "ss_abc_fixed"
  own = RunSpec(grid_lib.UMA2_OWN_TABLES, "dat", 4).train_config(base, "/tmp/r")
  assert own.loss == RunSpec(grid_lib.UMA2, "dat", 4).train_config(base, "/tmp/r").loss
  assert own.loss.use_nsdn and own.loss.propensity_weights and not own.share_embeddings
  assert own.sampling.strategy == "ss_abc_fixed" and (own.seed, own.sampling.seed) == (4, 4)
  for config in (multitask, own):  # What a run dir keeps reads back as the same config.
    assert training.TrainConfig.from_json(config.to_json()) == config
  # Every other row keeps its Table 1 config (shared tables, propensity weights on).
  for row in (grid_lib.SS_ABC_FIXED, grid_lib.UMA2, grid_lib.UMA2_SELF_NORM):
    config = RunSpec(row, "dat", 0).train_config(base, "/tmp/r")
    assert config.share_embeddings and config.loss.propensity_weights
  assert [RunSpec(r, "dat", 0).row_slug for r in (grid_lib.UMA2_MULTITASK,
                                                  grid_lib.UMA2_OWN_TABLES)] == [
      "uma2_multitask", "uma2_own_tables"]
  for row in (grid_lib.UMA2_MULTITASK, grid_lib.UMA2_OWN_TABLES):
    assert RunSpec(row, "dat", 1).baseline == RunSpec(grid_lib.SS_ABC_FIXED, "dat", 1)
  assert RunSpec(grid_lib.UMA2_MULTITASK, "youtube_dnn", 0).label_row == (
      "UMA²_YTB (multi-task only)")
  grid = grid_lib.ablation_grid()
  assert [s.row for s in grid[:6]] == list(grid_lib.ABLATION_TABLE_ROWS)
  assert len(grid) == 12 and {(s.tower, s.seed) for s in grid} == {("youtube_dnn", 0),
                                                                   ("youtube_dnn", 1)}
  assert {s.tower for s in grid_lib.ablation_grid((0,), ("fm", "mind", "dat"))} == {
      "fm", "mind", "dat"}
  with pytest.raises(ValueError, match="ESAM"):
    grid_lib.ablation_grid((0,), ("esam_dat",))
  with pytest.raises(ValueError, match="unknown tower"):
    grid_lib.ablation_grid((0,), ("bert",))


# Each row's mean Recall@100 in the first world; the second world adds 0.05 to every row.
_LEVEL = {grid_lib.SS_ABC_RANDOM: 0.30, grid_lib.SS_ABC_FIXED: 0.34,
          grid_lib.UMA2_MULTITASK: 0.38, grid_lib.UMA2_OWN_TABLES: 0.35, grid_lib.UMA2: 0.40,
          grid_lib.UMA2_SELF_NORM: 0.39}


def _fake_run(world, spec, users=30):
  """A finished run's model metrics and per-user values: every row moves the same users."""
  level = _LEVEL[spec.row] + 0.05 * WORLDS.index(world)
  phase = grid_lib.ABLATION_TABLE_ROWS.index(spec.row)
  recall = (level + np.linspace(-0.1, 0.1, users)
            + 0.01 * np.sin(np.arange(users) * (spec.seed + 2) + phase))
  metrics = {f"{m}@{k}": float(recall.mean()) * scale for k in (100, 200)
             for m, scale in (("hitrate", 1.5), ("precision", 0.1), ("recall", 1.0))}
  metrics["oracle_recall@100"] = 0.5 * level + 0.01 * spec.seed
  per_user = {schema_lib.USER_ID: np.arange(1, users + 1, dtype=np.int64), "recall@100": recall}
  return metrics, per_user


def _write_runs(report_dir, grid, skip=()):
  """Every world's runs of `grid` but `skip` ((world, spec) pairs) as finished run dirs."""
  for world in WORLDS:
    base = training.TrainConfig(dataset=world)  # 5 epochs, early stopping: the default protocol.
    out_dir = ablation_table.world_dir(report_dir, world)
    for spec in grid:
      if (world, spec) in skip:
        continue
      metrics, per_user = _fake_run(world, spec)
      out = os.path.join(out_dir, grid_lib.RUNS_DIR, spec.run_id)
      os.makedirs(out)
      np.savez(os.path.join(out, run_dir.PER_USER), **per_user)
      with open(os.path.join(out, "metrics.json"), "w") as f:
        json.dump({"model": metrics, "popularity": {"recall@100": 0.05},
                   "run": {"train_seconds": 10.0 + spec.seed, "epochs_run": 2 + spec.seed}}, f)
      with open(os.path.join(out, run_dir.CONFIG), "w") as f:
        f.write(spec.train_config(base, out_dir).to_json())


def test_ablation_report_by_hand(tmp_path):
  grid = grid_lib.ablation_grid((0, 1))
  unfinished = RunSpec(grid_lib.UMA2_OWN_TABLES, "youtube_dnn", 1)
  _write_runs(str(tmp_path), grid, skip={(WORLDS[1], unfinished)})
  report = ablation_table.write_report(str(tmp_path), WORLDS, grid, "ablation test")
  assert report["runs"] == 2 * len(grid) - 1 and report["missing"] == 1
  for name in ablation_table.FILES:
    assert os.path.join(str(tmp_path), name) in report["paths"].values()
  table = open(tmp_path / "ablation.md").read()
  for text in ("# ablation test", "## uma2_simulated/calm", "## uma2_simulated/noisy",
               "### YouTubeDNN", "| GMM(random) |", "| own tables (1 runs) |",
               "| popularity (reference) |", "| UMA² vs GMM(random) | the headline gain |",
               "| multi-task only vs GMM(fixed) |", "| self-norm vs UMA² |", "## Missing runs",
               "- uma2_simulated/noisy: YouTubeDNN own tables, seed 1", "## Rows",
               "Model selection: early stopping (patience 2)",
               "| 2, 3 | 4.3 |"):  # Epochs per seed; (10 s / 2 + 11 s / 3) / 2 per epoch.
    assert text in table, text
  # Multi-task only against GMM(fixed) in the first world, by hand: the lift of the means over
  # the seeds, the paired t-test on the seed-averaged per-user differences.
  calm = WORLDS[0]

  def runs(row, seeds=(0, 1), world=calm):
    return [_fake_run(world, RunSpec(row, "youtube_dnn", s)) for s in seeds]
  multitask, fixed = runs(grid_lib.UMA2_MULTITASK), runs(grid_lib.SS_ABC_FIXED)
  lift = (np.mean([m["recall@100"] for m, _ in multitask])
          / np.mean([m["recall@100"] for m, _ in fixed]) - 1)
  diff = np.mean([a["recall@100"] - b["recall@100"] for (_, a), (_, b) in zip(multitask, fixed)],
                 axis=0)
  p = stats.ttest_1samp(diff, 0.0).pvalue
  oracle_lift = (np.mean([m["oracle_recall@100"] for m, _ in multitask])
                 / np.mean([m["oracle_recall@100"] for m, _ in fixed]) - 1)
  written = json.load(open(tmp_path / "ablation.json"))
  assert written["worlds"] == list(WORLDS)
  pairs = {(c["world"], c["row"], c["against"]): c for c in written["comparisons"]}
  assert len(pairs) == 2 * len(ablation_table.PAIRS)
  c = pairs[calm, grid_lib.UMA2_MULTITASK, grid_lib.SS_ABC_FIXED]
  assert c["lift"]["recall@100"] == pytest.approx(lift)
  assert c["p_value"] == pytest.approx(p)
  assert c["lift"]["oracle_recall@100"] == pytest.approx(oracle_lift)
  assert (f"| multi-task only vs GMM(fixed) | the ER/RE tasks through the shared embeddings | "
          f"{100 * lift:+.2f} %, p {report_lib._p(p)} {report_lib._significance(p)}") in table
  assert f"{100 * oracle_lift:+.2f} %" in table
  # The second world's own tables ran seed 0 only: its pairs rest on that seed.
  assert pairs[WORLDS[1], grid_lib.UMA2, grid_lib.UMA2_OWN_TABLES]["seeds"] == 1
  # Decomposition of the first world, by hand: (row - GMM(fixed)) / (UMA² - GMM(fixed)).
  mean = {row: np.mean([m["recall@100"] for m, _ in runs(row)]) for row in _LEVEL}
  gain = mean[grid_lib.UMA2] - mean[grid_lib.SS_ABC_FIXED]
  shares = [(mean[row] - mean[grid_lib.SS_ABC_FIXED]) / gain
            for row in (grid_lib.UMA2_MULTITASK, grid_lib.UMA2_OWN_TABLES)]
  found = {(d["world"], d["metric"]): d for d in written["decomposition"]}
  d = found[calm, "recall@100"]
  assert (d["share_multitask"], d["share_own_tables"]) == pytest.approx(shares)
  assert d["seeds"] == [0, 1] and found[WORLDS[1], "recall@100"]["seeds"] == [0]
  assert (f"multi-task only reaches {100 * shares[0]:.0f} % of it, own tables "
          f"{100 * shares[1]:.0f} %") in table
  assert (calm, "oracle_recall@100") in found
  rows = open(tmp_path / "ablation.csv").read().strip().splitlines()
  assert len(rows) == 1 + report["runs"] and rows[0].startswith("world,run_id,row,tower,")
  assert rows[1].startswith(f"{calm},youtube_dnn__ss_abc_random__seed0,")
  assert open(tmp_path / "ablation.png", "rb").read(8) == b"\x89PNG\r\n\x1a\n"


def test_ablation_report_on_partial_worlds(tmp_path):
  grid = grid_lib.ablation_grid((0,))
  # The second world has nothing finished; the first lacks UMA²: no decomposition there.
  skip = {(WORLDS[1], spec) for spec in grid} | {(WORLDS[0], RunSpec(grid_lib.UMA2,
                                                                      "youtube_dnn", 0))}
  _write_runs(str(tmp_path), grid, skip=skip)
  report = ablation_table.write_report(str(tmp_path), WORLDS, grid)
  assert report["runs"] == len(grid) - 1 and report["missing"] == len(grid) + 1
  table = report["table"]
  assert "## uma2_simulated/noisy\n\nNo finished run." in table
  assert "Decomposition: needs GMM(fixed), UMA², multi-task only and own tables." in table
  assert "| multi-task only vs GMM(fixed) |" in table and "UMA² vs GMM(random)" not in table
  with pytest.raises(ValueError, match="no finished run"):
    ablation_table.write_report(str(tmp_path / "empty"), WORLDS, grid)
  with pytest.raises(ValueError, match="config name noisy repeats"):
    ablation_table.check_worlds(["uma2_simulated/noisy", "other/noisy"])


def _cli(*args, **kwargs):
  return subprocess.run([sys.executable, "-m", "pipelines.experiment", *args], cwd=REPO,
                        capture_output=True, text=True, **kwargs)


@pytest.mark.parametrize("flags,named", [
    (["--rows=unknown"], "--rows"),
    (["--towers=esam_dat"], "--towers"),
    (["--datasets=uma2_simulated/a,other/a"], "--datasets"),
])
def test_ablation_cli_bad_flags(tmp_path, flags, named):
  bad = _cli("--table=ablation", f"--report_dir={tmp_path}", *flags, timeout=120)
  assert bad.returncode == 2 and "Traceback" not in bad.stderr, bad.stderr[-2000:]
  assert any(line.startswith(f"error: {named}: ") for line in bad.stderr.splitlines()), bad.stderr


def test_ablation_cli_on_tiny(tmp_path, tiny_data_dir):
  report_dir = str(tmp_path / "report")
  args = ["--table=ablation", "--quick", "--epochs=1", "--datasets=uma2_simulated/tiny",
          "--rows=ss_abc_fixed,uma2_multitask", "--seeds=0", "--batch_size=256",
          f"--data_dir={tiny_data_dir}", f"--report_dir={report_dir}"]
  done = _cli(*args, timeout=900)
  assert done.returncode == 0, done.stderr[-3000:]
  world = os.path.join(report_dir, "tiny")
  assert os.path.exists(os.path.join(world, "experiment_ablation.json"))
  for name in ablation_table.FILES:
    assert os.path.join(report_dir, name) in done.stdout
  table = open(os.path.join(report_dir, "ablation.md")).read()
  assert "# Where UMA²'s gain comes from, on uma2_simulated/tiny: YouTubeDNN, quick" in table
  assert "| multi-task only vs GMM(fixed) |" in table and "| GMM(fixed) |" in table
  run = RunSpec(grid_lib.UMA2_MULTITASK, "youtube_dnn", 0).run_id
  config = training.TrainConfig.load(os.path.join(world, "runs", run))
  assert config.loss.use_nsdn and not config.loss.propensity_weights
  assert config.dataset == "uma2_simulated/tiny" and config.epochs == 1
  # The heads trained (ER/RE terms), the negatives were weighted 1.
  history = open(os.path.join(world, "runs", run, "history.csv")).read().splitlines()
  columns = dict(zip(history[0].split(","), history[-1].split(",")))
  assert float(columns["loss_er"]) > 0 and float(columns["mean_weight_a"]) == 1.0
  # Everything finished: the same command trains nothing.
  again = _cli(*args, timeout=300)
  assert again.returncode == 0 and "0 to train" in again.stderr, again.stderr[-3000:]

"""What a grid costs: the bounds by hand, a measurement on tiny, and `experiment --cost_only`."""
import json
import math
import os
import subprocess
import sys

import pytest

from uma2_tf import run_evaluators, training
from uma2_tf.experiment import grid as grid_lib
from uma2_tf.experiment import grid_cost

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _cell(**fields):
  values = dict(row=grid_lib.UMA2, tower="youtube_dnn", step_seconds=0.1,
                compute_step_seconds=0.08, step_gflop=30.0,
                steps_per_epoch=500, epochs=5, evaluation_seconds=4.0, setup_seconds=10.0)
  return grid_cost.CellCost(**{**values, **fields})


def test_the_bounds_by_hand():
  cell = _cell()
  assert cell.run_seconds == pytest.approx(10 + 5 * (500 * 0.1 + 4))  # 280 s
  # FLOP-bound: 30 GFLOP at 19.5 TFLOP/s x 0.3 = 5.13 ms; the sampler at 51,200 positives/s
  # feeds 512 in 10 ms: input-bound, 10 + 5 * 500 * 0.01 = 35 s.
  assert cell.gpu_seconds(51_200, 512) == pytest.approx(10 + 5 * 500 * 0.01)
  # With a sampler 10x faster the FLOPs bound it.
  flops_step = 30.0 / (grid_cost.GPU_TFLOPS * 1e3 * grid_cost.GPU_UTILISATION)
  assert cell.gpu_seconds(512_000, 512) == pytest.approx(10 + 5 * 500 * flops_step)


def test_the_report_sums_cells_times_seeds(tmp_path):
  cells = [_cell(), _cell(row=grid_lib.SS_A, step_seconds=0.05, evaluation_seconds=2.0)]
  shared = {"input_positives_per_s": 51_200, "batch_size": 512, "train_positives": 256_000}
  markdown = grid_cost.write_report(str(tmp_path), cells, shared, seeds=3)
  written = json.load(open(tmp_path / "grid_cost.json"))
  expected = 3 * (280 + (10 + 5 * (500 * 0.05 + 2)))  # 3 x (280 + 145) = 1275 s
  assert written["total_seconds"] == pytest.approx(expected)
  assert written["gpu_total_seconds"] == pytest.approx(3 * 2 * 35)
  assert [c["run_seconds"] for c in written["cells"]] == pytest.approx([280, 145])
  assert "2 cells × 3 seeds = 6 runs" in markdown
  assert f"≤ {expected / 3600:.1f} h here" in markdown
  assert (tmp_path / "grid_cost.md").read_text() == markdown


def test_measure_on_tiny_one_cost_per_cell(tiny_dataset):
  grid = [grid_lib.RunSpec(grid_lib.SS_A, "youtube_dnn", s) for s in (0, 1)] + [
      grid_lib.RunSpec(grid_lib.UMA2, "youtube_dnn", 0)]
  base = training.TrainConfig(dataset="uma2_simulated/tiny", data_dir=tiny_dataset.directory,
                              batch_size=64, epochs=2)
  costs, shared = grid_cost.measure(grid, base, tiny_dataset, min_seconds=0.5)
  assert [(c.row, c.tower) for c in costs] == [(grid_lib.SS_A, "youtube_dnn"),
                                               (grid_lib.UMA2, "youtube_dnn")]
  holdout = run_evaluators.training_holdout(tiny_dataset, base)
  positives = training.count_positives(tiny_dataset, keep=holdout.train_keep())
  for cost in costs:
    assert cost.steps_per_epoch == math.ceil(positives / 64)
    assert cost.epochs == 2
    assert cost.step_seconds > 0 and cost.compute_step_seconds > 0
    assert cost.evaluation_seconds > 0 and cost.setup_seconds > 0
  # UMA² adds the propensity heads' forward and backward to the same tower's step.
  assert costs[1].step_gflop > costs[0].step_gflop > 0
  assert shared["input_positives_per_s"] > 0 and shared["batch_size"] == 64


def test_cost_only_trains_nothing(tmp_path, tiny_data_dir):
  report_dir = tmp_path / "report"
  process = subprocess.run(
      [sys.executable, "-m", "pipelines.experiment", "--dataset=uma2_simulated/tiny",
       f"--data_dir={tiny_data_dir}", f"--report_dir={report_dir}", "--quick", "--rows=ss_a",
       "--seeds=0,1", "--batch_size=64", "--cost_only"],
      cwd=REPO, capture_output=True, text=True)
  assert process.returncode == 0, process.stderr[-2000:]
  assert "1 cell × 2 seeds = 2 runs" in process.stdout
  assert sorted(os.listdir(report_dir)) == ["grid_cost.json", "grid_cost.md"]

"""The REMI table: its cells' configs, their baselines, and the CLI on tiny data end to end."""
import uma2_tf  # noqa: F401

import json
import os
import subprocess
import sys

import pytest

from uma2_tf import training
from uma2_tf.experiment import grid as grid_lib
from uma2_tf.data import samplers
from uma2_tf.experiment import remi_table
from uma2_tf.tasks import LossConfig
from uma2_tf.tasks.remi import RemiConfig

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_remi_cells_map_to_their_configs():
  grid = grid_lib.remi_grid(seeds=(0, 1))
  assert len(grid) == 3 * 4 * 2
  by_row = {spec.row: spec for spec in grid if spec.tower == "comirec_sa" and spec.seed == 1}
  base = training.TrainConfig()
  configs = {row: spec.train_config(base, "r") for row, spec in by_row.items()}
  for row, config in configs.items():
    assert config.protocol == "sequential" and config.eval_ks == (20, 50)
    assert config.monitor == "recall@50" and config.hard_readout
    assert config.sampling.strategy == "sampled" and config.sampling.seed == 1
    assert not config.loss.use_nsdn and config.tower == "comirec_sa" and config.seed == 1
  betas = {row: (c.remi.ihn_beta, c.remi.rr_lambda) for row, c in configs.items()}
  assert betas == {"base": (0.0, 0.0), "+IHN": (1.0, 0.0), "+RR": (0.0, 12800.0),
                   "+IHN+RR": (1.0, 12800.0)}
  assert configs["+IHN"].output_dir == os.path.join("r", "runs", "comirec_sa__remi_ihn__seed1")
  # The base config's own β and λ, when given, are the table's.
  own = training.TrainConfig(remi=RemiConfig(ihn_beta=10.0, rr_lambda=5.0), tower="mind",
                             loss=LossConfig(use_nsdn=False),
                             sampling=samplers.SamplingConfig(strategy="sampled"))
  config = by_row["+IHN+RR"].train_config(own, "r")
  assert (config.remi.ihn_beta, config.remi.rr_lambda) == (10.0, 5.0)
  assert by_row["+RR"].baseline == grid_lib.RunSpec("base", "comirec_sa", 1)
  assert by_row["base"].baseline is None
  assert by_row["+IHN"].label == "ComiRec-SA +IHN"
  with pytest.raises(ValueError, match="youtube_dnn: not a multi-interest tower"):
    grid_lib.remi_grid(towers=("youtube_dnn",))


def test_remi_cli_trains_and_reports(tmp_path, tiny_data_dir):
  report_dir = str(tmp_path / "remi")
  done = subprocess.run(
      [sys.executable, "-m", "pipelines.experiment", "--table=remi",
       "--dataset=uma2_simulated/tiny", f"--data_dir={tiny_data_dir}",
       f"--report_dir={report_dir}", "--towers=comirec_sa", "--rows=remi_base,remi_ihn_rr",
       "--seeds=0", "--epochs=1", "--batch_size=256", "--num_interests=2"],
      cwd=REPO, capture_output=True, text=True, timeout=1200)
  assert done.returncode == 0, done.stderr[-3000:]
  for name in remi_table.FILES + ("experiment_remi.json",):
    assert os.path.exists(os.path.join(report_dir, name)), name
  table = open(os.path.join(report_dir, "remi.md")).read()
  assert "## ComiRec-SA" in table and "| +IHN+RR |" in table
  assert "The validation users (10 %) are held out of training" in table
  summary = json.load(open(os.path.join(report_dir, "remi.json")))
  (comparison,) = summary["comparisons"]
  assert comparison["row"] == "+IHN+RR" and comparison["against"] == "base"
  assert set(comparison["p_values"]) == {"recall@20", "recall@50", "hitrate@20", "hitrate@50"}
  assert len(summary["collapse"][0]["routing"]["entropy"]) == 2

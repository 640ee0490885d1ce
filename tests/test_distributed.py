"""Training under MirroredStrategy with two replicas (two logical CPUs) equals one device."""
import json
import os
import subprocess
import sys

SCRIPT = os.path.join(os.path.dirname(__file__), "distributed_step.py")


def test_two_replicas_take_the_same_step_as_one_device_and_fit_runs(tiny_data_dir, tmp_path):
  result = subprocess.run([sys.executable, SCRIPT, tiny_data_dir, str(tmp_path)], capture_output=True,
                          text=True, timeout=600)
  assert result.returncode == 0, result.stderr[-3000:]
  report = json.loads(result.stdout.strip().splitlines()[-1])
  assert report["replicas"] == 2
  for name in ("gmm", "uma2"):
    assert report[f"{name}_max_abs_update"] > 0
    # The global batch's gradient, whichever way it is split: the loss terms all-reduce their counts.
    assert report[f"{name}_max_rel_diff"] < 1e-4, report
  assert report["fit_recall@100"] > 0
  assert os.path.exists(os.path.join(tmp_path, "metrics.json"))

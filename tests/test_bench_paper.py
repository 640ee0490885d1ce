"""`make bench ONLY=paper`'s own parts: a stage's time and peak memory, a failing stage, the
figures read from a run and an export, the markdown."""
import json
import sys

import pytest

from pipelines import bench_paper


def test_a_stage_reports_its_childrens_peak_memory():
  # A child of the stage's process holds 400 MB for a second: the stage's peak counts its process
  # tree, and not this (TensorFlow-sized) process it was forked from.
  code = ("import subprocess, sys; subprocess.run([sys.executable, '-c', "
          "'import time; x = bytearray(400 << 20); x[::4096] = b\"1\" * len(x[::4096]); "
          "time.sleep(1)'], check=True)")
  parent = bytearray(1200 << 20)  # This process is large, as a pytest worker with TensorFlow is.
  parent[::4096] = b"1" * len(parent[::4096])
  stage = bench_paper._run_stage([sys.executable, "-c", code])
  del parent
  assert 0.38 <= stage["peak_rss_gb"] < 1.0
  assert stage["wall_s"] > 0


def test_an_unknown_stage_is_one_clear_error():
  with pytest.raises(ValueError, match=r"--paper_stages: unknown stage\(s\) \['trian'\]"):
    bench_paper.Settings(stages=("data", "trian"))


def test_a_failing_stage_stops_the_part_naming_the_command():
  with pytest.raises(RuntimeError, match=r"exited with 3"):
    bench_paper._run_stage([sys.executable, "-c", "raise SystemExit(3)"])


def test_figures_from_the_run_and_the_export(tmp_path):
  run_dir, export_dir = tmp_path / "run", tmp_path / "export"
  run_dir.mkdir()
  (export_dir / "1").mkdir(parents=True)
  (export_dir / "2").mkdir()
  (export_dir / ".tmp-3-1").mkdir()  # A version being written is not read.
  metrics = {"model": {"recall@100": 0.15291, "recall@200": 0.2, "hitrate@100": 0.3,
                       "oracle_recall@100": 0.17},
             "propensity_auc": {"er": 0.90581, "re": 0.8877},
             "run": {"train_seconds": 865.3, "evaluate_seconds": 80.0, "epochs_run": 3,
                     "steps_per_epoch": 1597}}
  (run_dir / "metrics.json").write_text(json.dumps(metrics))
  (export_dir / "1" / "metadata.json").write_text(json.dumps({"scann_check": {"recall": 0.5}}))
  (export_dir / "2" / "metadata.json").write_text(json.dumps(
      {"scann_check": {"recall": 1.0, "speedup_single": 5.34, "qps_scann_single": 1553.2}}))
  settings = bench_paper.Settings(run_dir=str(run_dir), export_dir=str(export_dir),
                                  report_dir=str(tmp_path))
  figures = bench_paper._run_figures(settings)
  figures.update({"paper_train_wall_s": 1174.8, "paper_train_peak_rss_gb": 6.34})
  bench_paper._write_markdown(figures, settings.report_dir)
  assert figures["paper_recall@100"] == 0.1529
  assert figures["paper_auc_er"] == 0.9058
  assert figures["paper_evaluate_seconds"] == 80.0
  assert figures["paper_scann_recall"] == 1.0  # The newest version's.
  assert figures["paper_scann_speedup_single"] == 5.34
  markdown = (tmp_path / "paper_scale.md").read_text()
  assert "| train | 19.6 min | 6.34 GB |" in markdown
  assert "| paper_recall@100 | 0.1529 |" in markdown


def test_no_run_and_no_version_give_no_figures(tmp_path):
  (tmp_path / "export").mkdir()  # An export dir with no version yet.
  settings = bench_paper.Settings(run_dir=str(tmp_path / "none"),
                                  export_dir=str(tmp_path / "export"))
  assert bench_paper._run_figures(settings) == {}

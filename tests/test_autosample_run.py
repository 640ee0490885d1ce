"""The sampler search on TensorFlow (tiny data): one tower and one Adam shared by the candidates,
their state saved and restored, and a search that is an ordinary, exportable run dir, resumed after
a kill as if it had never stopped."""
import uma2_tf  # noqa: F401

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from uma2_tf import evaluation, export, run_dir, training
from uma2_tf.data import splits
from uma2_tf.experiment import autosample, autosample_run, search_space
from uma2_tf.experiment.autosample_trainer import CandidateTrainer, ValidationScorer

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SEARCH = autosample.SearchConfig(candidates=("uniform", "uma2"), budget=3.0, phases=2,
                                 probe_steps=2, score_users=0)


def _base(data_dir, output_dir):
  return training.TrainConfig(dataset="uma2_simulated/tiny", data_dir=data_dir,
                              output_dir=str(output_dir), batch_size=64)


def test_candidates_share_one_tower_and_optimizer_state(tmp_path, tiny_data_dir, tiny_dataset):
  base = _base(tiny_data_dir, tmp_path)
  configs = [c.train_config(base) for c in search_space.parse("uniform,mixed,uma2")]
  holdout = splits.holdout(tiny_dataset, "last_day")
  from uma2_tf import distribute, run_evaluators
  validation = run_evaluators.validation_evaluator(tiny_dataset, base, holdout)
  scorer = ValidationScorer(validation, "recall@100", users=50, seed=0)
  assert scorer.num_users == 50
  trainer = CandidateTrainer(configs, tiny_dataset, holdout, distribute.build_strategy("default"),
                             scorer, str(tmp_path / "phases"), seed=0)
  towers = {id(m.tower) for m in trainer.models}
  assert len(towers) == 1
  assert [m.nsdn is not None for m in trainer.models] == [False, False, True]
  start, fingerprint = trainer.snapshot(), trainer.fingerprint()
  trainer.train(2, 2)
  assert trainer.fingerprint() != fingerprint and int(trainer.optimizer.iterations) == 2
  trainer.restore(start)
  assert trainer.fingerprint() == fingerprint and int(trainer.optimizer.iterations) == 0
  trainer.train(1, 3)
  saved, moments = trainer.fingerprint(), [v.numpy() for v in trainer.optimizer.variables]
  trainer.save_phase(0)
  trainer.train(0, 2)
  trainer.load_phase(0, {0: 0, 1: 3, 2: 2})
  assert trainer.fingerprint() == saved
  for before, after in zip(moments, trainer.optimizer.variables):
    np.testing.assert_array_equal(before, after.numpy())
  assert 0.0 <= trainer.score() <= 1.0


class Killed(Exception):
  pass


def test_search_run_dir_is_a_run_exportable_and_resumable(tmp_path, tiny_data_dir, monkeypatch):
  whole_dir = tmp_path / "whole"
  results = autosample_run.run(_base(tiny_data_dir, whole_dir), SEARCH, verbose=0)
  whole = json.load(open(whole_dir / autosample_run.RESULT_FILE))
  for name in (run_dir.CONFIG, run_dir.METRICS_JSON, run_dir.METRICS_MD, run_dir.PER_USER,
               run_dir.TRAINING, run_dir.SAMPLING):
    assert os.path.exists(whole_dir / name), name
  assert not os.path.exists(whole_dir / autosample_run.PHASES_DIR)  # Removed once finished.
  # 3 epochs of 21 steps: probes 2 + 2 of 2 steps, commits of 28 and 27.
  assert [p["commit_steps"] for p in whole["plan"]] == [28, 27]
  assert whole["compute"]["steps"] == 63
  for record in whole["phases"]:
    won = next(p for p in record["probes"] if p["candidate"] == record["winner"])
    assert record["committed_from_sha256"] == won["weights_sha256"]
  chosen = whole["chosen"]
  assert results["run"]["autosample"]["chosen"] == chosen
  config = training.TrainConfig.load(str(whole_dir))  # The chosen sampler's config.
  assert config == search_space.parse_one(chosen).train_config(_base(tiny_data_dir, whole_dir))
  version = export.export_run(export.ExportConfig(run_dir=str(whole_dir),
                                                  export_dir=str(tmp_path / "export")))
  assert os.path.exists(os.path.join(version, export.RETRIEVAL_MODEL, "saved_model.pb"))
  # The final checkpoint is the model the test day evaluated.
  _, dataset, model = export.load_trained_model(str(whole_dir))
  evaluator = evaluation.Evaluator(dataset, config.eval_ks)
  assert evaluator.model_metrics(model.tower)["recall@100"] == pytest.approx(
      results["model"]["recall@100"], abs=1e-6)

  # The same search killed in its second phase, then resumed: the same probes, scores and choices.
  killed_dir = tmp_path / "killed"
  train = CandidateTrainer.train

  def train_until_phase_1(self, index, steps):
    if os.path.exists(self.phase_checkpoint(0) + ".index"):
      raise Killed()
    return train(self, index, steps)

  monkeypatch.setattr(CandidateTrainer, "train", train_until_phase_1)
  with pytest.raises(Killed):
    autosample_run.run(_base(tiny_data_dir, killed_dir), SEARCH, verbose=0)
  assert len(json.load(open(killed_dir / autosample_run.STATE_FILE))["phases"]) == 1
  monkeypatch.setattr(CandidateTrainer, "train", train)
  autosample_run.run(_base(tiny_data_dir, killed_dir), SEARCH, verbose=0)
  resumed = json.load(open(killed_dir / autosample_run.RESULT_FILE))
  assert [r["winner"] for r in resumed["phases"]] == [r["winner"] for r in whole["phases"]]
  for a, b in zip(resumed["phases"], whole["phases"]):
    assert [p["candidate"] for p in a["probes"]] == [p["candidate"] for p in b["probes"]]
    np.testing.assert_allclose([p["score"] for p in a["probes"]],
                               [p["score"] for p in b["probes"]], atol=1e-3)
  assert resumed["chosen"] == chosen


def test_cli_refuses_what_the_search_cannot_do(tmp_path, tiny_data_dir):
  for flags, message in (
      (["--strategy=multi_worker"], "--strategy=multi_worker: the sampler search runs in one "
                                    "process"),
      (["--candidates=uniform,nope"], "--candidates: unknown sampler 'nope'"),
      (["--budget=0.1"], "--autosample.budget=0.1 epochs is"),
  ):
    done = subprocess.run(
        [sys.executable, "-m", "pipelines.autosample", "--dataset=uma2_simulated/tiny",
         f"--data_dir={tiny_data_dir}", f"--report_dir={tmp_path / 'r'}", "--batch_size=64",
         *flags], cwd=REPO, capture_output=True, text=True, timeout=600)
    assert done.returncode == 2, done.stderr[-2000:]
    assert message in done.stderr, done.stderr[-2000:]


def test_search_under_mirrored_strategy_on_two_logical_cpus(tmp_path, tiny_data_dir):
  done = subprocess.run([sys.executable, os.path.join(REPO, "tests", "autosample_mirrored.py"),
                         tiny_data_dir, str(tmp_path / "run")], cwd=REPO, capture_output=True,
                        text=True, timeout=900)
  assert done.returncode == 0, done.stderr[-3000:]
  report = json.loads(done.stdout.strip().splitlines()[-1])
  assert report["replicas"] == 2
  for record in report["phases"]:  # Snapshots of mirrored variables restore every replica.
    won = next(p for p in record["probes"] if p["candidate"] == record["winner"])
    assert record["committed_from_sha256"] == won["weights_sha256"]
  assert 0.0 < report["recall@100"] <= 1.0


def test_every_search_flag_reaches_the_search_config():
  code = ("import sys; from absl import app; import pipelines.autosample as p\n"
          "sys.argv = ['x', '--budget=8', '--phases=3', '--probe_steps=7', "
          "'--autosample.halving=false', '--autosample.min_probed=3', "
          "'--autosample.score_users=70', '--candidates=uniform,mixed']\n"
          "app.run(lambda argv: print(repr(p.settings()[1])))\n")
  done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True,
                        timeout=600)
  assert done.returncode == 0, done.stderr[-2000:]
  assert done.stdout.strip().splitlines()[-1] == repr(autosample.SearchConfig(
      candidates=("uniform", "mixed"), budget=8.0, phases=3, probe_steps=7, halving=False,
      min_probed=3, score_users=70))

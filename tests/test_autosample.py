"""The sampler search: its candidates, its plan, and the probe-and-commit loop on a planted case
(a trainer whose candidates' effect on the validation score is known)."""
import uma2_tf  # noqa: F401

import dataclasses
import json
import os

import numpy as np
import pytest

from uma2_tf import training
from uma2_tf.experiment import autosample, search_space
from uma2_tf.experiment import grid as grid_lib


# ---- the search space ------------------------------------------------------------------------

def test_candidates_parse_with_their_defaults():
  names = [c.name for c in search_space.parse("uniform, popularity:-0.5,abc,uma2:1:1:1,ihn,mixed")]
  assert names == ["uniform", "popularity:-0.5", "abc:1:4:20", "uma2:1:1:1", "ihn:1", "mixed:512"]
  assert [c.name for c in search_space.parse(list(search_space.DEFAULT))] == [
      "uniform", "popularity:0.75", "in_batch", "in_batch_logq", "mixed:512", "hybrid:0.5",
      "abc:1:4:20", "uma2:1:4:20"]


@pytest.mark.parametrize("names, message", [
    ("uniform,bogus", "unknown sampler 'bogus'"),
    ("popularity:1:2", "'popularity:1:2' takes 1 argument"),
    ("abc:1:x:3", "must be integers"),
    ("abc:0:0:0", "positive sum"),
    ("hybrid:1.5", "share from space B must be in"),
    ("mixed,mixed:512", "mixed:512 named more than once"),
    ("", "no candidate"),
])
def test_bad_candidates_name_the_flag(names, message):
  with pytest.raises(search_space.CandidateError, match="--candidates: .*" + message):
    search_space.parse(names)


def test_default_candidates_are_the_samplers_table_rows_config_for_config():
  """So `experiment --table=samplers` is the default candidates' exhaustive grid."""
  base = training.TrainConfig(seed=1, sampling=dataclasses.replace(
      training.TrainConfig().sampling, seed=1), output_dir="x")
  for candidate in search_space.parse(list(search_space.DEFAULT)):
    row = grid_lib.RunSpec(candidate.grid_row, "youtube_dnn", 1).train_config(base, "r")
    assert candidate.train_config(base) == dataclasses.replace(row, output_dir="x"), \
        candidate.name


def test_candidate_configs():
  base = training.TrainConfig()
  ihn = search_space.parse_one("ihn:10").train_config(base)
  assert ihn.sampling.strategy == "sampled" and ihn.remi.ihn_beta == 10.0
  assert not ihn.loss.use_nsdn
  uma2 = search_space.parse_one("uma2:1:1:1").train_config(base)
  assert uma2.sampling.ratio == (1, 1, 1) and uma2.loss.use_nsdn
  assert search_space.parse_one("uma2:1:1:1").grid_row is None
  pop = search_space.parse_one("popularity:-0.5").train_config(base)
  assert (pop.sampling.strategy, pop.sampling.popularity_alpha) == ("popularity", -0.5)
  assert search_space.parse_one("in_batch").train_config(base).softmax.logq == "none"


# ---- the plan --------------------------------------------------------------------------------

def test_plan_by_hand():
  # 8 candidates, halving: 8, 4, 2, 2, 2, 2 probed = 20 probes of 20 steps = 400 steps; 4 epochs
  # of 271 steps = 1084; 684 left for 6 commits = 114 each.
  config = autosample.SearchConfig(budget=4.0, phases=6, probe_steps=20)
  phases = autosample.plan(config, 8, 271)
  assert [p.probed for p in phases] == [8, 4, 2, 2, 2, 2]
  assert [p.commit_steps for p in phases] == [114] * 6
  # 5 candidates, no halving, 3 phases: 15 probes of 10 = 150; 2.5 * 100 = 250; 100 over 3.
  config = autosample.SearchConfig(candidates=("uniform", "mixed", "uma2", "ihn", "abc"),
                                   budget=2.5, phases=3, probe_steps=10, halving=False)
  phases = autosample.plan(config, 5, 100)
  assert [(p.probed, p.commit_steps) for p in phases] == [(5, 34), (5, 33), (5, 33)]
  assert autosample.probed_counts(dataclasses.replace(config, halving=True, min_probed=3), 5) \
      == [5, 3, 3]


def test_a_budget_the_probes_eat_names_the_flags():
  config = autosample.SearchConfig(budget=1.0, phases=6, probe_steps=20)
  with pytest.raises(ValueError, match=r"--autosample.budget=1.0 epochs is 271 steps .* the "
                     r"probes alone take 400 .* leaving 0 for --autosample.phases=6"):
    autosample.plan(config, 8, 271)
  with pytest.raises(ValueError, match="--autosample.phases must be >= 1"):
    autosample.SearchConfig(phases=0)
  with pytest.raises(search_space.CandidateError):
    autosample.SearchConfig(candidates=("nope",))


# ---- the loop on a planted case --------------------------------------------------------------

class PlantedTrainer:
  """Weights are one number w; a step of candidate k adds gain_k(w) plus the noise of its own
  stream (a function of the seed, k and the stream's position); the validation score is w.
  `stop_in_phase`: raise when the train calls reach that phase (a kill), after the phases before
  it were saved."""

  def __init__(self, gains, seed=0, stop_in_phase=None):
    self.gains = gains  # candidate index -> function of w: gain per step
    self.seed, self.stop_in_phase = seed, stop_in_phase
    self.w, self.saved, self.calls, self.position = 0.0, {}, [], {}

  def snapshot(self):
    return self.w

  def restore(self, snapshot):
    self.w = snapshot

  def train(self, index, steps):
    if len(self.saved) == self.stop_in_phase:
      raise KeyboardInterrupt("killed")
    for _ in range(steps):
      t = self.position.get(index, 0)
      noise = np.random.default_rng([autosample.stream_seed(self.seed, index), t]).normal(0, 1e-3)
      self.w += self.gains[index](self.w) + noise
      self.position[index] = t + 1
    self.calls.append((index, steps))
    return 0.5 * steps

  def score(self):
    return self.w

  def fingerprint(self):
    return format(self.w, ".12f")

  def save_phase(self, phase):
    self.saved[phase] = self.w

  def load_phase(self, phase, consumed):
    self.w, self.position = self.saved[phase], dict(consumed)


CANDIDATES = ("uniform", "mixed", "uma2", "hybrid")
STEADY = [lambda w: 0.01, lambda w: 0.03, lambda w: 0.02, lambda w: 0.0]


def _search(trainer, tmp_path, seed=0, name="state.json", **kwargs):
  config = autosample.SearchConfig(candidates=CANDIDATES, budget=3.0, phases=4, probe_steps=5,
                                   **kwargs)
  state = autosample.StateFile(str(tmp_path / name), {"seed": seed, "candidates": CANDIDATES})
  return autosample.search(trainer, config, 100, state)


def test_search_commits_to_the_planted_best(tmp_path):
  records = _search(PlantedTrainer(STEADY), tmp_path)
  assert [r["winner"] for r in records] == ["mixed:512"] * 4
  # Halving: all four, then the better two by the last probes (mixed, uma2).
  assert [[p["candidate"] for p in r["probes"]] for r in records] == [
      list(autosample.search_space.parse(CANDIDATES)[i].name for i in range(4)),
      ["mixed:512", "uma2:1:4:20"], ["mixed:512", "uma2:1:4:20"], ["mixed:512", "uma2:1:4:20"]]
  for r in records:  # The commit starts from the winner's probe, not from the phase's start.
    won = next(p for p in r["probes"] if p["candidate"] == r["winner"])
    assert r["committed_from_sha256"] == won["weights_sha256"]
  assert autosample.selected_phase(records)["phase"] == 3
  # 300 steps: probes 4+2+2+2 = 10 of 5 = 50, commits 250 / 4 = 63, 63, 62, 62.
  assert autosample.compute(records)["steps"] == 300
  assert [r["commit_steps"] for r in records] == [63, 63, 62, 62]


def test_search_follows_a_schedule_when_the_best_sampler_changes(tmp_path):
  # uniform helps most while w < 1, mixed after: the search switches, as a curriculum would.
  gains = [lambda w: 0.02 if w < 1 else 0.0, lambda w: 0.005 if w < 1 else 0.02,
           lambda w: 0.0, lambda w: 0.0]
  records = _search(PlantedTrainer(gains), tmp_path, halving=False)
  winners = [r["winner"] for r in records]
  assert winners[0] == "uniform" and winners[-1] == "mixed:512"


def test_same_seed_same_choices_and_scores(tmp_path):
  a = _search(PlantedTrainer(STEADY, seed=3), tmp_path, seed=3, name="a.json")
  b = _search(PlantedTrainer(STEADY, seed=3), tmp_path, seed=3, name="b.json")
  assert a == b
  c = _search(PlantedTrainer(STEADY, seed=4), tmp_path, seed=4, name="c.json")
  assert [r["winner"] for r in c] == [r["winner"] for r in a]
  assert c[0]["probes"][0]["score"] != a[0]["probes"][0]["score"]  # Its own random streams.


def test_a_killed_search_resumes_where_it_stopped(tmp_path):
  whole = _search(PlantedTrainer(STEADY), tmp_path, name="whole.json")
  trainer = PlantedTrainer(STEADY, stop_in_phase=2)
  with pytest.raises(KeyboardInterrupt):
    _search(trainer, tmp_path, name="killed.json")
  state = json.load(open(tmp_path / "killed.json"))
  assert len(state["phases"]) == 2
  trainer.stop_in_phase, trainer.calls = None, []
  # Whatever the process held: the resume reads the phase checkpoint and the streams' positions.
  trainer.w, trainer.position = 123.0, {}
  resumed = _search(trainer, tmp_path, name="killed.json")
  assert resumed == whole
  assert len(trainer.calls) == 2 * 3  # Phases 3 and 4 only: two probes and a commit each.
  with pytest.raises(ValueError, match="holds a search with another config \\(seed differ\\)"):
    _search(PlantedTrainer(STEADY), tmp_path, seed=1, name="killed.json")


def test_selected_phase_is_the_best_committed_score():
  records = [{"phase": 0, "score": 0.2}, {"phase": 1, "score": 0.5}, {"phase": 2, "score": 0.5},
             {"phase": 3, "score": 0.4}]
  assert autosample.selected_phase(records)["phase"] == 1


def test_stream_seeds_are_distinct_per_candidate_and_seed():
  seeds = {autosample.stream_seed(s, k) for s in range(10) for k in range(20)}
  assert len(seeds) == 10 * 20
  records = [{"probes": [{"candidate": "a", "steps": 5}, {"candidate": "b", "steps": 5}],
              "winner": "b", "commit_steps": 40}, {"probes": [{"candidate": "b", "steps": 5}],
                                                   "winner": "b", "commit_steps": 30}]
  assert autosample.consumed_steps(records, ["a", "b", "c"]) == {0: 5, 1: 80, 2: 0}
  assert os.path.basename(autosample.StateFile("a/b.json", {}).path) == "b.json"


# ---- the report against the grid, by hand -----------------------------------------------------

def _finished_run(path, recall, train_seconds, epochs_run, steps_per_epoch, users=(1, 2, 3, 4)):
  os.makedirs(path, exist_ok=True)
  per_user = {"recall@100": np.array([recall - 0.01, recall + 0.01, recall - 0.02, recall + 0.02])}
  np.savez(os.path.join(path, "per_user.npz"), user_id=np.array(users), **per_user)
  metrics = {"model": {"recall@100": recall, "hitrate@100": recall + 0.1},
             "run": {"train_seconds": train_seconds, "epochs_run": epochs_run,
                     "steps_per_epoch": steps_per_epoch}}
  json.dump(metrics, open(os.path.join(path, "metrics.json"), "w"))


def _search_dir(path, seed, recall, steps, seconds):
  _finished_run(path, recall, seconds, steps / 100, 100)
  phases = [{"phase": 0, "probes": [{"candidate": "mixed:512", "steps": 5, "seconds": 1.0,
                                     "score": 0.5, "weights_sha256": "a"},
                                    {"candidate": "uniform", "steps": 5, "seconds": 1.0,
                                     "score": 0.1, "weights_sha256": "b"}],
             "winner": "mixed:512", "committed_from_sha256": "a", "commit_steps": steps - 10,
             "commit_seconds": seconds - 2, "score": 0.6, "weights_sha256": "c"}]
  summary = {"seed": seed, "candidates": ["uniform", "mixed:512"], "tower": "youtube_dnn",
             "search": dataclasses.asdict(autosample.SearchConfig(
                 candidates=("uniform", "mixed"), phases=1, probe_steps=5)),
             "steps_per_epoch": 100, "score_users": 50, "monitor": "recall@100",
             "plan": [{"probed": 2, "probe_steps": 5, "commit_steps": steps - 10}],
             "phases": phases, "selected_phase": 0, "chosen": "mixed:512",
             "compute": autosample.compute(phases), "wall_seconds": seconds + 3}
  json.dump(summary, open(os.path.join(path, "autosample.json"), "w"))


def test_report_against_the_grid_by_hand(tmp_path):
  from uma2_tf.experiment import autosample_report

  grid = tmp_path / "grid"
  for seed, (uniform, mixed) in enumerate(((0.30, 0.70), (0.32, 0.74))):
    _finished_run(grid / "runs" / f"youtube_dnn__ss_abc_random__seed{seed}", uniform, 50.0, 2, 100)
    _finished_run(grid / "runs" / f"youtube_dnn__mixed__seed{seed}", mixed, 30.0, 3, 100)
  dirs = [str(tmp_path / "s" / f"seed{seed}") for seed in (0, 1)]
  for seed, recall in ((0, 0.70), (1, 0.72)):
    _search_dir(dirs[seed], seed, recall, steps=120, seconds=20.0)
  report = autosample_report.write_report(str(tmp_path / "s"), dirs, str(grid), title="t")
  comp = report["comparison"]
  assert comp["best"] == "mixed:512" and comp["best_metric"] == pytest.approx(0.72)
  assert comp["share_of_best"] == pytest.approx(0.71 / 0.72)
  # Grid per seed: uniform 2 epochs x 100 steps, 50 s; mixed 3 x 100, 30 s.
  assert (comp["grid_steps"], comp["grid_train_seconds"]) == (500, 80)
  assert comp["steps_ratio"] == pytest.approx(120 / 500)
  assert comp["seconds_ratio"] == pytest.approx(20 / 80)
  assert not comp["beats_every_candidate"] and comp["complete_grid"]
  # Paired over users: the search minus mixed is -0.00, -0.02 on every user, seed-averaged -0.01.
  assert comp["p_value_vs_best"] == pytest.approx(float("nan"), nan_ok=True)
  table = report["table"]
  assert "reaches **98.6 %** of the best single candidate" in table
  assert "with **24.0 %** of the exhaustive grid's training steps (120 of 500 per seed)" in table
  assert "| 1 | mixed:512 0.5000, uniform 0.1000 | `mixed:512` | 110 | 0.6000 (selected) |" in table
  # The winner's probe (5) and the commit (110); the grid's candidates ran 250 steps on average.
  assert "Its model trained 115 steps" in table
  assert "a candidate of the grid 250 on average" in table
  assert "on the same tower and seeds, each trained for 2-3 epochs." in table
  for path in report["paths"].values():
    assert os.path.getsize(path) > 0

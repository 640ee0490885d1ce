"""AutoSample's search: which negative sampler to train with, phase by phase, chosen on validation.

    config = SearchConfig(candidates=("uniform", "mixed", "uma2"), budget=4.0)
    phases = plan(config, num_candidates=3, steps_per_epoch=271)   # steps of each phase
    records = search(trainer, config, steps_per_epoch=271, state=StateFile("state.json", {...}))

Probe and commit (docs/DESIGN.md, "The sampler search", says why this form): each phase starts
from the weights the last one committed; every candidate still in the race trains `probe_steps`
from those same weights (optimiser state included) on its own negatives, the monitored metric of a
fixed validation subset scores it, and training continues from the best candidate's weights (its
probe is kept, not redone) for the phase's commit steps on that candidate's negatives. With
`halving` only the better half of a phase's candidates (at least `min_probed`) is probed in the
next. The search follows validation quality, never the training loss, whose minimum favours the
easiest negatives.

`trainer` does the training (`autosample_trainer.CandidateTrainer` on TensorFlow): `snapshot()` /
`restore(s)`, `train(index, steps) -> seconds` (the next `steps` batches of candidate `index`'s
own stream, seeded by `stream_seed(seed, index)`), `score() -> float`, `fingerprint() -> str`,
`save_phase(phase)` / `load_phase(phase, consumed)`. A search is thus a function of its seed, and
one resumed from its state file after phase k (`load_phase(k, steps each stream had given)`) goes
on as if it had never stopped.
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
from typing import Callable, Sequence

from absl import logging

from uma2_tf import atomic_files
from uma2_tf.experiment import search_space


@dataclasses.dataclass(frozen=True)
class SearchConfig:
  """The sampler search.

  Attributes:
    candidates: candidate samplers (`search_space` names).
    budget: training steps of the whole search, probes included, in epochs of the training
      positives.
    phases: probe-and-commit phases; each commits to one sampler.
    probe_steps: training steps of each probe.
    halving: probe only the better half (by the last probe scores) of the last phase's probed
      candidates, at least `min_probed`; False: every candidate in every phase.
    min_probed: fewest candidates probed in a phase.
    score_users: validation users (a fixed random subset) a probe is scored on; 0: all of them.
  """

  candidates: tuple[str, ...] = search_space.DEFAULT
  budget: float = 4.0
  phases: int = 6
  probe_steps: int = 20
  halving: bool = True
  min_probed: int = 2
  score_users: int = 5000

  def __post_init__(self):
    search_space.parse(self.candidates)
    for name in ("phases", "probe_steps", "min_probed"):
      if getattr(self, name) < 1:
        raise ValueError(f"--autosample.{name} must be >= 1, got {getattr(self, name)}")
    if not self.budget > 0:
      raise ValueError(f"--autosample.budget must be > 0 epochs, got {self.budget}")
    if self.score_users < 0:
      raise ValueError(f"--autosample.score_users must be >= 0, got {self.score_users}")


@dataclasses.dataclass(frozen=True)
class PhasePlan:
  probed: int  # candidates probed
  probe_steps: int  # steps of each probe
  commit_steps: int  # steps on the winner after its probe


def probed_counts(config: SearchConfig, num_candidates: int) -> list[int]:
  """How many candidates each phase probes."""
  counts, n = [], num_candidates
  for _ in range(config.phases):
    counts.append(n)
    if config.halving:
      n = min(n, max(config.min_probed, math.ceil(n / 2)))
  return counts


def plan(config: SearchConfig, num_candidates: int, steps_per_epoch: int) -> list[PhasePlan]:
  """Each phase's steps: the budget less every probe, split evenly over the phases' commits;
  ValueError naming the flags when the probes leave a phase no commit step."""
  total = round(config.budget * steps_per_epoch)
  counts = probed_counts(config, num_candidates)
  probing = sum(counts) * config.probe_steps
  committing = total - probing
  if committing < config.phases:
    raise ValueError(
        f"--autosample.budget={config.budget} epochs is {total} steps ({steps_per_epoch} per "
        f"epoch); the probes alone take {probing} ({sum(counts)} probes of "
        f"--autosample.probe_steps={config.probe_steps}), leaving {max(committing, 0)} for "
        f"--autosample.phases={config.phases} commits: raise the budget or lower probe_steps, "
        f"phases or the candidates")
  base, extra = divmod(committing, config.phases)
  return [PhasePlan(n, config.probe_steps, base + (i < extra)) for i, n in enumerate(counts)]


def stream_seed(seed: int, index: int) -> int:
  """The sampler seed of candidate `index`'s stream in a search of `seed`."""
  return seed * 1009 + index


def consumed_steps(records: Sequence[dict], names: Sequence[str]) -> dict[int, int]:
  """Candidate index -> the steps its stream gave in `records` (its probes and commits)."""
  consumed = {i: 0 for i in range(len(names))}
  for r in records:
    for p in r["probes"]:
      consumed[names.index(p["candidate"])] += p["steps"]
    consumed[names.index(r["winner"])] += r["commit_steps"]
  return consumed


def _ranked(scores: dict[str, float], order: Sequence[str]) -> list[str]:
  """Names by decreasing score, equal scores in `order` (the candidates' order)."""
  return sorted(scores, key=lambda name: (-scores[name], order.index(name)))


def next_probed(record: dict, count: int, order: Sequence[str]) -> list[str]:
  """The `count` best candidates of a phase's probes."""
  return _ranked({p["candidate"]: p["score"] for p in record["probes"]}, order)[:count]


class StateFile:
  """The search so far (`<run>/autosample_state.json`): its config and one record per phase."""

  def __init__(self, path: str, identity: dict):
    self.path = path
    self.identity = json.loads(json.dumps(identity))  # As read back: tuples are lists.

  def load(self) -> list[dict]:
    """The finished phases of a search with this identity; [] for a new one; ValueError for a
    state file another search wrote."""
    if not os.path.exists(self.path):
      return []
    with open(self.path) as f:
      state = json.load(f)
    if state.get("identity") != self.identity:
      differ = sorted(k for k in set(state.get("identity", {})) | set(self.identity)
                      if state.get("identity", {}).get(k) != self.identity.get(k))
      raise ValueError(f"{self.path} holds a search with another config ({', '.join(differ)} "
                       f"differ): rerun with its flags to resume it, or choose another "
                       f"--output_dir")
    return state["phases"]

  def save(self, phases: list[dict]) -> None:
    atomic_files.atomic_write_text(self.path, json.dumps(
        {"identity": self.identity, "phases": phases}, indent=2))


def search(trainer, config: SearchConfig, steps_per_epoch: int, state: StateFile,
           progress: Callable[[str, int], None] | None = None) -> list[dict]:
  """Runs (or resumes) the search; returns one record per phase.

  A phase's record: `probes` (candidate, steps, seconds, score, weights_sha256 after the probe),
  `winner`, `committed_from_sha256` (the weights the commit started from: the winner's probe's),
  `commit_steps`, `commit_seconds`, `score` (validation after the commit) and `weights_sha256`.
  `progress(what, steps)` is called after every train call.
  """
  names = [c.name for c in search_space.parse(config.candidates)]
  phases = plan(config, len(names), steps_per_epoch)
  records = state.load()
  if records:
    trainer.load_phase(len(records) - 1, consumed_steps(records, names))
  for index in range(len(records), len(phases)):
    phase = phases[index]
    probed = next_probed(records[-1], phase.probed, names) if records else names
    start = trainer.snapshot()
    probes, best, best_snapshot = [], None, None
    for name in probed:
      trainer.restore(start)
      seconds = trainer.train(names.index(name), phase.probe_steps)
      score = trainer.score()
      probes.append({"candidate": name, "steps": phase.probe_steps, "seconds": round(seconds, 3),
                     "score": score, "weights_sha256": trainer.fingerprint()})
      if progress:
        progress(f"phase {index + 1}/{len(phases)}: probe {name}", phase.probe_steps)
      if best is None or score > best["score"]:
        best, best_snapshot = probes[-1], trainer.snapshot()
    trainer.restore(best_snapshot)  # The winner's probe is kept: training goes on from it.
    winner = best["candidate"]
    committed_from = trainer.fingerprint()
    seconds = trainer.train(names.index(winner), phase.commit_steps)
    if progress:
      progress(f"phase {index + 1}/{len(phases)}: commit {winner}", phase.commit_steps)
    records.append({"phase": index, "probes": probes, "winner": winner,
                    "committed_from_sha256": committed_from, "commit_steps": phase.commit_steps,
                    "commit_seconds": round(seconds, 3), "score": trainer.score(),
                    "weights_sha256": trainer.fingerprint()})
    trainer.save_phase(index)
    state.save(records)  # After the phase's weights: the record says they are complete.
    logging.info("autosample phase %d/%d: probed %s; committed to %s, validation %.4f",
                 index + 1, len(phases), ", ".join(f"{p['candidate']} {p['score']:.4f}"
                                                   for p in probes), winner, records[-1]["score"])
  return records


def winner_probe(record: dict) -> dict:
  """A phase's probe of the candidate it committed to (the weights its commit started from)."""
  return next(p for p in record["probes"] if p["candidate"] == record["winner"])


def selected_phase(records: Sequence[dict]) -> dict:
  """The phase whose committed weights score best on validation (the earliest of equals): the
  search's model."""
  return max(records, key=lambda r: (r["score"], -r["phase"]))


def compute(records: Sequence[dict]) -> dict:
  """Training steps and seconds the search spent, probes and commits apart."""
  probe_steps = sum(p["steps"] for r in records for p in r["probes"])
  commit_steps = sum(r["commit_steps"] for r in records)
  probe_seconds = sum(p["seconds"] for r in records for p in r["probes"])
  commit_seconds = sum(r["commit_seconds"] for r in records)
  return {"steps": probe_steps + commit_steps, "probe_steps": probe_steps,
          "commit_steps": commit_steps, "train_seconds": round(probe_seconds + commit_seconds, 1),
          "probe_seconds": round(probe_seconds, 1), "commit_seconds": round(commit_seconds, 1)}

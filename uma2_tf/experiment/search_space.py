"""The candidate samplers of the sampler search (`experiment.autosample`), named on the command
line.

    candidates = search_space.parse("uniform,popularity:0.5,popularity:1,mixed,uma2,ihn:10")
    config = candidates[0].train_config(base)    # `base` (a TrainConfig) drawing its negatives

A candidate is a name with optional `:`-separated arguments; each maps to the trainer's own
sampler and loss settings (`TrainConfig.sampling`, `.loss`, `.softmax`, `.remi`):

| candidate           | negatives and loss                                                    |
|---------------------|-----------------------------------------------------------------------|
| ss_a                | exposed-unclicked items only, BCE                                     |
| uniform             | uniform corpus items, BCE (SS-ABC(random))                            |
| abc[:a:b:c]         | spaces A:B:C at that ratio (default 1:4:20), BCE (SS-ABC(fixed))      |
| uma2[:a:b:c]        | the same negatives with NSDN's inverse-propensity weights (UMA²)      |
| popularity[:α]      | popularity^α over training clicks (default 0.75), BCE                 |
| in_batch            | softmax over the batch's positives, no logQ                           |
| in_batch_logq       | the same with logQ from training clicks                               |
| mixed[:B']          | in-batch plus B' uniform corpus items (default 512), logQ             |
| hybrid[:share]      | that share from space B, the rest uniform (default 0.5), BCE          |
| ihn[:β]             | REMI's sampled softmax over 1280 shared uniform items, IHN weights    |
|                     | e^{βs} (default β 1; 0 is the plain sampled softmax)                  |

Every candidate but `uma2` is a plain GMM (no NSDN heads). `DEFAULT` is the negative samplers'
table without SS-A (which that table shows is no retrieval negative): each of its candidates has
exactly the config of that table's row (`grid_row`), so `experiment --table=samplers` is their
exhaustive grid.
"""
from __future__ import annotations

import dataclasses
from typing import Sequence

from uma2_tf.experiment import grid as grid_lib

DEFAULT = ("uniform", "popularity:0.75", "in_batch", "in_batch_logq", "mixed", "hybrid:0.5",
           "abc:1:4:20", "uma2")
# name -> (number of arguments it takes, their defaults).
_ARGUMENTS = {
    "ss_a": 0, "uniform": 0, "in_batch": 0, "in_batch_logq": 0,
    "abc": 3, "uma2": 3, "popularity": 1, "mixed": 1, "hybrid": 1, "ihn": 1,
}
_DEFAULTS = {"abc": (1, 4, 20), "uma2": (1, 4, 20), "popularity": (0.75,), "mixed": (512,),
             "hybrid": (0.5,), "ihn": (1.0,)}
# The negative samplers' table's row each default-argument candidate is.
_GRID_ROWS = {"ss_a": grid_lib.SS_A, "uniform": grid_lib.SS_ABC_RANDOM,
              "popularity:0.75": grid_lib.POPULARITY, "in_batch": grid_lib.IN_BATCH,
              "in_batch_logq": grid_lib.IN_BATCH_LOGQ, "mixed:512": grid_lib.MIXED,
              "hybrid:0.5": grid_lib.HYBRID, "abc:1:4:20": grid_lib.SS_ABC_FIXED,
              "uma2:1:4:20": grid_lib.UMA2}


class CandidateError(ValueError):
  """A candidate name that is not in the search space, or its arguments are wrong."""


@dataclasses.dataclass(frozen=True)
class Candidate:
  """One sampler of the search space: `kind` with its `args` (defaults filled in)."""

  kind: str
  args: tuple = ()

  @property
  def name(self) -> str:
    """Canonical name, every argument spelt out: `abc:1:4:20`, `popularity:0.75`, `uniform`."""
    return ":".join([self.kind] + [_format(a) for a in self.args])

  @property
  def grid_row(self) -> str | None:
    """The negative samplers' table's row with this exact config (None if it has none)."""
    return _GRID_ROWS.get(self.name)

  @property
  def uses_nsdn(self) -> bool:
    return self.kind == "uma2"

  def train_config(self, base):
    """`base` (a `TrainConfig`) drawing its negatives with this candidate; tower, optimiser, data,
    seed and output dir are base's."""
    sampling = {"strategy": "ss_abc_fixed"}
    softmax, remi = base.softmax, dataclasses.replace(base.remi, ihn_beta=0.0)
    if self.kind in ("abc", "uma2"):
      sampling["ratio"] = tuple(int(x) for x in self.args)
    elif self.kind == "ss_a":
      sampling["strategy"] = "ss_a"
    elif self.kind == "uniform":
      sampling["strategy"] = "ss_abc_random"
    elif self.kind == "popularity":
      sampling.update(strategy="popularity", popularity_alpha=float(self.args[0]))
    elif self.kind in ("in_batch", "in_batch_logq"):
      sampling["strategy"] = "in_batch"
      softmax = dataclasses.replace(softmax, logq="counts" if self.kind == "in_batch_logq"
                                    else "none")
    elif self.kind == "mixed":
      sampling.update(strategy="mixed", corpus_negatives=int(self.args[0]))
      softmax = dataclasses.replace(softmax, logq="counts")
    elif self.kind == "hybrid":
      sampling.update(strategy="hybrid", hybrid_share=float(self.args[0]),
                      c_distribution="uniform")
    elif self.kind == "ihn":
      sampling["strategy"] = "sampled"
      remi = dataclasses.replace(remi, ihn_beta=float(self.args[0]))
    loss = dataclasses.replace(base.loss, use_nsdn=self.uses_nsdn, propensity_weights=True,
                               weight_normalization="none")
    return dataclasses.replace(
        base, loss=loss, softmax=softmax, remi=remi,
        sampling=dataclasses.replace(base.sampling, **sampling))


def parse_one(text: str) -> Candidate:
  """`popularity:0.5` -> Candidate("popularity", (0.5,)); CandidateError naming what is wrong."""
  kind, *raw = text.strip().split(":")
  if kind not in _ARGUMENTS:
    raise CandidateError(f"--candidates: unknown sampler {text!r}; the search space is "
                         f"{', '.join(sorted(_ARGUMENTS))} (see `experiment.search_space`)")
  expected = _ARGUMENTS[kind]
  if raw and len(raw) != expected:
    raise CandidateError(f"--candidates: {text!r} takes {expected} argument(s) after {kind}:, "
                         f"got {len(raw)}")
  if not raw:
    return Candidate(kind, _DEFAULTS.get(kind, ()))
  try:
    args = tuple(int(x) for x in raw) if kind in ("abc", "uma2", "mixed") else \
        tuple(float(x) for x in raw)
  except ValueError:
    raise CandidateError(f"--candidates: {text!r}: the arguments of {kind} must be "
                         f"{'integers' if kind in ('abc', 'uma2', 'mixed') else 'numbers'}") \
        from None
  _check(kind, args, text)
  return Candidate(kind, args)


def parse(names: str | Sequence[str]) -> list[Candidate]:
  """Candidates from a comma-separated string or a list of names; CandidateError for an empty
  list, an unknown name or a candidate named twice."""
  if isinstance(names, str):
    names = [n for n in names.split(",") if n.strip()]
  candidates = [parse_one(n) for n in names]
  if not candidates:
    raise CandidateError("--candidates: no candidate sampler given")
  seen = [c.name for c in candidates]
  twice = sorted({n for n in seen if seen.count(n) > 1})
  if twice:
    raise CandidateError(f"--candidates: {', '.join(twice)} named more than once")
  return candidates


def _check(kind: str, args: tuple, text: str) -> None:
  if kind in ("abc", "uma2") and (min(args) < 0 or sum(args) == 0):
    raise CandidateError(f"--candidates: {text!r}: the A:B:C ratio must be >= 0 with a positive "
                         "sum")
  if kind == "hybrid" and not 0 <= args[0] <= 1:
    raise CandidateError(f"--candidates: {text!r}: the share from space B must be in [0, 1]")
  if kind == "mixed" and args[0] < 1:
    raise CandidateError(f"--candidates: {text!r}: B' must be >= 1")
  if kind == "ihn" and args[0] < 0:
    raise CandidateError(f"--candidates: {text!r}: β must be >= 0")


def _format(value) -> str:
  return format(value, "g") if isinstance(value, float) else str(value)

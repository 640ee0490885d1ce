"""`SamplingConfig`: which sampler draws a run's negatives, with its knobs; `build` makes it.

    config = SamplingConfig(strategy="ss_abc_fixed")                 # UMA²'s A:B:C = 1:4:20
    config = SamplingConfig(strategy="popularity", popularity_alpha=0.75)
    config = SamplingConfig(strategy="in_batch")                     # softmax over the batch
    config = SamplingConfig(strategy="mixed", corpus_negatives=256)
    config = SamplingConfig(strategy="hybrid", hybrid_share=0.5)
    config = SamplingConfig(strategy="sampled", sampled_negatives=1280)   # REMI's sampled softmax
    sampler = config.build(dataset)                                  # a reading.BuiltDataset

| strategy      | negatives of a positive                                   | module        |
|---------------|-----------------------------------------------------------|---------------|
| ss_a ...      | from the request's spaces A/B/C (paper Table 1)           | `spaces`      |
| popularity    | `num_negatives` from popularity^α over the corpus         | `popularity`  |
| hybrid        | `hybrid_share` from space B ("advanced"), the rest naive  | `hybrid`      |
|               | (uniform or popularity^α over the corpus)                 |               |
| in_batch      | the other positives of the batch (softmax loss)           | `in_batch`    |
| mixed         | in-batch plus `corpus_negatives` uniform corpus items     | `mixed`       |
|               | shared by the batch                                       |               |
| sampled       | `sampled_negatives` uniform corpus items shared by the    | `mixed`       |
|               | batch, without in-batch ones (REMI's sampled softmax)     |               |

Popularity and hybrid draws are labelled with the space they fall in, so the pointwise loss (and
NSDN, if asked) reads them like SS-ABC(random)'s; in-batch, mixed and sampled have no spaces.
"""
from __future__ import annotations

import dataclasses
from typing import Sequence

from uma2_tf.data import schema as schema_lib
from uma2_tf.data.samplers import hybrid, in_batch, mixed, popularity, spaces

STRATEGIES = spaces.SPACE_STRATEGIES + ("popularity", "hybrid", "in_batch", "mixed", "sampled")
# Samplers whose examples have no per-positive negatives: the softmax runs over the batch's items.
SOFTMAX_STRATEGIES = ("in_batch", "mixed", "sampled")


@dataclasses.dataclass(frozen=True)
class SamplingConfig:
  """How negatives are drawn. Defaults are the paper's (UMA² with SS-ABC(fixed), 25 negatives).

  Attributes:
    strategy: one of `STRATEGIES` (`--negatives`).
    num_negatives: negatives per positive (not used by in_batch / mixed).
    ratio: A:B:C proportions for `ss_abc_fixed` (A:B for `ss_ab`); counts are the ratio scaled to
      `num_negatives` by largest remainder.
    c_distribution: corpus draws (C of ss_abc_*, hybrid's naive share) are `uniform` over the
      corpus, or `popularity`: (count + 1)^popularity_alpha.
    popularity_alpha: the exponent of popularity draws (the `popularity` strategy's and
      c_distribution's); < 0 favours the tail.
    popularity_source: counts of popularity draws: training `clicks` or `exposures`.
    c_oversample: C candidates drawn per C slot before removing those in the recall set.
    hybrid_share: the share of a hybrid positive's negatives drawn from space B (the items that
      lost in the serving pipeline; `b_stages` picks the stages); the rest are naive corpus draws.
    corpus_negatives: B', the corpus items `mixed` adds to every batch (uniform, shared).
    sampled_negatives: M, the uniform corpus items `sampled` draws per batch, shared by its
      positives (REMI's default 1280).
    max_history: history length kept per example (the newest clicks).
    requests_per_batch: requests sampled together in one vectorised step.
    seed: seed of every random choice of the pipeline.
    b_stages: stage names (of the dataset's `LogSchema.stages`) whose recalled-unexposed items form
      the B pool; empty: every recalled-unexposed item.
  """

  strategy: str = "ss_abc_fixed"
  num_negatives: int = 25
  ratio: tuple[int, int, int] = (1, 4, 20)
  c_distribution: str = "uniform"
  popularity_alpha: float = 0.75
  popularity_source: str = "clicks"
  c_oversample: float = 2.0
  hybrid_share: float = 0.5
  corpus_negatives: int = 512
  sampled_negatives: int = 1280
  max_history: int = 50
  requests_per_batch: int = 256
  seed: int = 0
  b_stages: tuple[str, ...] = ()

  def __post_init__(self):
    if isinstance(self.b_stages, str):
      raise ValueError(f"b_stages must be a sequence of stage names, got the string "
                       f"{self.b_stages!r}")
    object.__setattr__(self, "b_stages", tuple(self.b_stages))  # A list from JSON or flags.
    if not all(isinstance(s, str) and s for s in self.b_stages) or \
        len(set(self.b_stages)) != len(self.b_stages):
      raise ValueError(f"b_stages must be distinct non-empty stage names, got {self.b_stages}")
    if self.strategy not in STRATEGIES:
      raise ValueError(f"sampling strategy must be one of {STRATEGIES}, got {self.strategy!r}")
    if self.c_distribution not in spaces.C_DISTRIBUTIONS:
      raise ValueError(f"c_distribution must be one of {spaces.C_DISTRIBUTIONS}, "
                       f"got {self.c_distribution!r}")
    if self.popularity_source not in popularity.POPULARITY_SOURCES:
      raise ValueError(f"popularity_source must be one of {popularity.POPULARITY_SOURCES}, "
                       f"got {self.popularity_source!r}")
    if self.num_negatives < 1:
      raise ValueError(f"num_negatives must be >= 1, got {self.num_negatives}")
    if len(self.ratio) != 3 or any(r < 0 for r in self.ratio) or sum(self.ratio) == 0:
      raise ValueError(f"ratio must be three non-negative integers A:B:C, not all 0; "
                       f"got {self.ratio}")
    if self.strategy == "ss_ab" and self.ratio[0] + self.ratio[1] == 0:
      raise ValueError(f"ss_ab needs a non-zero A:B part in ratio, got {self.ratio}")
    if self.c_oversample < 1:
      raise ValueError(f"c_oversample must be >= 1, got {self.c_oversample}")
    if not 0.0 <= self.hybrid_share <= 1.0:
      raise ValueError(f"hybrid_share must be in [0, 1], got {self.hybrid_share}")
    if self.corpus_negatives < 1 or self.sampled_negatives < 1:
      raise ValueError(f"corpus_negatives and sampled_negatives must be >= 1, got "
                       f"{self.corpus_negatives} and {self.sampled_negatives}")
    if self.max_history < 1 or self.requests_per_batch < 1:
      raise ValueError("max_history and requests_per_batch must be >= 1")

  @property
  def is_softmax(self) -> bool:
    """Whether the sampler's negatives are the batch's items (a softmax task trains on them)."""
    return self.strategy in SOFTMAX_STRATEGIES

  @property
  def has_spaces(self) -> bool:
    """Whether every negative carries its space (A/B/C): what NSDN and ESAM need."""
    return not self.is_softmax

  def space_counts(self) -> tuple[int, int, int]:
    """Slots per space (A, B, C) for every positive; corpus draws (ss_abc_random, popularity,
    hybrid's naive share) take C's place and are labelled with the space they fall in."""
    n = self.num_negatives
    if self.strategy == "ss_a":
      return (n, 0, 0)
    if self.strategy in ("ss_abc_random", "popularity") or self.is_softmax:
      return (0, 0, n)
    if self.strategy == "hybrid":
      return hybrid.space_counts(n, self.hybrid_share)
    weights = self.ratio if self.strategy == "ss_abc_fixed" else (self.ratio[0], self.ratio[1], 0)
    return largest_remainder(weights, n)

  def asks_for_b(self) -> bool:
    """Whether the strategy draws from space B."""
    # ss_abc_random and popularity only label corpus draws that happen to fall in B.
    return self.strategy in ("ss_ab", "ss_abc_fixed", "hybrid") and self.space_counts()[1] > 0

  def check_for_schema(self, schema: schema_lib.LogSchema,
                       dataset_name: str = "the dataset") -> None:
    spaces.check_config_for_schema(self, schema, dataset_name)

  def build(self, dataset):
    """The sampler of this config for a `reading.BuiltDataset`."""
    names = dataset.schema.user_feature_names
    if self.strategy == "in_batch":
      return in_batch.InBatchSampler(self, names)
    if self.strategy == "mixed":
      return mixed.MixedSampler(self, dataset.schema.num_items, names)
    if self.strategy == "sampled":
      return mixed.MixedSampler(self, dataset.schema.num_items, names,
                                count=self.sampled_negatives)
    return spaces.NegativeSampler(
        self, dataset.schema.num_items, names,
        popularity.catalog_counts(dataset.catalog, self.popularity_source),
        stages=dataset.schema.stages)


def largest_remainder(weights: Sequence[float], total: int) -> tuple[int, ...]:
  """`total` split in proportion to `weights`, the remainder to the largest fractions."""
  quotas = [w * total / sum(weights) for w in weights]
  counts = [int(q) for q in quotas]
  order = sorted(range(len(weights)), key=lambda i: (-(quotas[i] - counts[i]), i))
  for i in order[:total - sum(counts)]:
    counts[i] += 1
  return tuple(counts)

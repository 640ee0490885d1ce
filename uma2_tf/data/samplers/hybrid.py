"""Hybrid negatives: a share of "advanced" negatives that lost in the serving pipeline, the rest
"naive" corpus draws (industry's 50/50 mix of hard and easy negatives).

    config = SamplingConfig(strategy="hybrid", hybrid_share=0.5, c_distribution="popularity")
    n_a, n_b, n_naive = hybrid.space_counts(25, 0.5)        # (0, 13, 12)

Advanced negatives are drawn from the request's space B (recalled, not exposed; on logs with
stages, only the stages `b_stages` names, e.g. RecFlow's `rank_neg`); naive ones uniformly or by
popularity^α over the whole corpus, each labelled with the space it falls in (`spaces`). The
exposed-unclicked items (A) are not used: on their own they are the wrong negatives for retrieval.
The draws themselves are `spaces.NegativeSampler`'s; this module decides the split.
"""
from __future__ import annotations

import math


def space_counts(num_negatives: int, share: float) -> tuple[int, int, int]:
  """(A, B, naive) slots of a positive: `share` of `num_negatives` from B, rounded half up."""
  advanced = min(num_negatives, int(math.floor(num_negatives * share + 0.5)))
  return (0, advanced, num_negatives - advanced)

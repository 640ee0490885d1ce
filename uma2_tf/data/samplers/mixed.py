"""Mixed negative sampling (Yang et al., WWW 2020): in-batch negatives plus B' items drawn
uniformly from the whole corpus once per batch and shared by all its positives.

    config = SamplingConfig(strategy="mixed", corpus_negatives=512)
    batch["pos_item"]       # int64[B]
    batch["corpus_items"]   # int64[B']: uniform over ids 1..num_items-1, with replacement

The corpus items reach the tail the batch's positives never show, which in-batch sampling alone
undersamples. The task's logQ then uses the mixed probability Q*_j = (B·p_j + B'/N) / (B + B')
(`tasks.retrieval`). Under `tf.distribute` every replica draws its own B' (its own input
pipeline and seed).

The `sampled` strategy draws the same way (`sampled_negatives` items); its task (`tasks.remi`)
scores each positive against those shared items only, not against the batch's other positives.
"""
from __future__ import annotations

from uma2_tf.data.batch_keys import CORPUS_ITEMS
from uma2_tf.data.samplers import in_batch, popularity


class MixedSampler(in_batch.InBatchSampler):
  """In-batch examples; `per_batch` adds `corpus_items` [B'] to each training batch."""

  adds_per_batch = True

  def __init__(self, config, num_items: int, user_features=(), count: int | None = None):
    super().__init__(config, user_features)
    self.corpus = popularity.CorpusDistribution.uniform(num_items)
    # `sampled` (REMI's sampled softmax) draws its own number, `sampled_negatives`.
    self.count = config.corpus_negatives if count is None else count

  def per_batch(self, batch: dict, seed) -> dict:
    return {**batch, CORPUS_ITEMS: self.corpus.draw([self.count], seed)}

"""From request records to training examples: one positive with its A/B/C negatives.

Every clicked item of a request becomes one training example with `num_negatives` negatives drawn
from the three spaces of that same request (DESIGN.md §1-2):

  A  exposed but not clicked          drawn from the request's exposure
  B  recalled but not exposed         drawn from the request's recall set minus its exposure
  C  never recalled                   drawn from the whole corpus minus the request's recall set,
                                      uniformly or by popularity^alpha

Strategies (paper Table 1), all with the same number of negatives per positive:

  ss_a           all negatives from A
  ss_ab          A and B in the ratio's A:B proportion
  ss_abc_random  uniform over the whole corpus (minus the request's clicks); each draw is labelled
                 with the space it falls in, so the mix follows the spaces' sizes
  ss_abc_fixed   A:B:C in a fixed ratio, 1:4:20 by default (UMA²'s choice)

The same sampler draws the `popularity` strategy (every slot a labelled corpus draw, like
ss_abc_random, from popularity^α: `popularity`) and `hybrid` (a share from B, the rest labelled
corpus draws: `hybrid`); `config.SamplingConfig.space_counts` gives each strategy's slots.

B restricted by stage: on logs that say which pipeline stage each recalled item reached
(`LogSchema.stages`, e.g. RecFlow's `prerank_neg` .. `rerank_pos`), `SamplingConfig.b_stages` keeps
in the B pool only the recalled-unexposed items whose `recalled_stage` is one of the named stages
(`b_stages=("rank_neg",)`: the "hard negatives from ranking" of two-tower practice). Items of the
other stages are still recalled, so they are never drawn as C either; they are simply not used.
`b_stages` shapes the pool that `ss_ab` and `ss_abc_fixed` draw B from; `ss_abc_random` labels its
uniform draws with the unrestricted spaces. Empty `b_stages` (the default): every recalled-unexposed
item is B.

Logs without a recall log (`LogSchema.has_recall_log` False, e.g. exposure-only logs) have no space
B: asking for B there (`ss_ab`, or `ss_abc_fixed` with a B part in `ratio`) is a ValueError from
`make_training_dataset`, never silently padded.

A pool smaller than asked is sampled with replacement; an empty pool leaves its slots padded (item
0) and masked. Both cases are counted per example in `fill_events` (see `FILL_EVENTS`), so a
report can say how often they happen; nothing is silently replaced by another space.

Usage:

    config = SamplingConfig(strategy="ss_abc_fixed", num_negatives=25)
    ds = samplers.make_training_dataset(dataset, config, batch_size=512)   # a reading.BuiltDataset
    for batch in ds.take(1):
      batch["pos_item"]      # int64[512]
      batch["neg_items"]     # int64[512, 25]
      batch["neg_space"]     # int32[512, 25]: SPACE_A, SPACE_B or SPACE_C
      batch["neg_recalled"]  # float32[512, 25]: 1 for A and B (ER task label)
      batch["neg_exposed"]   # float32[512, 25]: 1 for A (RE task label)
      batch["neg_mask"]      # float32[512, 25]: 0 for padded slots

The positive is always recalled and exposed. User fields (`user_id`, the user features, `history`
with the last `max_history` clicks, newest last, right-padded with 0) and `request_id`, `day`
travel with each example. Item features are not joined here: the model looks them up in the
catalog by id.

All sampling runs inside the tf.data graph, vectorised over a batch of requests, with stateless
random ops seeded from (`seed`, epoch, batch): the same seed gives the same examples, and each epoch
draws new negatives.
"""
from __future__ import annotations

from typing import Mapping, Optional, Sequence

import numpy as np

from uma2_tf.data import schema as schema_lib
from uma2_tf.data.batch_keys import (FILL_EVENTS_KEY, NEG_EXPOSED, NEG_ITEMS, NEG_MASK,
                                     NEG_RECALLED, NEG_SPACE, SPACE_A, SPACE_B, SPACE_C)
from uma2_tf.data.samplers import base, popularity, ragged_ops

C_DISTRIBUTIONS = ("uniform", "popularity")
# The strategies this module samples; `config.STRATEGIES` lists every sampler.
SPACE_STRATEGIES = ("ss_a", "ss_ab", "ss_abc_random", "ss_abc_fixed")
# Corpus draws of these keep the space they fall in (A, B or C) instead of being drawn outside the
# recall set: uniform or popularity^α over the whole corpus.
LABELLED_CORPUS = ("ss_abc_random", "popularity", "hybrid")


def check_config_for_schema(config, schema: schema_lib.LogSchema,
                            dataset_name: str = "the dataset") -> tuple[int, ...]:
  """Raises ValueError when `config` asks for something the dataset's logs do not have.

  Returns the stage ids (1-based indices into `schema.stages`) of `config.b_stages`; () for all.
  """
  if not schema.has_recall_log and config.asks_for_b():
    n = config.num_negatives
    raise ValueError(
        f"{dataset_name} has no space B (no recall log: its records' recall set is only the "
        f"exposure), but strategy {config.strategy} with ratio {':'.join(map(str, config.ratio))} "
        f"asks for B negatives; use A and C only, e.g. --strategy_name=ss_abc_fixed "
        f"--ratio=1,0,{max(n - 1, 1)} (or ss_a / ss_abc_random)")
  return stage_ids(config.b_stages, schema.stages, dataset_name)


def stage_ids(b_stages: Sequence[str], stages: Sequence[str],
              dataset_name: str = "the dataset") -> tuple[int, ...]:
  """The `recalled_stage` values (1-based indices into `stages`) of the stage names `b_stages`."""
  stages = tuple(stages)
  if not b_stages:
    return ()
  if not stages:
    raise ValueError(
        f"b_stages={list(b_stages)} needs a dataset that records the pipeline stage of each "
        f"recalled item, but {dataset_name}'s schema has no stages (e.g. recflow has them)")
  unknown = [s for s in b_stages if s not in stages]
  if unknown:
    raise ValueError(f"b_stages names unknown stage(s) {unknown}; {dataset_name} has the stages "
                     f"{list(stages)}")
  return tuple(stages.index(s) + 1 for s in b_stages)


class NegativeSampler(base.Sampler):
  """Turns a batch of parsed request records into per-positive training examples.

  Args:
    config: the sampling configuration.
    num_items: item-id vocabulary size (ids 1..num_items-1 are items, 0 is padding).
    user_features: names of the categorical user fields carried into each example.
    click_count: int[num_items] training clicks per item (needed for `popularity` C sampling).
    stages: the dataset's `LogSchema.stages`; needed when `config.b_stages` is set (the records
      then carry `recalled_stage`).

  Call it on the dict `schema.parse_requests` returns, with a stateless seed (int64[2]).
  """

  def __init__(self, config, num_items: int, user_features: Sequence[str] = (),
               click_count: Optional[np.ndarray] = None, stages: Sequence[str] = ()):
    self.config = config
    self.b_stage_ids = stage_ids(config.b_stages, stages)
    self.num_items = int(num_items)
    self.user_features = tuple(user_features)
    self.counts = config.space_counts()
    self.labelled_corpus = config.strategy in LABELLED_CORPUS
    n_c = self.counts[2]
    self.num_c_draws = int(np.ceil(n_c * config.c_oversample)) + (8 if n_c else 0)
    if config.strategy == "popularity" or config.c_distribution == "popularity":
      if click_count is None or len(click_count) != self.num_items:
        raise ValueError("popularity draws need per-item counts with one entry per item id")
      self.corpus = popularity.CorpusDistribution.popularity(click_count, config.popularity_alpha)
    else:
      self.corpus = popularity.CorpusDistribution.uniform(self.num_items)

  def c_probabilities(self) -> np.ndarray:
    """P(item) of one corpus draw before exclusions; float64[num_items], entry 0 is 0."""
    return self.corpus.probabilities()

  def __call__(self, requests: Mapping, seed) -> dict:
    import tensorflow as tf

    cfg = self.config
    n_a, n_b, n_c = self.counts
    seeds = tf.random.experimental.stateless_split(tf.cast(seed, tf.int64), 4)

    exposed = requests[schema_lib.EXPOSED]
    recalled = requests[schema_lib.RECALLED]
    is_click = tf.equal(requests[schema_lib.CLICKED], 1)
    positives = tf.ragged.boolean_mask(exposed, is_click)
    a_pool = tf.ragged.boolean_mask(exposed, tf.logical_not(is_click))
    unexposed = tf.logical_not(ragged_ops.row_isin(recalled, exposed, self.num_items))
    if self.b_stage_ids:
      stage = tf.cast(requests[schema_lib.RECALLED_STAGE].flat_values, tf.int64)
      in_stages = tf.reduce_any(
          tf.equal(stage[:, tf.newaxis], tf.constant(self.b_stage_ids, tf.int64)[tf.newaxis, :]),
          axis=1)
      b_pool_mask = unexposed.with_flat_values(tf.logical_and(unexposed.flat_values, in_stages))
    else:
      b_pool_mask = unexposed
    b_pool = tf.ragged.boolean_mask(recalled, b_pool_mask)

    row = positives.value_rowids()  # Request of each positive.
    pos_items = positives.flat_values
    num_pos = tf.shape(pos_items, out_type=tf.int64)[0]

    parts_items, parts_space, parts_mask = [], [], []
    events = []
    for pool, n, space, s in ((a_pool, n_a, SPACE_A, seeds[0]), (b_pool, n_b, SPACE_B, seeds[1])):
      if n == 0:
        events += [tf.zeros([num_pos], tf.int32)] * 2
        continue
      items, mask, replaced, padded = ragged_ops.draw_from_pools(pool, row, n, s)
      parts_items.append(items)
      parts_mask.append(mask)
      parts_space.append(tf.fill(tf.shape(items), space))
      events += [tf.cast(replaced, tf.int32), tf.cast(padded, tf.int32)]

    c_pad = tf.zeros([num_pos], tf.int32)
    if n_c:
      draws = self._draw_corpus(num_pos, seeds[2])
      if self.labelled_corpus:
        # Over the whole corpus: only the request's positives are excluded; each draw keeps the
        # space it falls in.
        excluded = positives
      else:
        excluded = recalled
      ok = tf.logical_not(ragged_ops.isin_rows(row, draws, excluded, self.num_items))
      items, mask = ragged_ops.first_valid(draws, ok, n_c)
      c_pad = tf.cast(tf.reduce_any(tf.logical_not(mask), axis=1), tf.int32)
      if self.labelled_corpus:
        in_a = ragged_ops.isin_rows(row, items, a_pool, self.num_items)
        # The unrestricted B (recalled, not exposed): b_stages only shapes the pool drawn from.
        full_b = tf.ragged.boolean_mask(recalled, unexposed) if self.b_stage_ids else b_pool
        in_b = ragged_ops.isin_rows(row, items, full_b, self.num_items)
        space = tf.where(in_a, SPACE_A, tf.where(in_b, SPACE_B, SPACE_C))
      else:
        space = tf.fill(tf.shape(items), SPACE_C)
      parts_items.append(items)
      parts_mask.append(mask)
      parts_space.append(space)
    events.append(c_pad)

    neg_items = tf.concat(parts_items, axis=1)
    neg_mask = tf.cast(tf.concat(parts_mask, axis=1), tf.float32)
    neg_space = tf.cast(tf.concat(parts_space, axis=1), tf.int32)
    neg_items = tf.where(neg_mask > 0, neg_items, tf.zeros_like(neg_items))
    # A labelled corpus draw is recalled and exposed as the space it fell in says.
    neg_recalled = tf.cast(neg_space != SPACE_C, tf.float32)
    neg_exposed = tf.cast(neg_space == SPACE_A, tf.float32)
    n = cfg.num_negatives

    _, example = base.positive_examples(requests, self.user_features, cfg.max_history, positives)
    example.update({
        NEG_ITEMS: tf.ensure_shape(neg_items, [None, n]),
        NEG_SPACE: tf.ensure_shape(neg_space, [None, n]),
        NEG_RECALLED: tf.ensure_shape(neg_recalled * neg_mask, [None, n]),
        NEG_EXPOSED: tf.ensure_shape(neg_exposed * neg_mask, [None, n]),
        NEG_MASK: tf.ensure_shape(neg_mask, [None, n]),
        FILL_EVENTS_KEY: tf.stack(events, axis=1),
    })
    return example

  def _draw_corpus(self, num_pos, seed):
    import tensorflow as tf

    return self.corpus.draw(tf.stack([num_pos, self.num_c_draws]), seed)

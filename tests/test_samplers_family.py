"""The samplers beyond A/B/C: popularity^α, hybrid, in-batch and mixed, on hand-made requests and
on real batches of `tiny` (SAMPLERS §1, §3, §4)."""
import uma2_tf  # noqa: F401

import numpy as np
import pytest
import scipy.stats
import tensorflow as tf

from uma2_tf.data import batch_keys
from uma2_tf.data import samplers
from uma2_tf.data import schema as schema_lib
from uma2_tf.data.batch_keys import SPACE_A, SPACE_B, SPACE_C
from uma2_tf.data.samplers import SamplingConfig, hybrid, popularity

SCHEMA = schema_lib.LogSchema(num_users=11, num_items=51, user_features={"age": 5},
                              item_features={"category": 4})


def parse(records):
  features = schema_lib.tfds_features(SCHEMA)
  serialized = tf.constant([features.serialize_example(r) for r in records])
  return schema_lib.parse_requests(serialized, SCHEMA)


def request(rid, exposed, clicked, recalled):
  return {"request_id": rid, "day": 1, "user_id": rid, "age": 1,
          "history": np.array([7, 8], np.int64), "exposed": np.array(exposed),
          "clicked": np.array(clicked), "recalled": np.array(recalled)}


@pytest.mark.parametrize("alpha,expected", [
    (0.75, (0.826822, 0.147032, 0.026146)),   # word2vec's exponent
    (-0.5, (0.070610, 0.223289, 0.706101)),   # a negative α favours the tail
    (1.0, (100 / 111, 10 / 111, 1 / 111)),    # the unigram
    (0.0, (1 / 3, 1 / 3, 1 / 3)),             # uniform
])
def test_popularity_probabilities_match_the_worked_numbers(alpha, expected):
  # SAMPLERS §1: counts (100, 10, 1); id 0 is padding and never drawn.
  probs = popularity.popularity_probabilities([0, 100, 10, 1], alpha, smoothing=0.0)
  assert probs[0] == 0.0
  np.testing.assert_allclose(probs[1:], expected, atol=1e-6)


def test_popularity_smoothing_gives_unclicked_items_a_finite_weight():
  # (0 + 1)^-0.5 = 1, (3 + 1)^-0.5 = 0.5 -> 2/3, 1/3.
  np.testing.assert_allclose(popularity.popularity_probabilities([0, 0, 3], -0.5),
                             [0, 2 / 3, 1 / 3])
  with pytest.raises(ValueError, match="positive counts"):
    popularity.popularity_probabilities([0, 0, 3], -0.5, smoothing=0.0)


def test_corpus_draws_follow_the_distribution():
  counts = np.array([0, 100, 10, 1, 0, 40])
  corpus = popularity.CorpusDistribution.popularity(counts, 0.75)
  draws = corpus.draw([200, 500], tf.constant([3, 4], tf.int64)).numpy().ravel()
  observed = np.bincount(draws, minlength=len(counts))
  assert observed[0] == 0
  expected = corpus.probabilities() * draws.size
  assert scipy.stats.chisquare(observed[1:], expected[1:]).pvalue > 1e-3
  uniform = popularity.CorpusDistribution.uniform(6).draw([10000], tf.constant([1, 2], tf.int64))
  assert set(np.unique(uniform.numpy())) == {1, 2, 3, 4, 5}


def test_popularity_source_picks_clicks_or_exposures(tiny_dataset):
  for source, counts in (("clicks", tiny_dataset.catalog.click_count),
                         ("exposures", tiny_dataset.catalog.exposure_count)):
    sampler = SamplingConfig(strategy="popularity", popularity_alpha=0.5,
                             popularity_source=source).build(tiny_dataset)
    np.testing.assert_allclose(sampler.c_probabilities(),
                               popularity.popularity_probabilities(counts, 0.5))


@pytest.mark.parametrize("n,share,expected", [
    (25, 0.5, (0, 13, 12)), (24, 0.5, (0, 12, 12)), (25, 0.0, (0, 0, 25)), (25, 1.0, (0, 25, 0)),
    (10, 0.25, (0, 3, 7)),
])
def test_hybrid_split(n, share, expected):
  assert hybrid.space_counts(n, share) == expected
  assert SamplingConfig(strategy="hybrid", num_negatives=n, hybrid_share=share).space_counts() \
      == expected


def test_popularity_and_hybrid_label_each_draw_with_its_space():
  # Request 1 exposes 1..3 (2 clicked), recalls 1..9: A {1, 3}, B {4..9}; everything else is C.
  records = [request(1, [1, 2, 3], [0, 1, 0], [1, 2, 3, 4, 5, 6, 7, 8, 9])]
  parsed = parse(records)
  a_pool, b_pool = {1, 3}, set(range(4, 10))
  for strategy in ("popularity", "hybrid"):
    config = SamplingConfig(strategy=strategy, num_negatives=40, hybrid_share=0.5)
    # Popularity skewed to the recall set, so A and B draws do happen.
    counts = np.zeros(SCHEMA.num_items)
    counts[1:10] = 1000
    sampler = samplers.NegativeSampler(config, SCHEMA.num_items, ["age"], counts)
    example = {k: v.numpy() for k, v in sampler(parsed, tf.constant([5, 6], tf.int64)).items()}
    items, space = example["neg_items"][0], example["neg_space"][0]
    assert 2 not in items  # The request's own click is never its negative.
    for item, s in zip(items, space):
      assert s == (SPACE_A if item in a_pool else SPACE_B if item in b_pool else SPACE_C)
    np.testing.assert_array_equal(example["neg_recalled"][0], (space != SPACE_C).astype(np.float32))
    np.testing.assert_array_equal(example["neg_exposed"][0], (space == SPACE_A).astype(np.float32))
    if strategy == "hybrid":  # 20 advanced slots from B first, then 20 naive corpus draws.
      assert set(items[:20]) <= b_pool and (space[:20] == SPACE_B).all()
    assert (space == SPACE_A).any() and (space == SPACE_B).any()


def test_hybrid_needs_space_b():
  no_recall = schema_lib.LogSchema(num_users=11, num_items=51, user_features={}, item_features={},
                                   has_recall_log=False)
  with pytest.raises(ValueError, match="no space B"):
    SamplingConfig(strategy="hybrid").check_for_schema(no_recall, "logs")
  SamplingConfig(strategy="popularity").check_for_schema(no_recall, "logs")  # Needs no B.


@pytest.mark.parametrize("kwargs,message", [
    (dict(strategy="in_batches"), "strategy"), (dict(hybrid_share=1.5), "hybrid_share"),
    (dict(corpus_negatives=0), "corpus_negatives"), (dict(popularity_source="views"), "source"),
])
def test_bad_config_is_rejected(kwargs, message):
  with pytest.raises(ValueError, match=message):
    SamplingConfig(**kwargs)


def test_in_batch_examples_carry_positives_only_and_every_click_once(tiny_dataset):
  config = SamplingConfig(strategy="in_batch", max_history=5)
  seen = []
  for batch in samplers.make_training_dataset(tiny_dataset, config, batch_size=100):
    assert not any(k.startswith("neg_") for k in batch)
    assert batch["history"].shape[1] == 5
    assert batch[batch_keys.FILL_EVENTS_KEY].numpy().sum() == 0
    seen += list(zip(batch["request_id"].numpy(), batch["pos_item"].numpy()))
  expected = []
  for requests in samplers.base.reading.read_requests(tiny_dataset.split_files["train"],
                                                       tiny_dataset.schema, 512):
    clicked = tf.ragged.boolean_mask(requests["exposed"], requests["clicked"] == 1)
    for rid, items in zip(requests["request_id"].numpy(), clicked.to_list()):
      expected += [(rid, item) for item in items]
  assert sorted(seen) == sorted(expected)


def test_mixed_adds_shared_uniform_corpus_items_per_batch(tiny_dataset):
  config = SamplingConfig(strategy="mixed", corpus_negatives=300)
  batches = list(samplers.make_training_dataset(tiny_dataset, config, batch_size=64).take(20))
  corpus = np.stack([b[batch_keys.CORPUS_ITEMS].numpy() for b in batches])
  assert corpus.shape == (20, 300)
  assert corpus.min() >= 1 and corpus.max() < tiny_dataset.schema.num_items
  assert not (corpus[0] == corpus[1]).all()  # A new draw every batch.
  # Uniform over the corpus: every decile of ids gets about a tenth of the draws.
  deciles = np.bincount((corpus.ravel() - 1) * 10 // (tiny_dataset.schema.num_items - 1), None, 10)
  assert scipy.stats.chisquare(deciles).pvalue > 1e-3
  again = list(samplers.make_training_dataset(tiny_dataset, config, batch_size=64).take(2))
  np.testing.assert_array_equal(again[1][batch_keys.CORPUS_ITEMS], corpus[1])  # Seeded.

"""The A/B/C sampling pipeline, checked on hand-made requests and on real batches of `tiny`."""
import uma2_tf  # noqa: F401

import numpy as np
import pytest
import scipy.stats
import tensorflow as tf

from uma2_tf.data import batch_keys
from uma2_tf.data import reading
from uma2_tf.data import samplers
from uma2_tf.data import schema as schema_lib
from uma2_tf.data.batch_keys import SPACE_A, SPACE_B, SPACE_C
from uma2_tf.data.samplers import SamplingConfig, spaces

SCHEMA = schema_lib.LogSchema(num_users=11, num_items=51, user_features={"age": 5},
                              item_features={"category": 4})


def parse(records, schema=SCHEMA):
  features = schema_lib.tfds_features(schema)
  serialized = tf.constant([features.serialize_example(r) for r in records])
  return schema_lib.parse_requests(serialized, schema)


def request(rid, exposed, clicked, recalled, history=()):
  return {"request_id": rid, "day": 1, "user_id": rid, "age": 1,
          "history": np.array(history, np.int64), "exposed": np.array(exposed),
          "clicked": np.array(clicked), "recalled": np.array(recalled)}


def numpy(example):
  return {k: v.numpy() for k, v in example.items()}


@pytest.mark.parametrize("strategy,ratio,n,expected", [
    ("ss_a", (1, 4, 20), 25, (25, 0, 0)),
    ("ss_ab", (1, 4, 20), 25, (5, 20, 0)),
    ("ss_abc_fixed", (1, 4, 20), 25, (1, 4, 20)),
    ("ss_abc_random", (1, 4, 20), 25, (0, 0, 25)),
    ("ss_abc_fixed", (1, 1, 1), 10, (4, 3, 3)),
    ("ss_abc_fixed", (1, 4, 20), 50, (2, 8, 40)),
])
def test_space_counts(strategy, ratio, n, expected):
  assert SamplingConfig(strategy=strategy, ratio=ratio, num_negatives=n).space_counts() == expected


@pytest.mark.parametrize("kwargs,message", [
    (dict(strategy="ss_c"), "strategy"), (dict(num_negatives=0), "num_negatives"),
    (dict(ratio=(1, 4)), "ratio"), (dict(c_distribution="zipf"), "c_distribution"),
])
def test_bad_config_is_rejected(kwargs, message):
  with pytest.raises(ValueError, match=message):
    SamplingConfig(**kwargs)


def test_small_pools_are_resampled_and_empty_pools_padded_and_counted():
  # Request 1: A pool {1, 3} (2 < 5 asked for by ss_ab), B pool {4..9} (6 < 20).
  # Request 2: no A (the one exposed item is clicked), B pool {21}.
  records = [request(1, [1, 2, 3], [0, 1, 0], [1, 2, 3, 4, 5, 6, 7, 8, 9]),
             request(2, [20], [1], [20, 21])]
  sampler = samplers.NegativeSampler(SamplingConfig(strategy="ss_ab"), SCHEMA.num_items, ["age"])
  ex = numpy(sampler(parse(records), tf.constant([3, 4], tf.int64)))
  np.testing.assert_array_equal(ex["pos_item"], [2, 20])
  np.testing.assert_array_equal(ex["request_id"], [1, 2])
  assert set(ex["neg_items"][0, :5]) <= {1, 3} and set(ex["neg_items"][0, 5:]) <= set(range(4, 10))
  np.testing.assert_array_equal(ex["neg_mask"][0], np.ones(25))
  np.testing.assert_array_equal(ex["neg_items"][1, :5], np.zeros(5))  # Padded...
  np.testing.assert_array_equal(ex["neg_mask"][1, :5], np.zeros(5))  # ...and masked.
  np.testing.assert_array_equal(ex["neg_items"][1, 5:], np.full(20, 21))
  np.testing.assert_array_equal(ex["neg_space"][1], [SPACE_A] * 5 + [SPACE_B] * 20)
  np.testing.assert_array_equal(ex["neg_exposed"][1], np.zeros(25))  # Padded A is no label.
  # fill_events: a_with_replacement, a_padded, b_with_replacement, b_padded, c_padded.
  np.testing.assert_array_equal(ex["fill_events"], [[1, 0, 1, 0, 0], [0, 1, 1, 0, 0]])


def test_pools_at_least_as_large_as_asked_are_sampled_without_replacement():
  recalled = list(range(1, 41))
  records = [request(1, [1, 2, 3, 4, 5, 6], [1, 0, 0, 0, 0, 0], recalled)]
  config = SamplingConfig(strategy="ss_ab", num_negatives=25, ratio=(1, 4, 0))
  sampler = samplers.NegativeSampler(config, SCHEMA.num_items, ["age"])
  for seed in range(5):
    ex = numpy(sampler(parse(records), tf.constant([seed, 0], tf.int64)))
    a, b = ex["neg_items"][0, :5], ex["neg_items"][0, 5:]
    assert sorted(a) == [2, 3, 4, 5, 6]  # Exactly the pool, each once.
    assert len(set(b)) == 20 and set(b) <= set(range(7, 41))
    np.testing.assert_array_equal(ex["fill_events"][0], np.zeros(5))


def test_history_keeps_the_newest_clicks_right_padded():
  records = [request(1, [1, 2], [1, 0], [1, 2, 3], history=[11, 12, 13, 14]),
             request(2, [1, 2], [1, 0], [1, 2, 3], history=[15])]
  sampler = samplers.NegativeSampler(SamplingConfig(max_history=3), SCHEMA.num_items, ["age"])
  ex = numpy(sampler(parse(records), tf.constant([0, 0], tf.int64)))
  np.testing.assert_array_equal(ex["history"], [[12, 13, 14], [15, 0, 0]])
  np.testing.assert_array_equal(ex["age"], [1, 1])


def test_popularity_c_sampling_matches_its_distribution():
  """Chi-square goodness of fit of C draws against (clicks + 1)^alpha outside the recall set."""
  num_items = 31
  click_count = np.concatenate([[0], np.arange(30) ** 2])  # Item i has (i - 1)^2 clicks.
  recalled = [1, 2, 3, 30]  # Includes the most popular item: exclusion must renormalise.
  exposed = list(range(1, 3))
  records = [request(1, exposed, [1, 1], recalled)]
  schema = schema_lib.LogSchema(num_users=11, num_items=num_items, user_features={"age": 5},
                                item_features={"category": 4})
  config = SamplingConfig(strategy="ss_abc_fixed", ratio=(0, 0, 1), num_negatives=50,
                          c_distribution="popularity", popularity_alpha=0.75)
  sampler = samplers.NegativeSampler(config, num_items, ["age"], click_count)
  parsed = parse(records, schema)
  draws = np.concatenate([numpy(sampler(parsed, tf.constant([s, 9], tf.int64)))["neg_items"].ravel()
                          for s in range(200)])  # 200 calls x 2 positives x 50 = 20,000 draws.
  allowed = np.setdiff1d(np.arange(1, num_items), recalled)
  assert set(np.unique(draws)) <= set(allowed)
  weights = (click_count[allowed] + 1.0) ** 0.75
  observed = np.array([(draws == i).sum() for i in allowed])
  expected = weights / weights.sum() * draws.size
  assert scipy.stats.chisquare(observed, expected).pvalue > 1e-3
  # And the test has power: the same draws are far from uniform.
  uniform = np.full(len(allowed), draws.size / len(allowed))
  assert scipy.stats.chisquare(observed, uniform).pvalue < 1e-12
  probs = sampler.c_probabilities()
  np.testing.assert_allclose(
    probs[1:], (click_count[1:] + 1.0) ** 0.75 / ((click_count[1:] + 1.0) ** 0.75).sum()
  )


# --- Real sampled batches of the `tiny` simulated dataset. ---------------------------------------

@pytest.fixture(scope="module")
def tiny_requests(tiny_dataset):
  """request_id -> record (numpy), read back through the same reader the pipeline uses."""
  out = {}
  for batch in reading.read_requests(tiny_dataset.split_files["train"], tiny_dataset.schema, 512):
    for i, rid in enumerate(batch["request_id"].numpy()):
      out[int(rid)] = {k: (v[i].numpy() if isinstance(v, tf.RaggedTensor) else v[i].numpy())
                       for k, v in batch.items()}
  return out


def take(ds, n):
  return [numpy(b) for b in ds.take(n)]


@pytest.mark.parametrize("strategy", spaces.SPACE_STRATEGIES)
def test_real_batches_respect_spaces_labels_and_masks(tiny_dataset, tiny_requests, strategy):
  config = SamplingConfig(strategy=strategy)
  n_a, n_b, n_c = config.space_counts()
  batches = take(samplers.make_training_dataset(tiny_dataset, config, batch_size=128), 4)
  assert len(batches) == 4
  for b in batches:
    assert b["neg_items"].shape == (128, 25) and b["history"].shape == (128, config.max_history)
    for i, rid in enumerate(b["request_id"]):
      r = tiny_requests[int(rid)]
      clicked = set(r["exposed"][r["clicked"] == 1])
      a_pool = set(r["exposed"][r["clicked"] == 0])
      b_pool = set(r["recalled"]) - set(r["exposed"])
      recalled = set(r["recalled"])
      assert b["pos_item"][i] in clicked
      assert b["user_id"][i] == r["user_id"] and b["day"][i] == r["day"]
      items, space, mask = b["neg_items"][i], b["neg_space"][i], b["neg_mask"][i]
      if strategy != "ss_abc_random":
        np.testing.assert_array_equal(space, [SPACE_A] * n_a + [SPACE_B] * n_b + [SPACE_C] * n_c)
      for item, s, m in zip(items, space, mask):
        if not m:
          assert item == 0
          continue
        if s == SPACE_A:
          assert item in a_pool
        elif s == SPACE_B:
          assert item in b_pool
        else:
          assert item not in (clicked if strategy == "ss_abc_random" else recalled)
          assert strategy != "ss_abc_random" or item not in recalled
      np.testing.assert_array_equal(
        b["neg_recalled"][i], ((space != SPACE_C) & (mask > 0)).astype(np.float32)
      )
      np.testing.assert_array_equal(
        b["neg_exposed"][i], ((space == SPACE_A) & (mask > 0)).astype(np.float32)
      )
      events = b["fill_events"][i]
      assert events[1] == (len(a_pool) == 0 and n_a > 0)
      assert events[0] == (0 < len(a_pool) < n_a)
      assert events[3] == (len(b_pool) == 0 and n_b > 0)
      assert events[2] == (0 < len(b_pool) < n_b)
      np.testing.assert_array_equal(
        mask[space == SPACE_A] if n_a else [], [0.0 if events[1] else 1.0] * n_a
      )


def test_every_positive_appears_once_per_epoch(tiny_dataset, tiny_requests):
  ds = samplers.make_training_dataset(tiny_dataset, SamplingConfig(), batch_size=100)
  seen = sorted(
    (int(r), int(p)) for b in ds for r, p in zip(b["request_id"].numpy(), b["pos_item"].numpy())
  )
  expected = sorted((rid, int(item)) for rid, r in tiny_requests.items()
                    for item in r["exposed"][r["clicked"] == 1])
  assert seen == expected


def test_deterministic_given_seed_and_new_draws_each_epoch(tiny_dataset):
  def first(seed, epochs=1):
    ds = samplers.make_training_dataset(tiny_dataset, SamplingConfig(seed=seed), batch_size=64)
    out = []
    for _ in range(epochs):
      out.append(take(ds, 2))
    return out

  a, b, c = first(0), first(0), first(1)
  for x, y in zip(a[0], b[0]):
    for key in x:
      np.testing.assert_array_equal(x[key], y[key])
  assert not np.array_equal(a[0][0]["neg_items"], c[0][0]["neg_items"])
  epochs = first(0, epochs=2)
  assert not np.array_equal(epochs[0][0]["neg_items"], epochs[1][0]["neg_items"])
  for x, y in zip(epochs[0], a[0]):  # The first epoch is the same whatever follows it.
    np.testing.assert_array_equal(x["neg_items"], y["neg_items"])


def test_input_pipelines_read_disjoint_parts(tiny_dataset):
  def positives(pipeline_id):
    ctx = tf.distribute.InputContext(num_input_pipelines=2, input_pipeline_id=pipeline_id)
    ds = samplers.make_training_dataset(tiny_dataset, SamplingConfig(), batch_size=64,
                                        input_context=ctx, shuffle=False)
    return {
      (int(r), int(p)) for b in ds for r, p in zip(b["request_id"].numpy(), b["pos_item"].numpy())
    }

  whole = samplers.make_training_dataset(
    tiny_dataset, SamplingConfig(), batch_size=64, shuffle=False
  )
  all_pos = {
    (int(r), int(p)) for b in whole for r, p in zip(b["request_id"].numpy(), b["pos_item"].numpy())
  }
  first, second = positives(0), positives(1)
  assert first and second and not first & second
  assert first | second == all_pos


def test_fill_events_are_counted(tiny_dataset):
  ds = samplers.make_training_dataset(tiny_dataset, SamplingConfig(), batch_size=128)
  counts = samplers.count_fill_events(ds)
  assert counts["positives"] > 0
  assert set(counts) == {"positives", *batch_keys.FILL_EVENTS}
  assert all(0 <= counts[k] <= counts["positives"] for k in batch_keys.FILL_EVENTS)

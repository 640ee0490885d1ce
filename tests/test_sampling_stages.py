"""Space B restricted by pipeline stage (`SamplingConfig.b_stages`), and logs without a recall log.

Checked on hand-made requests whose every pool is small enough to be drawn whole, so the items that
end up in B are known exactly.
"""
import uma2_tf  # noqa: F401

import dataclasses
import json

import numpy as np
import pytest
import tensorflow as tf

from uma2_tf.data import batch_keys
from uma2_tf.data import reading
from uma2_tf.data import samplers
from uma2_tf.data import schema as schema_lib
from uma2_tf.data.batch_keys import SPACE_A, SPACE_B, SPACE_C
from uma2_tf.data.samplers import SamplingConfig

STAGES = ("prerank_neg", "coarse_neg", "rank_neg", "realshow")
STAGED = schema_lib.LogSchema(num_users=11, num_items=51, user_features={"age": 5},
                              item_features={"category": 4}, stages=STAGES)
PLAIN = schema_lib.LogSchema(num_users=11, num_items=51, user_features={"age": 5},
                             item_features={"category": 4})
NO_RECALL = dataclasses.replace(PLAIN, has_recall_log=False)

# Request 1: exposed 1, 2, 3 (2 clicked); recalled-unexposed 4 (prerank_neg), 5 (coarse_neg),
# 6 and 7 (rank_neg), 8 (prerank_neg).  Request 2: exposed 20 (clicked) and 21; recalled-unexposed
# 22 (rank_neg), 23 (prerank_neg).
REQUESTS = [
    dict(rid=1, exposed=[1, 2, 3], clicked=[0, 1, 0], recalled=[1, 2, 3, 4, 5, 6, 7, 8],
         stage=[4, 4, 4, 1, 2, 3, 3, 1]),
    dict(rid=2, exposed=[20, 21], clicked=[1, 0], recalled=[20, 21, 22, 23], stage=[4, 4, 3, 1]),
]
# What B is for each b_stages, by request.
EXPECTED_B = {
    (): ({4, 5, 6, 7, 8}, {22, 23}),
    ("rank_neg",): ({6, 7}, {22}),
    ("prerank_neg", "coarse_neg"): ({4, 5, 8}, {23}),
    ("coarse_neg",): ({5}, set()),
}


def parse(schema, requests=REQUESTS):
  records = []
  for r in requests:
    record = {"request_id": r["rid"], "day": 1, "user_id": r["rid"], "age": 1,
              "history": np.zeros([0], np.int64), "exposed": np.array(r["exposed"]),
              "clicked": np.array(r["clicked"]), "recalled": np.array(r["recalled"])}
    if schema.stages:
      record["recalled_stage"] = np.array(r["stage"])
    records.append(record)
  features = schema_lib.tfds_features(schema)
  return schema_lib.parse_requests(
    tf.constant([features.serialize_example(r) for r in records]), schema
  )


def b_items_by_request(config, seeds=range(5)):
  """The set of B items drawn for each request's positive, over a few seeds."""
  sampler = samplers.NegativeSampler(config, STAGED.num_items, ["age"], stages=STAGES)
  drawn = {1: set(), 2: set()}
  for s in seeds:
    ex = {k: v.numpy() for k, v in sampler(parse(STAGED), tf.constant([s, 7], tf.int64)).items()}
    for rid, items, space, mask in zip(
      ex["request_id"], ex["neg_items"], ex["neg_space"], ex["neg_mask"]
    ):
      drawn[rid] |= set(items[(space == SPACE_B) & (mask > 0)].tolist())
  return drawn


@pytest.mark.parametrize("b_stages", list(EXPECTED_B))
def test_b_pool_is_the_unexposed_items_of_the_named_stages(b_stages):
  expected = EXPECTED_B[b_stages]
  # ss_ab with only B slots, exactly as many as request 1's pool: drawn without replacement, whole.
  config = SamplingConfig(strategy="ss_ab", ratio=(0, 1, 0), num_negatives=len(expected[0]),
                          b_stages=b_stages)
  drawn = b_items_by_request(config)
  assert drawn[1] == expected[0]
  assert drawn[2] == expected[1]


def test_empty_stage_pool_is_padded_and_counted_not_replaced():
  config = SamplingConfig(
    strategy="ss_ab", ratio=(1, 1, 0), num_negatives=2, b_stages=("coarse_neg",)
  )
  sampler = samplers.NegativeSampler(config, STAGED.num_items, ["age"], stages=STAGES)
  ex = {k: v.numpy() for k, v in sampler(parse(STAGED), tf.constant([1, 2], tf.int64)).items()}
  by_request = {rid: i for i, rid in enumerate(ex["request_id"])}
  events = dict(zip(batch_keys.FILL_EVENTS, ex["fill_events"][by_request[2]]))
  assert events["b_padded"] == 1  # Request 2 has no coarse_neg item.
  b_slot = ex["neg_space"][by_request[2]] == SPACE_B
  assert ex["neg_mask"][by_request[2]][b_slot].tolist() == [0.0]
  assert ex["neg_items"][by_request[2]][b_slot].tolist() == [0]
  events1 = dict(zip(batch_keys.FILL_EVENTS, ex["fill_events"][by_request[1]]))
  b1 = ex["neg_space"][by_request[1]] == SPACE_B
  assert events1["b_padded"] == 0 and ex["neg_items"][by_request[1]][b1].tolist() == [5]


def test_c_still_excludes_recalled_items_of_other_stages():
  # B restricted to rank_neg: 4, 5, 8 (request 1) and 23 (request 2) are recalled but not B; they
  # must not come back as C either.
  config = SamplingConfig(strategy="ss_abc_fixed", ratio=(1, 1, 8), num_negatives=10,
                          b_stages=("rank_neg",))
  sampler = samplers.NegativeSampler(config, STAGED.num_items, ["age"], stages=STAGES)
  for s in range(20):
    ex = {k: v.numpy() for k, v in sampler(parse(STAGED), tf.constant([s, 3], tf.int64)).items()}
    for rid, items, space, mask in zip(
      ex["request_id"], ex["neg_items"], ex["neg_space"], ex["neg_mask"]
    ):
      recalled = set(REQUESTS[rid - 1]["recalled"])
      c = set(items[(space == SPACE_C) & (mask > 0)].tolist())
      assert not c & recalled
      assert set(items[space == SPACE_B].tolist()) <= EXPECTED_B[("rank_neg",)][rid - 1]
      assert set(items[space == SPACE_A].tolist()) <= set(REQUESTS[rid - 1]["exposed"])
      assert np.all(ex["neg_recalled"][ex["request_id"] == rid][:, :2] == 1)


def test_config_b_stages_is_normalised_and_checked():
  assert SamplingConfig(b_stages=["rank_neg"]).b_stages == ("rank_neg",)
  for bad in ("rank_neg", ("rank_neg", "rank_neg"), ("",)):
    with pytest.raises(ValueError, match="b_stages"):
      SamplingConfig(b_stages=bad)
  # A run's config.json round-trips (JSON gives a list).
  from uma2_tf import training
  config = training.TrainConfig(sampling=SamplingConfig(b_stages=("rank_neg", "coarse_neg")))
  assert training.TrainConfig.from_json(config.to_json()).sampling.b_stages == (
    "rank_neg",
    "coarse_neg",
  )


def test_check_config_for_schema():
  check = samplers.check_config_for_schema
  assert check(SamplingConfig(b_stages=("rank_neg", "prerank_neg")), STAGED, "x") == (3, 1)
  assert check(SamplingConfig(), STAGED, "x") == ()
  with pytest.raises(ValueError, match=r"plain's schema has no stages"):
    check(SamplingConfig(b_stages=("rank_neg",)), PLAIN, "plain")
  with pytest.raises(ValueError, match=r"unknown stage\(s\) \['rank'\].*prerank_neg"):
    check(SamplingConfig(b_stages=("rank",)), STAGED, "x")
  for config in (SamplingConfig(), SamplingConfig(strategy="ss_ab")):
    with pytest.raises(ValueError, match=r"kuai has no space B \(no recall log.*--ratio=1,0,24"):
      check(config, NO_RECALL, "kuai")
  for config in (SamplingConfig(ratio=(1, 0, 24)), SamplingConfig(strategy="ss_a"),
                 SamplingConfig(strategy="ss_abc_random")):
    assert check(config, NO_RECALL, "kuai") == ()
  with pytest.raises(ValueError, match="unknown stage"):
    samplers.NegativeSampler(SamplingConfig(b_stages=("rank",)), 51, stages=STAGES)


def _fake_dataset(schema):
  catalog = schema_lib.ItemCatalog(features={"category": np.zeros(schema.num_items, np.int64)},
                                   click_count=np.zeros(schema.num_items, np.int64),
                                   exposure_count=np.zeros(schema.num_items, np.int64))
  return reading.BuiltDataset(
    name="fake/x",
    directory="/nonexistent",
    schema=schema,
    catalog=catalog,
    split_files={"train": ("/nonexistent/train.tfrecord",)},
  )


def test_make_training_dataset_refuses_what_the_dataset_lacks():
  with pytest.raises(ValueError, match="fake/x has no space B"):
    samplers.make_training_dataset(_fake_dataset(NO_RECALL), SamplingConfig(), 4)
  with pytest.raises(ValueError, match="schema has no stages"):
    samplers.make_training_dataset(_fake_dataset(PLAIN), SamplingConfig(b_stages=("rank_neg",)), 4)
  with pytest.raises(ValueError, match="unknown stage"):
    samplers.make_training_dataset(_fake_dataset(STAGED), SamplingConfig(b_stages=("rerank",)), 4)


def test_no_recall_log_with_a_and_c_only_trains_without_b():
  # recalled == exposed (what the writer stores for exposure-only logs): A and C only.
  requests = [dict(r, recalled=r["exposed"], stage=[4] * len(r["exposed"])) for r in REQUESTS]
  config = SamplingConfig(ratio=(1, 0, 4), num_negatives=5)
  sampler = samplers.NegativeSampler(config, NO_RECALL.num_items, ["age"])
  ex = {
    k: v.numpy()
    for k, v in sampler(parse(NO_RECALL, requests), tf.constant([0, 1], tf.int64)).items()
  }
  assert not np.any(ex["neg_space"] == SPACE_B)
  assert ex["fill_events"][:, batch_keys.FILL_EVENTS.index("b_padded")].sum() == 0


def test_train_flag_b_stages():
  from pipelines import train as train_cli

  train_cli.FLAGS(["train", "--b_stages=rank_neg,coarse_neg"])
  try:
    config = train_cli.config_from_flags()
  finally:
    train_cli.FLAGS.unparse_flags()
  assert config.sampling.b_stages == ("rank_neg", "coarse_neg")
  assert json.loads(config.to_json())["sampling"]["b_stages"] == ["rank_neg", "coarse_neg"]

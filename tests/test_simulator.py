"""The simulator and its TFDS builder: determinism, the legacy pipeline's invariants, sanity of the
world."""

import uma2_tf  # noqa: F401

import dataclasses
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from uma2_tf.sources import simulator
from uma2_tf.data import reading
from uma2_tf.sources import registry
from uma2_tf.data import schema as schema_lib

TINY = simulator.CONFIGS["tiny"]


@pytest.fixture(scope="module")
def simulation():
  return simulator.simulate(TINY)


def request_rows(log):
  """Per request: dict of its lists (numpy)."""
  return [{f: log.list_of(f, r) for f in schema_lib.LIST_FIELDS} for r in range(len(log))]


def test_same_seed_gives_identical_logs_and_another_seed_does_not(simulation):
  world, log = simulation
  world2, log2 = simulator.simulate(TINY)
  np.testing.assert_array_equal(world.user_latent, world2.user_latent)
  for field in schema_lib.LIST_FIELDS:
    for a, b in zip(log.lists[field], log2.lists[field]):
      np.testing.assert_array_equal(a, b)
  np.testing.assert_array_equal(log.user_id, log2.user_id)
  _, other = simulator.simulate(dataclasses.replace(TINY, seed=TINY.seed + 1))
  assert len(other) != len(log) or not np.array_equal(other.user_id, log.user_id)


def test_world_and_requesters_do_not_depend_on_chunk_size(simulation):
  # The world and who requests when are drawn before chunking; the chunks' draws then differ.
  world, log = simulation
  world2, log2 = simulator.simulate(dataclasses.replace(TINY, chunk_size=97))
  np.testing.assert_array_equal(world.item_latent, world2.item_latent)
  np.testing.assert_array_equal(log.user_id, log2.user_id)


def test_built_shards_are_byte_identical(tiny_builder, tmp_path):
  again = registry.builder("uma2_simulated/tiny", str(tmp_path))
  again.download_and_prepare()
  for split in ("train", "test"):
    for a, b in zip(tiny_builder.info.splits[split].filepaths, again.info.splits[split].filepaths):
      assert open(a, "rb").read() == open(b, "rb").read(), (
        f"{split} shard {os.path.basename(a)} differs"
      )
  for name in ("schema.json", "stats.json"):
    assert (open(os.path.join(tiny_builder.data_dir, name)).read()
            == open(os.path.join(again.data_dir, name)).read())


def test_records_follow_the_legacy_pipeline(simulation):
  world, log = simulation
  for r, row in enumerate(request_rows(log)):
    recalled, exposed, clicked, history = (row[schema_lib.RECALLED], row[schema_lib.EXPOSED],
                                           row[schema_lib.CLICKED], row[schema_lib.HISTORY])
    assert len(set(recalled)) == len(recalled), f"request {r}: duplicate recall"
    # Exposure is the head of the ranked recall.
    np.testing.assert_array_equal(exposed, recalled[:len(exposed)])
    assert len(exposed) == min(TINY.exposure_size, len(recalled))
    assert len(clicked) == len(exposed) and set(np.unique(clicked)) <= {0, 1}
    assert not set(recalled) & set(history), f"request {r}: recalled an already clicked item"
    assert len(history) <= TINY.history_length and (recalled > 0).all() and (history > 0).all()


def test_histories_hold_only_earlier_clicks_newest_last(simulation):
  _, log = simulation
  clicks_so_far: dict[int, list] = {}
  for r, row in enumerate(request_rows(log)):
    user = int(log.user_id[r])
    # A user makes at most one request per round, so every earlier click of theirs is visible.
    expected = clicks_so_far.get(user, [])[-TINY.history_length:]
    assert list(row[schema_lib.HISTORY]) == expected, f"request {r}"
    clicks_so_far.setdefault(user, []).extend(row[schema_lib.EXPOSED][row[schema_lib.CLICKED] > 0])
  # Histories do grow: late requests see more history than first-day ones.
  lengths = log.lengths(schema_lib.HISTORY)
  assert lengths[log.day == TINY.num_days].mean() > lengths[log.day == 1].mean() + 1


def test_clicks_concentrate_on_high_affinity_items(simulation):
  world, log = simulation
  rng = np.random.default_rng(0)
  clicked_a, unclicked_a, unexposed_a, random_a = [], [], [], []
  for r, row in enumerate(request_rows(log)[:800]):
    user = np.array([log.user_id[r]])
    exposed, recalled = row[schema_lib.EXPOSED], row[schema_lib.RECALLED]
    a = world.true_affinity(user, recalled)[0]
    shown = a[:len(exposed)]
    clicked_a.extend(shown[row[schema_lib.CLICKED] > 0])
    unclicked_a.extend(shown[row[schema_lib.CLICKED] == 0])
    unexposed_a.extend(a[len(exposed):])
    random_a.extend(world.true_affinity(user, rng.integers(1, TINY.num_items + 1, 20))[0])
  means = [np.mean(x) for x in (clicked_a, unclicked_a, unexposed_a, random_a)]
  # Positives > Space A > Space B > Space C: the order UMA2's propensities rely on.
  assert means == sorted(means, reverse=True), means
  assert means[0] - means[3] > 1.0


def test_recall_contains_the_popular_items(simulation):
  world, log = simulation
  recalled = log.lists[schema_lib.RECALLED][0]
  frequency = np.bincount(recalled, minlength=TINY.num_items + 1)[1:] / len(log)
  popular = np.argsort(-world.item_popularity[1:])[:TINY.popular_pool]
  assert frequency[popular].mean() > 3 * frequency.mean()
  assert frequency[popular].min() > 0


def test_demographics_follow_the_main_interest(simulation):
  world, _ = simulation
  main = world.user_interests[1:, 0]
  age = world.user_features["age"][1:]
  # Share of users whose age is their main interest's most common age; uniform would give ~1/7.
  agree = sum(
    (age[main == c] == np.bincount(age[main == c]).argmax()).sum() for c in np.unique(main)
  )
  assert agree / len(age) > 0.6
  for name, column in world.user_features.items():
    assert column[0] == 0 and column[1:].min() >= 1, name


def test_true_top_k_is_the_argsort_of_true_affinity(simulation):
  world, _ = simulation
  users = np.array([1, 5, 17, 600])
  top = world.true_top_k(users, 30, chunk_size=3)
  a = world.true_affinity(users)
  for row, user_a in zip(top, a):
    np.testing.assert_array_equal(row, np.argsort(-user_a[1:], kind="stable")[:30] + 1)


def test_world_round_trips_through_npz(simulation, tmp_path):
  world, _ = simulation
  world.save(str(tmp_path))
  loaded = simulator.World.load(str(tmp_path))
  np.testing.assert_array_equal(
    loaded.true_top_k(np.arange(1, 50), 10), world.true_top_k(np.arange(1, 50), 10)
  )
  assert loaded.user_features.keys() == world.user_features.keys()


def test_catalog_counts_train_days_only(simulation):
  world, log = simulation
  catalog = simulator.item_catalog(TINY, world, log)
  clicks = np.zeros(TINY.num_items + 1, np.int64)
  exposures = np.zeros(TINY.num_items + 1, np.int64)
  for r, row in enumerate(request_rows(log)):
    if log.day[r] < TINY.num_days:
      np.add.at(exposures, row[schema_lib.EXPOSED], 1)
      np.add.at(clicks, row[schema_lib.EXPOSED], row[schema_lib.CLICKED])
  np.testing.assert_array_equal(catalog.click_count, clicks)
  np.testing.assert_array_equal(catalog.exposure_count, exposures)
  bucket = catalog.features["pop_bucket"]
  assert bucket[0] == 0 and bucket[1:].min() == 1 and bucket[1:].max() == simulator.NUM_POP_BUCKETS
  # Buckets are ordered by clicks.
  assert clicks[bucket == 10].mean() > clicks[bucket == 1].mean()


def test_stats_match_the_records(simulation):
  _, log = simulation
  stats = simulator.compute_stats(log, TINY)
  rows = request_rows(log)
  train = [row for r, row in enumerate(rows) if log.day[r] < TINY.num_days]
  positives = sum(int(row[schema_lib.CLICKED].sum()) for row in train)
  assert stats["train_requests"] == len(train)
  assert stats["train_positives"] == positives
  assert stats["train_samples"] == positives * 26
  assert stats["train_ctr"] == pytest.approx(
    positives / sum(len(row["exposed"]) for row in train), abs=1e-4
  )
  with_pools = sum(
    int(row["clicked"].sum())
    for row in train
    if (row["clicked"] == 0).sum() >= 1 and len(row["recalled"]) - len(row["exposed"]) >= 4
  )
  assert stats["train_share_positives_with_1a_4b"] == pytest.approx(
    with_pools / positives, abs=1e-4
  )
  for key in ("num_users", "num_items", "test_requests", "test_positives", "train_mean_recall_size",
              "train_mean_exposure_size", "test_ctr"):
    assert key in stats
  assert 0.03 < stats["train_ctr"] < 0.3


def test_built_dataset_splits_by_day(tiny_dataset):
  days = {}
  ids = {}
  for split in ("train", "test"):
    batches = list(
      reading.read_requests(tiny_dataset.split_files[split], tiny_dataset.schema, 4096)
    )
    days[split] = np.concatenate([b[schema_lib.DAY].numpy() for b in batches])
    ids[split] = np.concatenate([b[schema_lib.REQUEST_ID].numpy() for b in batches])
  assert days["train"].max() == TINY.num_days - 1 and days["train"].min() == 1
  assert set(days["test"]) == {TINY.num_days}
  assert ids["test"].min() > ids["train"].max()
  stats = tiny_dataset.stats()
  assert stats["train_requests"] == len(ids["train"]) and stats["test_requests"] == len(ids["test"])
  assert tiny_dataset.schema == TINY.schema
  assert os.path.exists(os.path.join(tiny_dataset.directory, simulator.WORLD_FILE))


def test_records_parse_with_the_shared_spec(tiny_dataset):
  batch = next(
    iter(reading.read_requests(tiny_dataset.split_files["train"], tiny_dataset.schema, 8))
  )
  assert isinstance(batch[schema_lib.RECALLED], tf.RaggedTensor)
  assert set(batch) == set(schema_lib.record_fields(tiny_dataset.schema))


@pytest.mark.parametrize(
  "change,message",
  [
    (dict(num_days=1), "num_days"),
    (dict(recall_popular=300, popular_pool=200), "popular_pool"),
    (dict(requests_per_user_day=5.0), "requests_per_user_day"),
    (dict(exposure_size=0), "exposure_size"),
    (dict(recall_popular=0, recall_history=0, recall_old_model=0, recall_random=2), "exposure"),
  ],
)
def test_bad_config_is_rejected(change, message):
  with pytest.raises(ValueError, match=message):
    dataclasses.replace(simulator.CONFIGS["default"], **change)


def test_cli_prints_statistics_and_rejects_unknown_config(tiny_data_dir):
  cmd = [sys.executable, "-m", "pipelines.simulate", f"--data_dir={tiny_data_dir}"]
  out = subprocess.run(cmd + ["--config=tiny"], capture_output=True, text=True, timeout=300)
  assert out.returncode == 0, out.stderr
  assert "| positives |" in out.stdout and "already built" in out.stdout
  stats = json.load(open(os.path.join(tiny_data_dir, "uma2_simulated/tiny/1.0.0/stats.json")))
  assert f"| positives | {stats['train_positives']} | {stats['test_positives']} |" in out.stdout
  bad = subprocess.run(cmd + ["--config=huge"], capture_output=True, text=True, timeout=300)
  assert bad.returncode != 0 and "--config=huge" in bad.stderr
  assert "Traceback" not in bad.stderr


def test_cli_builds_a_world_of_ones_own_and_records_its_knobs(tmp_path):
  from uma2_tf.sources import registry

  data_dir = str(tmp_path)
  cmd = [sys.executable, "-m", "pipelines.simulate", f"--data_dir={data_dir}", "--config=noisy"]
  knobs = ["--base=tiny", "--simulator.ranking_noise=2.5", "--simulator.num_days=3"]
  out = subprocess.run(cmd + knobs, capture_output=True, text=True, timeout=600)
  assert out.returncode == 0, out.stderr[-3000:]
  directory = os.path.join(data_dir, "uma2_simulated/noisy/1.0.0")
  recorded = json.load(open(os.path.join(directory, "simulator_config.json")))
  assert recorded["base"] == "tiny" and recorded["overrides"] == {
    "ranking_noise": 2.5,
    "num_days": 3,
  }
  expected = dataclasses.replace(simulator.CONFIGS["tiny"], ranking_noise=2.5, num_days=3)
  assert recorded["simulator_config"] == dataclasses.asdict(expected)
  # The trainer finds it by name; its days are the overridden ones.
  dataset = registry.load("uma2_simulated/noisy", data_dir)
  assert dataset.stats()["num_days"] == 3
  # The same name again: reused as it is; with other knobs: refused, nothing rebuilt.
  again = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
  assert again.returncode == 0 and "already built" in again.stdout, again.stderr[-3000:]
  other = subprocess.run(
    cmd + ["--base=tiny", "--simulator.ranking_noise=1.0"],
    capture_output=True,
    text=True,
    timeout=300,
  )
  assert (
    other.returncode == 2 and "already built" in other.stderr and "Traceback" not in other.stderr
  )
  builtin = subprocess.run(cmd[:-1] + ["--config=tiny", "--simulator.seed=3"], capture_output=True,
                           text=True, timeout=300)
  assert builtin.returncode == 2 and "--base=tiny" in builtin.stderr

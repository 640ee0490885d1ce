"""The MovieLens world: reading u.data, fitting a world to it, the `uma2_movielens` builder, the
CLI.

Everything runs on the committed fixture `data/movielens/u.data` (60 users, 123 rated items of 126,
2707 ratings in ml-100k's format; see data/movielens/README.md).
"""
import uma2_tf  # noqa: F401

import dataclasses
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from uma2_tf.data import validation
from uma2_tf.sources import movielens
from uma2_tf.sources import simulator
from uma2_tf.data import reading
from uma2_tf.sources import registry
from uma2_tf.data import schema as schema_lib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIXTURE_DIR = os.path.join(ROOT, "data", "movielens")
FIXTURE = os.path.join(FIXTURE_DIR, "u.data")
CONFIG = movielens.CONFIGS["tiny"]
SEED = 7


@pytest.fixture(scope="module")
def interactions():
  return movielens.read_interactions(FIXTURE)


@pytest.fixture(scope="module")
def fitted(interactions):
  return movielens.fit_world(interactions, CONFIG, seed=SEED)


def rated_matrix(interactions, config):
  users, items = interactions.dense()
  rated = np.zeros((config.num_users + 1, config.num_items + 1), bool)
  rated[users, items] = True
  return rated


# Reading.

def test_reads_the_fixture_with_dense_ids(interactions):
  lines = open(FIXTURE).read().splitlines()
  assert len(interactions) == len(lines) == 2707
  first = [int(x) for x in lines[0].split("\t")]
  assert [
    interactions.user[0],
    interactions.item[0],
    interactions.rating[0],
    interactions.timestamp[0],
  ] == first
  np.testing.assert_array_equal(interactions.user_ids, np.arange(1, 61))
  assert len(interactions.item_ids) == 123
  assert not {7, 50, 99} & set(interactions.item_ids)  # Never rated: gaps in the raw ids.
  users, items = interactions.dense()
  assert users.min() == 1 and users.max() == 60 and items.min() == 1 and items.max() == 123
  assert len(np.unique(items)) == 123  # Dense: every id 1..n is used.
  np.testing.assert_array_equal(interactions.item_ids[items - 1], interactions.item)
  np.testing.assert_array_equal(interactions.user_ids[users - 1], interactions.user)
  assert set(np.unique(interactions.rating)) <= {1, 2, 3, 4, 5}


def test_reads_ml1m_double_colon_separator(interactions, tmp_path):
  path = tmp_path / "ratings.dat"
  path.write_text(open(FIXTURE).read().replace("\t", "::"))
  again = movielens.read_interactions(str(path))
  for field in ("user", "item", "rating", "timestamp"):
    np.testing.assert_array_equal(getattr(again, field), getattr(interactions, field))


GOOD = "1\t10\t4\t881250949\n"


@pytest.mark.parametrize(
  "text,line,expected",
  [
    ("", None, "empty file"),
    (GOOD + "2\t11\t3\n", 2, "expected 4 tab-separated fields"),
    (GOOD + "2 11 3 881250949\n", 2, "expected 4 tab-separated fields"),
    (GOOD + "2\t11\t3\t881250949\t5\n", 2, "got 5"),
    (
      GOOD + "2\t11\t4.5\t881250949\n",
      2,
      "field rating: expected a non-negative integer, got '4.5'",
    ),
    (GOOD + "x\t11\t3\t881250949\n", 2, "field user id: expected a non-negative integer, got 'x'"),
    (GOOD + "2\t11\t3\t-5\n", 2, "field timestamp: expected a non-negative integer, got '-5'"),
    (GOOD + "2\t1_1\t3\t881250949\n", 2, "field item id: expected a non-negative integer"),
    (GOOD + GOOD.replace("4", "6", 1), 2, "field rating: expected 1..5, got 6"),
    (GOOD + "2\t11\t0\t881250949\n", 2, "field rating: expected 1..5, got 0"),
    (GOOD + "0\t11\t3\t881250949\n", 2, "field user id: expected an id >= 1, got 0"),
    (GOOD + "2\t0\t3\t881250949\n", 2, "field item id: expected an id >= 1, got 0"),
    (GOOD + "\n" + GOOD, 2, "empty line"),
    (GOOD + "2::11::3::881250949\n", 2, "expected 4 tab-separated fields"),
    (
      GOOD + "2\t11\t3\t881250949\n1\t10\t5\t881250999\n",
      3,
      "field item id: user 1 already rated item 10 on line 1",
    ),
  ],
)
def test_malformed_lines_name_file_line_field_and_expectation(tmp_path, text, line, expected):
  path = tmp_path / "u.data"
  path.write_text(text)
  with pytest.raises(ValueError) as error:
    movielens.read_interactions(str(path))
  message = str(error.value)
  assert message.startswith(str(path)), message
  assert expected in message, message
  if line is not None:
    assert f"line {line}" in message, message
  assert "\n" not in message


def test_missing_file_is_named(tmp_path):
  with pytest.raises(FileNotFoundError, match="nothing.data"):
    movielens.read_interactions(str(tmp_path / "nothing.data"))


# Fitting.

def test_fitted_world_shapes_and_padding(fitted):
  world, config = fitted
  n_u, n_i, d = 60, 123, CONFIG.latent_dim
  assert (config.num_users, config.num_items) == (n_u, n_i)
  assert world.user_latent.shape == (n_u + 1, d) and world.item_latent.shape == (n_i + 1, d)
  assert world.user_interests.shape == (n_u + 1, CONFIG.max_interests)
  for array in (
    world.user_latent[0],
    world.item_latent[0],
    world.item_popularity[0],
    world.item_category[0],
    world.item_author[0],
    world.user_interests[0],
    *(f[0] for f in world.user_features.values()),
  ):
    assert not np.any(array), "row 0 is padding"
  assert set(world.item_category[1:]) == set(range(1, config.num_categories + 1))
  # Category 1 is the largest, as the simulator's Zipf categories.
  sizes = np.bincount(world.item_category[1:])[1:]
  assert sizes[0] == sizes.max()
  # Authors write in one category, as in build_world.
  assert (
    (world.item_author[1:] - 1) // config.authors_per_category + 1 == world.item_category[1:]
  ).all()
  for name, column in world.user_features.items():
    assert column[1:].min() >= 1, name
  assert config.schema.num_users == n_u + 1 and config.schema.num_items == n_i + 1


def test_pools_are_clamped_to_the_catalog(fitted):
  _, config = fitted
  default = movielens.CONFIGS["ml100k"]
  clamped = movielens.fitted_config(default, 60, 123)
  assert clamped.popular_pool == clamped.old_model_pool == 123
  assert clamped.exposure_size == default.exposure_size and clamped.click_bias == default.click_bias
  assert config.popular_pool <= 123 and config.old_model_pool <= 123


def test_fit_is_deterministic_for_a_seed(fitted, interactions):
  world, _ = fitted
  again, _ = movielens.fit_world(interactions, CONFIG, seed=SEED)
  for name in ("user_latent", "item_latent", "item_popularity", "item_category", "item_author",
               "user_interests"):
    np.testing.assert_array_equal(getattr(world, name), getattr(again, name), err_msg=name)
  other, _ = movielens.fit_world(interactions, CONFIG, seed=SEED + 1)
  assert not np.array_equal(other.user_features["age"], world.user_features["age"])


def test_affinity_spread_matches_the_simulated_worlds(fitted):
  world, config = fitted
  user_rms, target = movielens.reference_scale(config, SEED)
  assert movielens.affinity_spread(world.user_latent, world.item_latent) == pytest.approx(
    target, rel=1e-3
  )
  # Every user has the simulated users' RMS: activity does not make a user click more.
  norms = np.linalg.norm(world.user_latent[1:], axis=1)
  np.testing.assert_allclose(norms, user_rms * np.sqrt(config.latent_dim), rtol=1e-4)
  # The latent part is centred: mean <z_u, z_i> over all pairs is ~0 next to its spread.
  dots = world.user_latent[1:] @ world.item_latent[1:].T / np.sqrt(config.latent_dim)
  assert abs(dots.mean()) < 0.05 * target


def test_popularity_is_the_standardised_log_count(fitted, interactions):
  world, config = fitted
  _, items = interactions.dense()
  log_count = np.log(np.bincount(items)[1:])
  pop = world.item_popularity[1:]
  np.testing.assert_allclose(
    pop,
    config.popularity_sigma * (log_count - log_count.mean()) / log_count.std(),
    rtol=1e-5,
    atol=1e-5,
  )


def test_true_top_items_are_the_users_rated_items(fitted, interactions):
  world, config = fitted
  rated = rated_matrix(interactions, config)
  users = np.arange(1, config.num_users + 1)
  top = world.true_top_k(users, 10)
  precision = rated[users[:, None], top].mean()
  chance = rated[1:, 1:].mean()
  # Measured: 0.998 of the top-10 true items are rated, against 0.367 at random.
  assert precision > 0.9 and precision > 2 * chance, (precision, chance)
  # Taste, not just popularity: the latent part alone ranks rated items first, too.
  latent_top = np.argsort(-(world.user_latent[1:] @ world.item_latent[1:].T), axis=1)[:, :10] + 1
  assert rated[users[:, None], latent_top].mean() > 0.9


def test_interests_are_the_categories_users_rate_most(fitted, interactions):
  world, config = fitted
  users, items = interactions.dense()
  for user in (1, 17, 60):
    counts = np.bincount(
      world.item_category[items[users == user]], minlength=config.num_categories + 1
    )
    interests = world.user_interests[user]
    assert interests[0] == counts[1:].argmax() + 1
    kept = interests[interests > 0]
    assert (counts[kept] * 2 >= counts[interests[0]]).all()
    assert list(kept) == sorted(kept, key=lambda c: -counts[c])


def test_too_few_users_for_the_latent_dim(tmp_path):
  path = tmp_path / "u.data"
  path.write_text("".join(f"{u}\t{i}\t3\t88125094{i}\n" for u in range(1, 4) for i in range(1, 30)))
  with pytest.raises(ValueError, match=f"{path}: 3 users and 29 items cannot give latent_dim=16"):
    movielens.fit_world(movielens.read_interactions(str(path)), CONFIG, seed=0)


def test_simulate_runs_on_the_given_world(fitted):
  world, config = fitted
  used, log = simulator.simulate(config, world=world)
  assert used is world
  stats = simulator.compute_stats(log, config)
  assert stats["train_positives"] > 100 and stats["test_positives"] > 10
  # Recall and clicks follow the fitted affinity: clicked items have a higher one than exposed ones.
  exposed, offsets = log.lists[schema_lib.EXPOSED]
  clicked = log.lists[schema_lib.CLICKED][0]
  users = np.repeat(log.user_id, np.diff(offsets))
  affinity = np.einsum("nd,nd->n", world.user_latent[users], world.item_latent[exposed])
  assert affinity[clicked == 1].mean() > affinity[clicked == 0].mean()
  with pytest.raises(ValueError, match="world.user_latent has shape"):
    simulator.simulate(dataclasses.replace(config, num_users=config.num_users + 1), world=world)


# The builder and the CLI.

@pytest.fixture(scope="module")
def built(tmp_path_factory):
  """`uma2_movielens/tiny` built from the fixture directory, as a user would."""
  import tensorflow_datasets as tfds

  data_dir = str(tmp_path_factory.mktemp("tfds_movielens"))
  builder = registry.builder("uma2_movielens/tiny", data_dir)
  builder.download_and_prepare(download_config=tfds.download.DownloadConfig(manual_dir=FIXTURE_DIR))
  return data_dir, registry.load("uma2_movielens/tiny", data_dir)


def test_builder_writes_the_side_files_and_valid_records(built, interactions):
  _, dataset = built
  assert dataset.schema == movielens.fitted_config(CONFIG, 60, 123).schema
  for name in ("schema.json", "catalog.npz", "world.npz", "stats.json", movielens.IDS_FILE,
               movielens.SOURCE_FILE):
    assert os.path.exists(os.path.join(dataset.directory, name)), name
  validator = validation.RecordValidator(dataset.schema, policy="error", source="test")
  counts = {}
  for split in ("train", "test"):
    n = 0
    for batch in reading.read_requests(dataset.split_files[split], dataset.schema, 512):
      batch = {k: (v.to_list() if hasattr(v, "to_list") else v.numpy()) for k, v in batch.items()}
      for i in range(len(batch[schema_lib.REQUEST_ID])):
        validator.check({k: (np.asarray(v[i], np.int64) if isinstance(v[i], list) else v[i])
                         for k, v in batch.items()})
        n += 1
    counts[split] = n
  stats = dataset.stats()
  assert counts == {"train": stats["train_requests"], "test": stats["test_requests"]}
  assert stats["train_positives"] > 100 and stats["test_positives"] > 10
  user_raw, item_raw = movielens.load_id_maps(dataset.directory)
  np.testing.assert_array_equal(item_raw[1:], interactions.item_ids)
  np.testing.assert_array_equal(user_raw[1:], interactions.user_ids)
  assert user_raw[0] == item_raw[0] == 0
  source = json.load(open(os.path.join(dataset.directory, movielens.SOURCE_FILE)))
  assert source["sha256"] == movielens.file_digest(FIXTURE) and source["ratings"] == 2707
  assert source["affinity_spread"] == pytest.approx(source["reference_affinity_spread"], rel=1e-3)
  world = simulator.World.load(dataset.directory)
  assert world.true_top_k(np.array([1, 60]), 10).shape == (2, 10)


def test_one_training_epoch_on_the_movielens_world(built, tmp_path):
  from uma2_tf import training

  data_dir, _ = built
  config = training.TrainConfig(
    dataset="uma2_movielens/tiny",
    data_dir=data_dir,
    output_dir=str(tmp_path),
    batch_size=64,
    epochs=1,
    eval_ks=(10, 20, 50),
    monitor="recall@20",
    early_stopping_patience=0,
    backup_every_steps=1000,
  )
  results = training.train(config, verbose=0)
  assert results["run"]["epochs_run"] == 1
  assert 0.0 <= results["model"]["recall@50"] <= 1.0 and "oracle_recall@50" in results["model"]
  assert results["oracle"]["oracle_recall@10"] == 1.0  # The oracle metrics come from world.npz.
  assert os.path.exists(os.path.join(str(tmp_path), "metrics.json"))


def test_builder_without_the_file_names_the_expected_path(tmp_path):
  import tensorflow_datasets as tfds

  empty = tmp_path / "ml-100k"
  empty.mkdir()
  (empty / "README").write_text("not the ratings")
  builder = registry.builder("uma2_movielens/ml100k", str(tmp_path / "tfds"))
  with pytest.raises(FileNotFoundError, match=f"{empty / 'u.data'}: no MovieLens ratings file"):
    builder.download_and_prepare(download_config=tfds.download.DownloadConfig(manual_dir=str(empty)))
  with pytest.raises(reading.DatasetNotBuiltError, match="--movielens_dir"):
    registry.load("uma2_movielens/ml100k", str(tmp_path / "tfds"))


SIMULATE = [sys.executable, "-m", "pipelines.simulate", "--movielens_config=tiny"]


def cli(args):
  return subprocess.run(SIMULATE + args, capture_output=True, text=True, timeout=300, cwd=ROOT)


def test_cli_reuses_a_build_only_from_the_same_file(built, tmp_path):
  data_dir, dataset = built
  same = cli([f"--movielens_dir={FIXTURE_DIR}", f"--data_dir={data_dir}"])
  assert same.returncode == 0, same.stderr[-2000:]
  assert "already built" in same.stdout
  assert f"| positives | {dataset.stats()['train_positives']} |" in same.stdout
  changed = tmp_path / "changed"
  changed.mkdir()
  lines = open(FIXTURE).read().splitlines(keepends=True)
  (changed / "u.data").write_text("".join(lines[:-1]))
  other = cli([f"--movielens_dir={changed}", f"--data_dir={data_dir}"])
  assert (
    other.returncode == 2 and "was built from" in other.stderr and "Traceback" not in other.stderr
  )


def test_cli_errors_are_one_line_with_exit_2(tmp_path):
  missing = cli([f"--movielens_dir={tmp_path}", f"--data_dir={tmp_path / 'tfds'}"])
  assert missing.returncode == 2, missing.stderr[-2000:]
  assert f"no {tmp_path / 'u.data'}" in missing.stderr and "grouplens.org" in missing.stderr
  bad_dir = tmp_path / "bad"
  bad_dir.mkdir()
  shutil.copy(FIXTURE, bad_dir / "u.data")
  with open(bad_dir / "u.data", "a") as f:
    f.write("61\t3\tfive\t881250949\n")
  bad = cli([f"--movielens_dir={bad_dir}", f"--data_dir={tmp_path / 'tfds'}"])
  assert bad.returncode == 2, bad.stderr[-2000:]
  assert "line 2708, field rating: expected a non-negative integer, got 'five'" in bad.stderr
  for result in (missing, bad):
    assert "Traceback" not in result.stderr
    assert len([line for line in result.stderr.splitlines() if line.startswith("error:")]) == 1

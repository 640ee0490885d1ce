"""The `kuairand` builder on the committed fixture `data/kuairand/` (KuaiRand-Pure's file names,
headers and cell formats, made-up values; see data/kuairand/README.md): the real layout, a
hand-checked pseudo-request, no space B, the `test_random` split, one short training epoch that
reports test_random metrics, and one clear error per malformed file."""
import uma2_tf  # noqa: F401

import filecmp
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import tensorflow_datasets as tfds

from uma2_tf import evaluation
from uma2_tf.sources import kuairand
from uma2_tf.sources import logs
from uma2_tf.data import batch_keys
from uma2_tf.data import reading
from uma2_tf.sources import registry
from uma2_tf.data import samplers
from uma2_tf.data import schema as schema_lib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIXTURE = os.path.join(ROOT, "data", "kuairand")
NAME = "kuairand/tiny"
CONFIG = kuairand.Kuairand.builder_configs["tiny"]
STANDARD = ("log_standard_4_08_to_4_21_pure.csv", "log_standard_4_22_to_5_08_pure.csv")
RANDOM = "log_random_4_22_to_5_08_pure.csv"
USERS = "user_features_pure.csv"
VIDEOS = "video_features_basic_pure.csv"
# The real headers (KuaiRand README and the KuaiRand-Pure archive; see uma2_tf/sources/kuairand.py).
LOG_HEADER = (
  "user_id,video_id,date,hourmin,time_ms,is_click,is_like,is_follow,is_comment,is_forward,"
  "is_hate,long_view,play_time_ms,duration_ms,profile_stay_time,comment_stay_time,"
  "is_profile_enter,is_rand,tab"
)
USER_HEADER = ("user_id,user_active_degree,is_lowactive_period,is_live_streamer,is_video_author,"
               "follow_user_num,follow_user_num_range,fans_user_num,fans_user_num_range,friend_user_num,"
               "friend_user_num_range,register_days,register_days_range,"
               + ",".join(f"onehot_feat{i}" for i in range(18)))
VIDEO_HEADER = ("video_id,author_id,video_type,upload_dt,upload_type,visible_status,video_duration,"
                "server_width,server_height,music_id,music_type,tag")
TEST_DATE = 20220508


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
  directory = str(tmp_path_factory.mktemp("tfds_kuairand"))
  registry.builder(NAME, directory).download_and_prepare(
      download_config=tfds.download.DownloadConfig(manual_dir=FIXTURE))
  return directory


@pytest.fixture(scope="module")
def dataset(data_dir):
  return registry.load(NAME, data_dir)


@pytest.fixture(scope="module")
def records(dataset):
  """split -> list of records as dicts of ints / int lists."""
  out = {}
  for split, files in dataset.split_files.items():
    rows = []
    for batch in reading.read_requests(files, dataset.schema, 1024):
      batch = {
        k: (v.to_list() if hasattr(v, "to_list") else v.numpy().tolist()) for k, v in batch.items()
      }
      rows += [{k: batch[k][i] for k in batch} for i in range(len(batch[schema_lib.REQUEST_ID]))]
    out[split] = rows
  return out


@pytest.fixture(scope="module")
def ids(dataset):
  with np.load(os.path.join(dataset.directory, logs.IDS_FILE)) as z:
    users = {int(raw): dense for dense, raw in enumerate(z["user_raw_id"]) if raw}
    items = {int(raw): dense for dense, raw in enumerate(z["item_raw_id"]) if raw}
    tabs = {int(raw): dense for dense, raw in enumerate(z["user_feature/tab"]) if raw}
  return users, items, tabs


def read_csv(name):
  return pd.read_csv(os.path.join(FIXTURE, name))


# The fixture: the real layout, small, reproducible.

def test_fixture_has_the_real_files_headers_and_dtypes():
  names = sorted(f for f in os.listdir(FIXTURE) if f.endswith(".csv"))
  assert names == sorted([*STANDARD, RANDOM, USERS, VIDEOS])
  assert sum(os.path.getsize(os.path.join(FIXTURE, f)) for f in os.listdir(FIXTURE)) < 1_000_000
  for name, header in [(STANDARD[0], LOG_HEADER), (STANDARD[1], LOG_HEADER), (RANDOM, LOG_HEADER),
                       (USERS, USER_HEADER), (VIDEOS, VIDEO_HEADER)]:
    with open(os.path.join(FIXTURE, name)) as f:
      assert f.readline().rstrip("\n") == header, name
  for name in (*STANDARD, RANDOM):
    log = read_csv(name)
    assert all(dtype == np.int64 for dtype in log.dtypes), name  # Every log column is int64.
    assert set(log["hourmin"] % 100) == {0}  # Whole hours, as in the real files.
    # time_ms agrees with date and hourmin in Beijing time.
    when = pd.to_datetime(log["time_ms"], unit="ms", utc=True).dt.tz_convert("Asia/Shanghai")
    assert (when.dt.strftime("%Y%m%d").astype(int) == log["date"]).all()
    assert (when.dt.hour == log["hourmin"] // 100).all()
  assert set(read_csv(RANDOM)["is_rand"]) == {1} and set(read_csv(STANDARD[0])["is_rand"]) == {0}
  assert sorted(set(read_csv(STANDARD[0])["date"])) == [20220419, 20220420, 20220421]
  assert max(read_csv(STANDARD[1])["date"]) == TEST_DATE
  users, videos = read_csv(USERS), read_csv(VIDEOS)
  assert (
    users["user_active_degree"].dtype == object and users["register_days_range"].dtype == object
  )
  assert users["onehot_feat4"].isna().sum() == 1  # One missing value.
  assert users["fans_user_num"].dtype == np.int64
  assert [videos[c].dtype for c in ("video_id", "author_id", "visible_status", "video_duration",
                                    "music_type", "video_type", "tag")] == [
      np.int64, np.int64, np.float64, np.float64, np.float64, object, object]
  assert videos["tag"].str.contains(",").any()  # Several categories, quoted ("12,65").


def test_fixture_generator_is_deterministic(tmp_path):
  copy = tmp_path / "copy"  # The script writes beside itself: run a copy.
  shutil.copytree(FIXTURE, copy)
  subprocess.run([sys.executable, str(copy / "make_fixture.py")], check=True)
  for name in (*STANDARD, RANDOM, USERS, VIDEOS):
    assert filecmp.cmp(os.path.join(FIXTURE, name), copy / name, shallow=False), name


# The builder.

def test_schema_declares_no_recall_log_and_the_features(dataset):
  schema = dataset.schema
  assert schema.has_recall_log is False and schema.stages == ()
  assert schema.user_feature_names == (*kuairand.USER_FEATURES, "tab")
  assert set(schema.item_features) == set(kuairand.ITEM_FEATURES)
  stats = dataset.stats()
  assert stats["has_recall_log"] is False
  assert stats["num_users"] == 24 and stats["num_items"] == len(
      set(pd.concat([read_csv(n) for n in STANDARD])["video_id"])
      | set(read_csv(RANDOM).query(f"date == {TEST_DATE}")["video_id"]))


def test_hand_checked_pseudo_request(records, ids):
  """User 7, 2022-04-21, 10:00: tab 1 shows videos 1500, 35 (clicked), 4210, 35 again (not clicked);
  tab 0 shows 88. Two requests; the repeat of 35 merges into its first position, clicked."""
  users, items, tabs = ids
  mine = [
    r for r in records["train"] if r["user_id"] == users[7] and r["day"] == 3
  ]  # 04-19, 20, 21.
  by_tab = {r["tab"]: r for r in mine}
  tab1, tab0 = by_tab[tabs[1]], by_tab[tabs[0]]
  assert tab1["exposed"] == [items[1500], items[35], items[4210]]
  assert tab1["clicked"] == [0, 1, 0]
  assert tab1["recalled"] == tab1["exposed"]  # No recall log: recalled is the exposure, B is empty.
  assert tab0["exposed"] == [items[88]] and tab0["clicked"] == [0]
  assert tab0["request_id"] < tab1["request_id"]  # Tab 0's exposure came first (time_ms).
  assert set(tab1["history"]).isdisjoint({items[35]})  # Not clicked before; history is the past.
  later = [
    r for r in records["train"] if r["user_id"] == users[7] and r["request_id"] > tab1["request_id"]
  ]
  assert later and all(items[35] in r["history"] for r in later)


def test_sampler_draws_a_from_unclicked_exposures_and_no_b(dataset, records, ids):
  """The hand-checked request's positive (35) gets one A negative, from 1500 and 4210, and no B."""
  users, items, tabs = ids
  rid = next(
    r["request_id"]
    for r in records["train"]
    if r["user_id"] == users[7] and r["tab"] == tabs[1] and r["exposed"][:1] == [items[1500]]
  )
  config = samplers.SamplingConfig(ratio=(1, 0, 24), seed=3)
  found = 0
  for batch in samplers.make_training_dataset(dataset, config, batch_size=512, shuffle=False):
    rows = np.flatnonzero(batch["request_id"].numpy() == rid)
    for i in rows:
      found += 1
      assert batch[batch_keys.POS_ITEM][i] == items[35]
      space = batch[batch_keys.NEG_SPACE][i].numpy()
      negatives = batch[batch_keys.NEG_ITEMS][i].numpy()
      assert batch_keys.SPACE_B not in space
      assert (space == batch_keys.SPACE_A).sum() == 1
      assert set(negatives[space == batch_keys.SPACE_A]) <= {items[1500], items[4210]}
      c = negatives[(space == batch_keys.SPACE_C) & (batch[batch_keys.NEG_MASK][i].numpy() > 0)]
      assert not set(c) & {items[1500], items[35], items[4210]}  # C is outside the recalled set.
  assert found == 1


def test_splits_and_test_random(dataset, records, ids):
  users, items, _ = ids
  assert set(dataset.split_files) == {"train", "test", "test_random"}
  stats = dataset.stats()
  assert stats["dates"]["test"] == stats["dates"]["test_random"] == ["2022-05-08"]
  assert stats["dates"]["train"] == [
    "2022-04-19",
    "2022-04-20",
    "2022-04-21",
    "2022-05-06",
    "2022-05-07",
  ]
  last_day = max(r["day"] for r in records["train"]) + 1
  assert (
    {r["day"] for r in records["test"]} == {r["day"] for r in records["test_random"]} == {last_day}
  )
  for split in ("train", "test", "test_random"):
    assert stats[f"{split}_requests"] == len(records[split])
    assert stats[f"{split}_clicks"] == sum(sum(r["clicked"]) for r in records[split])
  # test_random holds the random log's exposures of the test day, and nothing else.
  raw = read_csv(RANDOM).query(f"date == {TEST_DATE}")
  raw = raw.assign(user=raw["user_id"].map(users), item=raw["video_id"].map(items))
  got = sorted((r["user_id"], item, c) for r in records["test_random"]
               for item, c in zip(r["exposed"], r["clicked"]))
  expected = raw.groupby(["user", "hourmin", "tab", "item"])["is_click"].max().reset_index()
  assert got == sorted(zip(expected["user"], expected["item"], expected["is_click"]))
  assert stats["kuairand"]["random_rows_used"] == len(raw)
  assert stats["kuairand"]["random_rows_unused"] == len(read_csv(RANDOM)) - len(raw)
  standard_test = read_csv(STANDARD[1]).query(f"date == {TEST_DATE}")
  assert stats["test_exposures"] == len(
    standard_test.drop_duplicates(["user_id", "hourmin", "tab", "video_id"])
  )
  ids_train = {r["request_id"] for r in records["train"]}
  ids_test = {r["request_id"] for r in records["test"]}
  ids_random = {r["request_id"] for r in records["test_random"]}
  assert not (ids_train & ids_test or ids_train & ids_random or ids_test & ids_random)
  assert max(ids_train) < min(ids_test | ids_random)  # Request ids follow time.


def test_popularity_counts_only_the_training_standard_log(dataset, ids):
  _, items, _ = ids
  log = pd.concat([read_csv(n) for n in STANDARD]).query(f"date < {TEST_DATE}")
  merged = (
    log.groupby(["user_id", "date", "hourmin", "tab", "video_id"])["is_click"].max().reset_index()
  )
  clicks = np.zeros(dataset.schema.num_items, np.int64)
  exposures = np.zeros(dataset.schema.num_items, np.int64)
  np.add.at(exposures, merged["video_id"].map(items).to_numpy(), 1)
  np.add.at(clicks, merged["video_id"].map(items).to_numpy(), merged["is_click"].to_numpy())
  np.testing.assert_array_equal(dataset.catalog.exposure_count, exposures)
  np.testing.assert_array_equal(dataset.catalog.click_count, clicks)


def test_item_features_from_the_basic_file(dataset, ids):
  _, items, _ = ids
  with np.load(os.path.join(dataset.directory, logs.IDS_FILE)) as z:
    category = z["item_feature/category"]
  videos = read_csv(VIDEOS).set_index("video_id")
  for raw in (35, 1500, 4210):
    first_tag = str(videos.loc[raw, "tag"]).split(",")[0]
    assert category[dataset.catalog.features["category"][items[raw]]] == first_tag
  # A video with an empty tag or music_type has the missing value 0 there, not an error.
  empty = videos[videos["tag"].isna()].index.intersection(list(items))
  assert len(empty) and all(dataset.catalog.features["category"][items[v]] == 0 for v in empty)


def test_evaluator_on_test_random_uses_its_clicks_and_train_popularity(dataset, ids):
  users, items, _ = ids
  evaluator = evaluation.Evaluator(dataset, ks=(5, 10), split="test_random")
  raw = read_csv(RANDOM).query(f"date == {TEST_DATE} and is_click == 1")
  truth = raw.groupby("user_id")["video_id"].agg(lambda v: sorted(items[i] for i in set(v)))
  got = {int(u): list(t) for u, t in zip(evaluator.users["user_id"], evaluator.truth)}
  assert got == {users[u]: t for u, t in truth.items()}
  assert "oracle" not in evaluator.reference  # No world.npz: no oracle.
  standard = evaluation.Evaluator(dataset, ks=(5, 10))
  # Popularity ranks by training clicks for both splits.
  assert evaluator.reference.keys() == standard.reference.keys() == {"popularity"}


def test_one_training_epoch_reports_test_random(data_dir, tmp_path):
  from uma2_tf import training

  config = training.TrainConfig(
      dataset=NAME, data_dir=data_dir, output_dir=str(tmp_path / "run"), strategy="default",
      sampling=samplers.SamplingConfig(ratio=(1, 0, 24)), batch_size=64, epochs=1,
      early_stopping_patience=0, evaluate_each_epoch=False, eval_ks=(5, 10, 20))
  results = training.train(config, verbose=0)
  metrics = json.load(open(tmp_path / "run" / "metrics.json"))
  assert metrics["test_random"] == json.loads(json.dumps(results["test_random"]))
  for split in (metrics, metrics["test_random"]):
    assert {f"{m}@{k}" for m in ("hitrate", "recall", "precision") for k in (5, 10, 20)} <= set(
      split["model"]
    )
    assert all(0.0 <= v <= 1.0 for k, v in split["model"].items()
               if not k.startswith("avg_popularity@"))
    assert "popularity" in split and "oracle" not in split
    assert set(split["propensity_auc"]) == {"er"}  # No B: RE has no negative class.
  table = open(tmp_path / "run" / "metrics.md").read()
  assert "## test_random" in table and table.count("| model |") == 4  # Quality and bias, twice
  assert "RE " not in table
  assert json.load(open(tmp_path / "run" / "sampling.json"))["b_padded"] == 0  # B never asked for.


def test_asking_for_b_on_kuairand_is_refused_or_left_empty(dataset):
  """No recall log: B is unavailable, never filled with something else."""
  config = samplers.SamplingConfig(ratio=(1, 4, 20), seed=1)
  try:
    batch = next(
      iter(samplers.make_training_dataset(dataset, config, batch_size=256, shuffle=False))
    )
  except ValueError as e:  # The sampler refuses strategies that ask for B here.
    assert "B" in str(e)
    return
  space, mask = batch[batch_keys.NEG_SPACE].numpy(), batch[batch_keys.NEG_MASK].numpy()
  assert not ((space == batch_keys.SPACE_B) & (mask > 0)).any()


# Malformed files: one clear error naming the file, the line and the column.

def broken_copy(tmp_path, name, edit):
  directory = tmp_path / "manual"
  shutil.copytree(FIXTURE, directory, ignore=shutil.ignore_patterns("*.py", "*.md"))
  path = directory / name
  lines = path.read_text().splitlines()
  path.write_text("\n".join(edit(lines)) + "\n")
  return str(directory), str(path)


def drop_column(column):
  def edit(lines):
    header = lines[0].split(",")
    i = header.index(column)
    return [",".join(c for j, c in enumerate(line.split(",")) if j != i) for line in lines]
  return edit


def set_cell(line_number, column, value):
  def edit(lines):
    header = lines[0].split(",")
    cells = lines[line_number - 1].split(",")
    cells[header.index(column)] = value
    return lines[:line_number - 1] + [",".join(cells)] + lines[line_number:]
  return edit


@pytest.mark.parametrize(
  "name,edit,expected",
  [
    (STANDARD[0], drop_column("is_click"), "missing column 'is_click'"),
    (RANDOM, drop_column("time_ms"), "missing column 'time_ms'"),
    (STANDARD[1], drop_column("tab"), "missing column 'tab'"),
    (VIDEOS, drop_column("author_id"), "missing column 'author_id'"),
    (
      STANDARD[1],
      set_cell(5, "time_ms", "1651802467137.5"),
      "line 5: column 'time_ms' must hold integers",
    ),
    (
      STANDARD[0],
      set_cell(7, "video_id", "v42"),
      "line 7: column 'video_id' must hold integers (int64 in KuaiRand), got 'v42'",
    ),
    (
      STANDARD[0],
      set_cell(3, "user_id", ""),
      "line 3: column 'user_id' must hold integers (int64 in KuaiRand), got an empty cell",
    ),
    (STANDARD[0], set_cell(4, "date", "2022-04-19"), "line 4: column 'date' must hold integers"),
    (RANDOM, set_cell(2, "is_click", "2"), "line 2: column 'is_click' must be 0 or 1, got 2"),
    (
      STANDARD[0],
      set_cell(6, "date", "20220431"),
      "line 6: column 'date' must be a date YYYYMMDD, got 20220431",
    ),
    (
      STANDARD[1],
      set_cell(9, "hourmin", "1060"),
      "line 9: column 'hourmin' must be a time of day HHMM",
    ),
    (USERS, set_cell(4, "user_id", "x"), "line 4: column 'user_id' must hold integers"),
  ],
)
def test_malformed_file_gives_one_clear_error(tmp_path, name, edit, expected):
  directory, path = broken_copy(tmp_path, name, edit)
  with pytest.raises(logs.LogFormatError) as e:
    kuairand.read(directory, CONFIG)
  assert str(e.value).startswith(path + ": ") and expected in str(e.value)


def test_malformed_file_stops_the_build_with_that_error(tmp_path):
  directory, path = broken_copy(tmp_path, STANDARD[0], set_cell(7, "video_id", "v42"))
  builder = registry.builder(NAME, str(tmp_path / "tfds"))
  with pytest.raises(logs.LogFormatError, match="line 7: column 'video_id' must hold integers"):
    builder.download_and_prepare(download_config=tfds.download.DownloadConfig(manual_dir=directory))
  assert not builder.is_prepared()


def test_prepare_cli_prints_one_line_for_a_malformed_file(tmp_path):
  directory, path = broken_copy(tmp_path, USERS, drop_column("user_active_degree"))
  result = subprocess.run([sys.executable, "-m", "pipelines.prepare", f"--dataset={NAME}",
                           f"--manual_dir={directory}", f"--data_dir={tmp_path / 'tfds'}"],
                          capture_output=True, text=True, cwd=ROOT, timeout=300)
  assert result.returncode == 2
  assert f"error: {path}: missing column 'user_active_degree'" in result.stderr
  assert "Traceback" not in result.stderr


def test_missing_file_is_named(tmp_path):
  directory = tmp_path / "manual"
  shutil.copytree(FIXTURE, directory)
  os.remove(directory / RANDOM)
  with pytest.raises(FileNotFoundError, match=f"{RANDOM}: missing KuaiRand file.*zenodo"):
    kuairand.read(str(directory), CONFIG)


def test_configs_name_the_real_files():
  configs = kuairand.Kuairand.builder_configs
  assert set(configs) == {"pure", "1k", "27k", "tiny"}
  assert configs["pure"].files == kuairand.Files(
      standard=STANDARD, random=RANDOM, users=USERS, videos=VIDEOS)
  assert configs["1k"].files.standard == (
    "log_standard_4_08_to_4_21_1k.csv",
    "log_standard_4_22_to_5_08_1k.csv",
  )
  assert configs["27k"].files.standard == (
      "log_standard_4_08_to_4_21_27k_part1.csv", "log_standard_4_08_to_4_21_27k_part2.csv",
      "log_standard_4_22_to_5_08_27k_part1.csv", "log_standard_4_22_to_5_08_27k_part2.csv")
  assert configs["27k"].files.random == "log_random_4_22_to_5_08_27k.csv"
  assert configs["1k"].files.videos == "video_features_basic_1k.csv"


def test_test_days_and_window_are_configurable(tmp_path):
  config = kuairand.KuairandConfig(name="two_test_days", files=CONFIG.files, test_days=2,
                                   window_minutes=24 * 60, group_by_tab=False)
  tables = kuairand.read(FIXTURE, config)
  assert tables.splits["test"] == ["2022-05-07", "2022-05-08"]
  requests = tables.tables.requests
  assert "tab" not in requests.columns
  # One request per user and date when the window is the whole day and tabs are merged.
  standard = requests[~requests["request_id"].isin(tables.random_request_ids)]
  assert not standard.duplicated(["user_id", "date"]).any()
  with pytest.raises(logs.LogFormatError, match="test_days=6 leaves none to train on"):
    kuairand.read(FIXTURE, kuairand.KuairandConfig(name="x", files=CONFIG.files, test_days=6))
  with pytest.raises(ValueError, match="window_minutes must divide a day"):
    kuairand.KuairandConfig(name="y", files=CONFIG.files, window_minutes=7)

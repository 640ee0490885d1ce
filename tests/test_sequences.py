"""The interaction-sequence builders (`amazon_books`, `gowalla`, `retailrocket`, `taobao`) on the
fixtures `data/sequences/<name>/` (public layouts, made-up values; see data/sequences/README.md):
hand-counted users, items and interactions after the 5-core filter, time order and histories, the
disjoint 80/10/10 user split, the k-core filter on a hand example, the behaviours dropped, the
reference's ids and split, and one clear error per malformed file."""
import uma2_tf  # noqa: F401

import dataclasses
import gzip
import importlib.util
import json
import os
import random
import shutil
import subprocess
import sys
from collections import defaultdict

import numpy as np
import pytest
import tensorflow_datasets as tfds

from uma2_tf.data import reading
from uma2_tf.data import schema as schema_lib
from uma2_tf.sources import logs
from uma2_tf.sources import registry
from uma2_tf.sources import sequence_builders
from uma2_tf.sources import sequence_files
from uma2_tf.sources import sequences

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIXTURES = os.path.join(ROOT, "data", "sequences")
# builder -> (sequence_files.DATASETS key, fixture directory, file)
BUILDERS = {
    "amazon_books": ("books", "books", "reviews_Books_5.json"),
    "gowalla": ("gowalla", "gowalla", "loc-gowalla_totalCheckins.txt"),
    "retailrocket": ("retailrocket", "retailrocket", "events.csv"),
    "taobao": ("taobao", "taobao", "UserBehavior.csv"),
}
# Counted by hand from the tables of data/sequences/make_fixtures.py (README.md): read, then after
# the one-pass 5-core; users per split are floor(0.8 n), floor(0.9 n) - floor(0.8 n), the rest.
EXPECTED = {
    "amazon_books": dict(read=(11, 9, 68), users=10, items=8, interactions=61,
                         splits=(8, 1, 1), repeated=1),
    "gowalla": dict(read=(11, 9, 63), users=10, items=8, interactions=57, splits=(8, 1, 1),
                    repeated=7),
    "retailrocket": dict(read=(12, 8, 64), users=11, items=7, interactions=56, splits=(8, 1, 2),
                         repeated=2),
    "taobao": dict(read=(13, 8, 69), users=12, items=7, interactions=61, splits=(9, 1, 2),
                   repeated=1),
}
# Item vocabulary in id order: most frequent first, ties by first appearance in the file.
ITEM_ORDER = {
    # A..D 9 reviews, E, F 8, G 7, H 6; the file is grouped by ASIN.
    "amazon_books": ["000100039X", "0002005018", "0002007770", "0002051850", "0002113570",
                     "0002117088", "0002219417", "000222383X"],
    # 11, 9, 8, then four at 7 in first appearance (user 2's newest-first rows show 21714 before
    # 15372), then 1500177 with 5.
    "gowalla": ["22847", "420315", "316637", "16516", "5535878", "21714", "15372", "1500177"],
    # 10, then 9 and 9, then four at 8, in the shuffled file's order of first appearance.
    "retailrocket": ["355908", "318965", "248676", "367447", "443030", "22556", "253185"],
    "taobao": ["2268318", "2333346", "2576651", "3830808", "4365585", "4606018", "230380"],
}
# One user's sequence per dataset (raw ids, time order; ties in file order).
SEQUENCES = {
    "amazon_books": ("A1RJYHDQ4YA2TB", ["0002117088", "000100039X", "0002005018", "0002007770",
                                        "0002051850", "0002113570", "000100039X"]),
    "gowalla": ("0", ["22847", "420315", "22847", "316637", "1500177", "16516"]),
    "retailrocket": ("794181", ["355908", "318965", "367447", "443030", "248676"]),
    "taobao": ("1005", ["2268318", "2576651", "4365585", "230380", "2333346", "2268318"]),
}
MAX_HISTORY = sequence_builders.TINY_MAX_HISTORY


def fixture_dir(builder: str) -> str:
  return os.path.join(FIXTURES, BUILDERS[builder][1])


def fixture_path(builder: str) -> str:
  return os.path.join(fixture_dir(builder), BUILDERS[builder][2])


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
  directory = str(tmp_path_factory.mktemp("tfds_sequences"))
  for builder in BUILDERS:
    registry.builder(f"{builder}/tiny", directory).download_and_prepare(
        download_config=tfds.download.DownloadConfig(manual_dir=fixture_dir(builder)))
  return directory


@pytest.fixture(scope="module")
def datasets(data_dir):
  return {builder: registry.load(f"{builder}/tiny", data_dir) for builder in BUILDERS}


@pytest.fixture(scope="module")
def records(datasets):
  """builder -> split -> records (dicts of ints / int lists), by request id."""
  out = {}
  for builder, dataset in datasets.items():
    out[builder] = {}
    for split, files in dataset.split_files.items():
      rows = []
      for batch in reading.read_requests(files, dataset.schema, 1024):
        batch = {k: (v.to_list() if hasattr(v, "to_list") else v.numpy().tolist())
                 for k, v in batch.items()}
        rows += [{k: batch[k][i] for k in batch} for i in range(len(batch[schema_lib.USER_ID]))]
      out[builder][split] = sorted(rows, key=lambda r: r[schema_lib.REQUEST_ID])
  return out


def raw_ids(dataset) -> tuple[list, list]:
  with np.load(os.path.join(dataset.directory, logs.IDS_FILE)) as ids:
    return ids["user_raw_id"].tolist(), ids["item_raw_id"].tolist()


def side_file(dataset, name: str) -> dict:
  with open(os.path.join(dataset.directory, name)) as f:
    return json.load(f)


# ----------------------------------------------------------------------------- the fixtures


def _load_fixture_script():
  spec = importlib.util.spec_from_file_location("make_fixtures",
                                                os.path.join(FIXTURES, "make_fixtures.py"))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def test_fixtures_are_what_the_generator_writes():
  script = _load_fixture_script()
  for builder, lines in (("amazon_books", script.books_lines),
                         ("gowalla", script.gowalla_lines),
                         ("retailrocket", script.retailrocket_lines),
                         ("taobao", script.taobao_lines)):
    with open(fixture_path(builder)) as f:
      assert f.read() == "".join(line + "\n" for line in lines()), builder


def test_fixtures_are_in_the_public_layouts():
  with open(fixture_path("amazon_books")) as f:
    for line in f:
      review = json.loads(line)
      assert list(review) == ["reviewerID", "asin", "reviewerName", "helpful", "reviewText",
                              "overall", "summary", "unixReviewTime", "reviewTime"]
      assert len(review["asin"]) == 10 and review["unixReviewTime"] % 86400 == 0
  with open(fixture_path("gowalla")) as f:
    for line in f:
      user, time, latitude, longitude, location = line.rstrip("\n").split("\t")
      assert user.isdigit() and location.isdigit() and time.endswith("Z") and len(time) == 20
      float(latitude), float(longitude)
  with open(fixture_path("retailrocket")) as f:
    assert f.readline() == "timestamp,visitorid,event,itemid,transactionid\n"
    for line in f:
      timestamp, visitor, event, item, transaction = line.rstrip("\n").split(",")
      assert len(timestamp) == 13 and event in ("view", "addtocart", "transaction")
      assert bool(transaction) == (event == "transaction")
  with open(fixture_path("taobao")) as f:
    for line in f:
      cells = line.rstrip("\n").split(",")
      assert len(cells) == 5 and cells[3] in ("pv", "buy", "cart", "fav")
      assert 1511539200 <= int(cells[4]) < 1512316800  # Beijing 2017-11-25 .. 2017-12-03


# ----------------------------------------------------------------------------- the built datasets


@pytest.mark.parametrize("builder", list(BUILDERS))
def test_users_items_and_interactions_after_the_5core(builder, datasets):
  dataset, expected = datasets[builder], EXPECTED[builder]
  assert dataset.schema.num_users == expected["users"] + 1
  assert dataset.schema.num_items == expected["items"] + 1
  assert dataset.schema.user_features == {} and not dataset.schema.has_recall_log
  assert sum(dataset.num_records(split) for split in sequences.SPLITS) == expected["interactions"]
  stats = side_file(dataset, sequence_builders.SEQUENCES_FILE)
  assert (stats["read"]["users"], stats["read"]["items"],
          stats["read"]["interactions"]) == expected["read"]
  assert (stats["users"], stats["items"], stats["interactions"]) == (
      expected["users"], expected["items"], expected["interactions"])
  assert stats["items_with_interactions"] == expected["items"]
  assert stats["repeated_interactions"] == expected["repeated"]
  assert stats["kcore"] == {"min_count": 5, "mode": "one_pass", "rounds": 1, "users_removed": 1,
                            "items_removed": 1,
                            "interactions_removed": expected["read"][2] - expected["interactions"]}
  assert stats["max_history"] == MAX_HISTORY and stats["seed"] == 0 and stats["split_rule"]
  summary = dataset.stats()
  assert summary["sequences"] == stats
  assert sum(summary[f"{split}_requests"] for split in sequences.SPLITS) == expected["interactions"]


@pytest.mark.parametrize("builder", list(BUILDERS))
def test_user_split_is_disjoint_80_10_10(builder, datasets, records):
  expected = EXPECTED[builder]
  users = {split: {r[schema_lib.USER_ID] for r in records[builder][split]}
           for split in sequences.SPLITS}
  assert tuple(len(users[split]) for split in sequences.SPLITS) == expected["splits"]
  n_train, n_validation, _ = expected["splits"]
  # Disjoint, every user in one split, and each split a range of ids: train first.
  assert users["train"] == set(range(1, n_train + 1))
  assert users["validation"] == set(range(n_train + 1, n_train + n_validation + 1))
  assert users["test"] == set(range(n_train + n_validation + 1, expected["users"] + 1))
  stats = side_file(datasets[builder], sequence_builders.SEQUENCES_FILE)["splits"]
  for split in sequences.SPLITS:
    assert stats[split]["users"] == len(users[split])
    assert stats[split]["interactions"] == len(records[builder][split])
    assert stats[split]["user_ids"] == [min(users[split]), max(users[split])]


@pytest.mark.parametrize("builder", list(BUILDERS))
def test_records_follow_each_user_in_time_order(builder, records):
  request_ids = []
  for split in sequences.SPLITS:
    by_user = defaultdict(list)
    for record in records[builder][split]:
      by_user[record[schema_lib.USER_ID]].append(record)
      request_ids.append(record[schema_lib.REQUEST_ID])
    for user_records in by_user.values():
      items = [r[schema_lib.EXPOSED][0] for r in user_records]
      assert len(items) >= 5
      ids = [r[schema_lib.REQUEST_ID] for r in user_records]
      assert ids == list(range(ids[0], ids[0] + len(ids)))  # consecutive, in sequence order
      days = [r[schema_lib.DAY] for r in user_records]
      assert days == sorted(days) and days[0] >= 1
      for j, record in enumerate(user_records):
        assert record[schema_lib.HISTORY] == items[:j][-MAX_HISTORY:]
        assert record[schema_lib.EXPOSED] == record[schema_lib.RECALLED] == [items[j]]
        assert record[schema_lib.CLICKED] == [1]
  assert sorted(request_ids) == list(range(1, EXPECTED[builder]["interactions"] + 1))


@pytest.mark.parametrize("builder", list(BUILDERS))
def test_hand_checked_sequence_and_item_ids(builder, datasets, records):
  dataset = datasets[builder]
  user_raw, item_raw = raw_ids(dataset)
  assert item_raw == ["", *ITEM_ORDER[builder]]
  raw_user, expected = SEQUENCES[builder]
  user = user_raw.index(raw_user)
  # One record per interaction, request ids in sequence order.
  user_records = sorted((r for split in sequences.SPLITS for r in records[builder][split]
                         if r[schema_lib.USER_ID] == user), key=lambda r: r[schema_lib.REQUEST_ID])
  assert [item_raw[i] for r in user_records for i in r[schema_lib.EXPOSED]] == expected


def test_days_are_calendar_days(records, datasets):
  def days_of(builder, raw_user):
    user = raw_ids(datasets[builder])[0].index(raw_user)
    return [r[schema_lib.DAY] for split in sequences.SPLITS for r in records[builder][split]
            if r[schema_lib.USER_ID] == user]

  # Books: the first kept review is on 2010-02-01 (day 1); 2011-12-30 is day 698.
  assert days_of("amazon_books", "A1RJYHDQ4YA2TB") == [698, 704, 704, 740, 760, 760, 1218]
  # Taobao counts Beijing days: 2017-11-25 00:30 and 23:00 are both day 1.
  assert days_of("taobao", "1") == [1, 1, 1, 3, 9]
  # Gowalla: the first kept check-in is 2010-02-01 (user 14).
  assert days_of("gowalla", "0") == [121, 123, 123, 125, 126, 127]


@pytest.mark.parametrize("builder", list(BUILDERS))
def test_catalog_counts_the_train_split(builder, datasets, records):
  dataset = datasets[builder]
  train_items = [r[schema_lib.EXPOSED][0] for r in records[builder]["train"]]
  counts = np.bincount(train_items, minlength=dataset.schema.num_items)
  np.testing.assert_array_equal(dataset.catalog.click_count, counts)
  np.testing.assert_array_equal(dataset.catalog.exposure_count, counts)
  if builder == "taobao":
    # Items 2268318 (id 1) and 4365585 (id 5) share category 2520377.
    assert dataset.schema.item_features == {"category": 7}
    np.testing.assert_array_equal(dataset.catalog.features["category"], [0, 1, 2, 3, 4, 1, 5, 6])
    with np.load(os.path.join(dataset.directory, logs.IDS_FILE)) as ids:
      assert ids["item_feature/category"].tolist() == [
          "", "2520377", "2520771", "149192", "4181361", "2735466", "411153"]
  else:
    assert dataset.schema.item_features == {} and dataset.catalog.features == {}


def test_only_views_and_page_views_are_interactions(datasets):
  rocket = side_file(datasets["retailrocket"], sequence_builders.SEQUENCES_FILE)
  assert rocket["rows_by_type"] == {"view": 64, "addtocart": 4, "transaction": 4}
  assert rocket["rows_kept"] == 64
  taobao = side_file(datasets["taobao"], sequence_builders.SEQUENCES_FILE)
  assert taobao["rows_by_type"] == {"pv": 69, "buy": 4, "cart": 3, "fav": 2}
  assert taobao["rows_kept"] == 69
  # Item 5206 and visitor 1150086 have 7 events each but 4 views; item 3827899 and user 1010
  # have 7 rows but 4 pv: all dropped, though counting every event would keep them.
  users, items = raw_ids(datasets["retailrocket"])
  assert "5206" not in items and "1150086" not in users
  users, items = raw_ids(datasets["taobao"])
  assert "3827899" not in items and "1010" not in users
  with open(fixture_path("retailrocket")) as f:
    assert sum(",5206," in line for line in f) == 7
  with open(fixture_path("taobao")) as f:
    assert sum(line.startswith("1010,") for line in f) == 7


def test_gzipped_books_read_the_same(tmp_path):
  with open(fixture_path("amazon_books"), "rb") as f, \
      gzip.open(tmp_path / "reviews_Books_5.json.gz", "wb") as out:
    out.write(f.read())
  path = sequence_files.find_file(sequence_files.DATASETS["books"], str(tmp_path))
  assert path.endswith(".json.gz")
  plain = sequences.prepare(sequence_files.read("books", fixture_path("amazon_books")))
  zipped = sequences.prepare(sequence_files.read("books", path))
  np.testing.assert_array_equal(plain.items, zipped.items)
  assert plain.user_raw == zipped.user_raw and plain.item_raw == zipped.item_raw
  shutil.copy(fixture_path("amazon_books"), tmp_path)
  with pytest.raises(logs.LogFormatError, match="both .*reviews_Books_5.json and .*json.gz"):
    sequence_files.find_file(sequence_files.DATASETS["books"], str(tmp_path))


# ----------------------------------------------------------------------------- k-core and split


def test_kcore_on_a_hand_example():
  # k = 2. u0: i0 i1 i2; u1: i0 i1; u2: i2 i3; u3: i3. Every item has 2 interactions.
  users = [0, 0, 0, 1, 1, 2, 2, 3]
  items = [0, 1, 2, 0, 1, 2, 3, 3]
  one_pass = sequences.kcore(users, items, 2, sequences.ONE_PASS)
  # u3 (1 interaction) goes; every item stays, and i3 is left with 1 (u2's): one pass stops.
  assert one_pass.rows.tolist() == [True] * 7 + [False]
  assert one_pass.items.tolist() == [True] * 4 and one_pass.rounds == 1
  fixed = sequences.kcore(users, items, 2, sequences.FIXED_POINT)
  # Then i3 goes, u2 (left with i2), i2 (left with u0's): u0 and u1 keep i0 and i1.
  assert fixed.rows.tolist() == [True, True, False, True, True, False, False, False]
  assert fixed.items.tolist() == [True, True, False, False] and fixed.rounds == 4
  # A repeated interaction counts twice.
  assert sequences.kcore([0, 0], [5, 5], 2).rows.tolist() == [True, True]
  with pytest.raises(ValueError, match="kcore mode"):
    sequences.kcore(users, items, 2, "twice")


def test_fixed_point_on_the_gowalla_fixture():
  interactions = sequence_files.read("gowalla", fixture_path("gowalla"))
  one_pass = sequences.prepare(interactions)
  fixed = sequences.prepare(interactions, kcore_mode=sequences.FIXED_POINT)
  # One pass keeps place 1500177 (5 check-ins, one by the dropped user 27) with 4 left.
  assert 1500177 in one_pass.item_raw
  assert int((one_pass.items == one_pass.item_raw.index(1500177) + 1).sum()) == 4
  # The fixed point drops it, then user 19 (left with 4), in three rounds.
  assert (fixed.num_users, fixed.num_items, len(fixed.items)) == (9, 7, 49)
  assert fixed.stats["kcore"]["rounds"] == 3
  assert 1500177 not in fixed.item_raw and 19 not in fixed.user_raw
  assert np.bincount(fixed.items)[1:].min() >= 5
  assert min(len(fixed.items_of(u)) for u in range(1, 10)) >= 5


def test_split_sizes_are_floors():
  assert [tuple(sequences.split_sizes(n).values()) for n in (6, 10, 11, 12, 13, 101)] == [
      (4, 1, 1), (8, 1, 1), (8, 1, 2), (9, 1, 2), (10, 1, 2), (80, 10, 11)]
  assert sequences.split_sizes(5) == {"train": 4, "validation": 0, "test": 1}


def reference_split(rows, k: int = 5, seed: int = 1230):
  """The reference's preprocessing, written again from its description (ComiRec
  preprocess/data.py): item counts, item map by count, users with k kept items, shuffle, floors,
  per-user stable sort by time."""
  item_count, by_user = defaultdict(int), defaultdict(list)
  for user, item, time in rows:
    item_count[item] += 1
    by_user[user].append((item, time))
  ranked = sorted(item_count.items(), key=lambda pair: pair[1], reverse=True)
  item_map = {item: i + 1 for i, (item, count) in enumerate(ranked) if count >= k}
  kept = [u for u, seq in by_user.items() if sum(item in item_map for item, _ in seq) >= k]
  rng = random.Random(seed)
  rng.shuffle(kept)
  a, b = int(len(kept) * 0.8), int(len(kept) * 0.9)
  splits = {"train": kept[:a], "validation": kept[a:b], "test": kept[b:]}
  sequences_ = {u: [item_map[i] for i, _ in sorted(by_user[u], key=lambda x: x[1])
                    if i in item_map] for u in kept}
  return item_map, splits, sequences_


@pytest.mark.parametrize("builder", list(BUILDERS))
def test_one_pass_with_seed_1230_is_the_reference(builder):
  name = BUILDERS[builder][0]
  interactions = sequence_files.read(name, fixture_path(builder))
  rows = [(interactions.user_keys[u], interactions.item_keys[i], t) for u, i, t in
          zip(interactions.users, interactions.items, interactions.times)]
  item_map, splits, reference = reference_split(rows)
  prepared = sequences.prepare(interactions, seed=1230)
  assert prepared.item_raw == list(item_map)
  for split, (first, last) in prepared.split_users.items():
    assert prepared.user_raw[first - 1:last] == splits[split]
  for user, raw in enumerate(prepared.user_raw, 1):
    assert prepared.items_of(user).tolist() == reference[raw]


# ----------------------------------------------------------------------------- bad input


def broken_copy(tmp_path, builder: str, edit) -> tuple[str, str]:
  directory = tmp_path / "manual"
  directory.mkdir()
  path = directory / BUILDERS[builder][2]
  with open(fixture_path(builder)) as f:
    lines = f.read().splitlines()
  path.write_text("".join(line + "\n" for line in edit(lines)))
  return str(directory), str(path)


def set_line(number: int, text: str):
  return lambda lines: lines[:number - 1] + [text] + lines[number:]


def replace_in_line(number: int, old: str, new: str):
  def edit(lines):
    assert old in lines[number - 1]
    return set_line(number, lines[number - 1].replace(old, new, 1))(lines)
  return edit


def cells(number: int, column: int, value: str, separator: str = ","):
  def edit(lines):
    fields = lines[number - 1].split(separator)
    fields[column] = value
    return set_line(number, separator.join(fields))(lines)
  return edit


MALFORMED = [
    ("amazon_books", set_line(5, '{"reviewerID": "A2SUAM1J3GNN3B", "asin": "0002'),
     "line 5: expected one JSON object (a review), got "),
    ("amazon_books", set_line(6, '["A2SUAM1J3GNN3B", "0002005018"]'),
     "line 6: expected one JSON object (a review)"),
    ("amazon_books", replace_in_line(7, '"unixReviewTime": 1294617600,',
                                     '"unixReviewTime": "1294617600",'),
     "line 7, field 'unixReviewTime': expected an integer (seconds since 1970-01-01 UTC), "
     "got '1294617600'"),
    ("amazon_books", replace_in_line(3, '"asin": "000100039X", ', ""),
     "line 3, field 'asin': expected a non-empty string, got nothing (the field is missing)"),
    ("gowalla", cells(4, 4, "22847\t0", "\t"),
     "line 4: expected 5 tab-separated columns (user, check-in time, latitude, longitude, "
     "location id), got 6"),
    ("gowalla", cells(9, 1, "2010-05-06 10:00:00", "\t"),
     "line 9, column 'check-in time': expected a UTC time YYYY-MM-DDTHH:MM:SSZ such as "
     "2010-10-19T23:55:27Z, got '2010-05-06 10:00:00'"),
    ("gowalla", cells(12, 2, "north", "\t"),
     "line 12, column 'latitude': expected a number (degrees), got 'north'"),
    ("gowalla", cells(20, 4, "loc7", "\t"),
     "line 20, column 'location id': expected an id (a non-negative integer), got 'loc7'"),
    ("retailrocket", set_line(1, "timestamp,visitorid,event,itemid"),
     "line 1: expected the header 'timestamp,visitorid,event,itemid,transactionid'"),
    ("retailrocket", cells(10, 0, "2015-06-01"),
     "line 10, column 'timestamp': expected an integer (milliseconds since 1970-01-01 UTC), "
     "got '2015-06-01'"),
    ("retailrocket", cells(11, 2, "click"),
     "line 11, column 'event': expected one of view, addtocart, transaction, got 'click'"),
    ("retailrocket", cells(12, 4, ","),
     "line 12: expected 5 comma-separated columns (timestamp, visitorid, event, itemid, "
     "transactionid), got 6"),
    ("taobao", cells(3, 3, "click"),
     "line 3, column 'behavior_type': expected one of pv, buy, cart, fav, got 'click'"),
    ("taobao", cells(8, 4, "1511541000.5"),
     "line 8, column 'timestamp': expected an integer (seconds since 1970-01-01 UTC), "
     "got '1511541000.5'"),
    ("taobao", cells(14, 0, "u1000"),
     "line 14, column 'user_id': expected an id (a non-negative integer), got 'u1000'"),
    ("taobao", set_line(20, "1001,3827899,2920476,pv"),
     "line 20: expected 5 comma-separated columns (user_id, item_id, category_id, "
     "behavior_type, timestamp), got 4"),
]


@pytest.mark.parametrize("builder,edit,expected", MALFORMED)
def test_malformed_line_gives_one_error_naming_file_and_line(tmp_path, builder, edit, expected):
  directory, path = broken_copy(tmp_path, builder, edit)
  with pytest.raises(logs.LogFormatError) as e:
    sequence_files.read(BUILDERS[builder][0], path)
  assert str(e.value).startswith(f"{path}: {expected}"), str(e.value)


def test_blank_lines_and_timestamps_outside_the_period_are_read(tmp_path):
  directory, path = broken_copy(
      tmp_path, "taobao", lambda lines: cells(8, 4, "-86400")(lines) + ["", "  "])
  interactions = sequence_files.read("taobao", path)
  assert interactions.info["blank_lines"] == 2 and interactions.info["lines"] == 80
  assert interactions.times.min() == -86400 and len(interactions.times) == 69


def test_a_malformed_file_stops_the_build_and_leaves_no_dataset(tmp_path):
  directory, path = broken_copy(tmp_path, "taobao", cells(8, 4, "1511541000.5"))
  data_dir = tmp_path / "tfds"
  builder = registry.builder("taobao/tiny", str(data_dir))
  with pytest.raises(logs.LogFormatError, match=f"{path}: line 8, column 'timestamp'"):
    builder.download_and_prepare(download_config=tfds.download.DownloadConfig(manual_dir=directory))
  assert not builder.is_prepared()
  # Only TFDS's own note about the builder (`taobao/.config/metadata.json`; pipelines.prepare
  # removes the directories a failed build made): no shard, no side file.
  written = [os.path.relpath(os.path.join(d, f), data_dir)
             for d, _, files in os.walk(data_dir) for f in files]
  assert written == [os.path.join("taobao", ".config", "metadata.json")]


def test_missing_file_names_it_and_the_manual_dir(tmp_path):
  builder = registry.builder("retailrocket/tiny", str(tmp_path / "tfds"))
  with pytest.raises(FileNotFoundError) as e:
    builder.download_and_prepare(
        download_config=tfds.download.DownloadConfig(manual_dir=str(tmp_path)))
  assert str(e.value).startswith(f"{tmp_path / 'events.csv'}: missing events.csv in the manual "
                                 f"dir '{tmp_path}'; download RetailRocket")
  assert not builder.is_prepared()
  with pytest.raises(FileNotFoundError, match="reviews_Books_5.json or reviews_Books_5.json.gz"):
    sequence_files.find_file(sequence_files.DATASETS["books"], str(tmp_path))


def test_nothing_left_after_filtering_is_an_error(tmp_path):
  directory, path = broken_copy(tmp_path, "gowalla", lambda lines: lines[:12])
  with pytest.raises(logs.LogFormatError, match=f"{path}: nothing is left after the 5-core"):
    sequences.prepare(sequence_files.read("gowalla", path))
  rocket = tmp_path / "rocket"
  rocket.mkdir()
  (rocket / "events.csv").write_text("timestamp,visitorid,event,itemid,transactionid\n"
                                     "1433221332117,257597,addtocart,355908,\n")
  with pytest.raises(logs.LogFormatError, match="no interaction to read: no row with event == "
                     "view in its 2 line"):
    sequences.prepare(sequence_files.read("retailrocket", str(rocket / "events.csv")))


def test_too_few_users_for_three_splits_is_an_error():
  five_users = sequence_files.Interactions(
      path="five.csv", users=np.repeat(np.arange(5), 5), items=np.tile(np.arange(5), 5),
      times=np.arange(25), user_keys=list(range(5)), item_keys=list(range(5)))
  with pytest.raises(logs.LogFormatError, match=r"five.csv: 5 user\(s\) left .* leaves "
                     r"\['validation'\] empty .* at least 6 users"):
    sequences.prepare(five_users)
  six_users = dataclasses.replace(five_users, users=np.repeat(np.arange(6), 5),
                                  items=np.tile(np.arange(5), 6), times=np.arange(30),
                                  user_keys=list(range(6)))
  assert sequences.prepare(six_users).split_users == {
      "train": (1, 4), "validation": (5, 5), "test": (6, 6)}


def test_unbuilt_dataset_names_the_prepare_command(tmp_path):
  with pytest.raises(reading.DatasetNotBuiltError, match="pipelines.prepare "
                     "--dataset=gowalla/tiny --manual_dir="):
    registry.load("gowalla/tiny", str(tmp_path))


def test_prepare_cli_prints_one_line_for_a_malformed_file(tmp_path):
  directory, path = broken_copy(tmp_path, "gowalla", cells(9, 1, "yesterday", "\t"))
  result = subprocess.run([sys.executable, "-m", "pipelines.prepare", "--dataset=gowalla/tiny",
                           f"--manual_dir={directory}", f"--data_dir={tmp_path / 'tfds'}"],
                          capture_output=True, text=True, cwd=ROOT, timeout=300)
  assert result.returncode == 2, result.stderr[-2000:]
  assert f"error: {path}: line 9, column 'check-in time': expected a UTC time" in result.stderr
  assert "Traceback" not in result.stderr

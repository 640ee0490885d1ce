"""Own logs (`request_logs`) and the canonical writer every real-log builder uses (`logs.write`):
ids, histories, stages and popularity by hand on a small log; both file layouts end to end through
the trainer; malformed files give one clear error."""
import uma2_tf  # noqa: F401

import os
import shutil
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from uma2_tf.data import schema as schema_lib
from uma2_tf.sources import logs

FIXTURES = os.path.join(
  os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "data", "request_logs"
)


def small_tables(**changes):
  requests = pd.DataFrame(
    {
      "request_id": [10, 11, 12, 13],
      "timestamp": [100, 50, 200, 300],
      "date": ["2024-01-01", "2024-01-01", "2024-01-02", "2024-01-03"],
      "user_id": ["bob", "amy", "bob", "amy"],
      "city": ["rome", "oslo", "rome", None],
      "exposed": [["x", "y"], ["y"], ["z"], ["x"]],
      "clicked": [[1, 0], [1], [1], [0]],
      "recalled": [["x", "y", "z"], ["y", "x"], ["z", "y"], ["x"]],
      "recalled_stage": [
        ["rerank", "rerank", "rank"],
        ["rerank", "rank"],
        ["rerank", "rank"],
        ["rerank"],
      ],
    }
  )
  items = pd.DataFrame({"item_id": ["x", "y", "z", "w"], "category": ["c2", "c1", "c2", "c3"]})
  for column, value in changes.items():
    requests[column] = value
  return logs.LogTables(
    requests=requests,
    items=items,
    user_features=("city",),
    item_features=("category",),
    stages=("rank", "rerank"),
  )


def test_write_remaps_ids_builds_histories_and_counts_train_popularity(tmp_path):
  generators = logs.write(str(tmp_path), small_tables(), {"train": ["2024-01-01", "2024-01-02"],
                                                          "test": ["2024-01-03"]}, source="small")
  records = {split: [r for _, r in gen] for split, gen in generators.items()}
  # Dense ids in sorted order of the raw ones, 0 kept for padding: amy 1, bob 2; w 1, x 2, y 3, z 4.
  train = {int(r["request_id"]): r for r in records["train"]}
  assert [int(r["request_id"]) for r in records["train"]] == [11, 10, 12]  # time order
  assert int(train[10]["user_id"]) == 2 and int(train[11]["user_id"]) == 1
  np.testing.assert_array_equal(train[10]["exposed"], [2, 3])
  np.testing.assert_array_equal(train[10]["recalled"], [2, 3, 4])
  np.testing.assert_array_equal(train[10]["recalled_stage"], [2, 2, 1])  # rank 1, rerank 2
  assert int(train[10]["day"]) == 1 and int(train[12]["day"]) == 2
  # History: the user's clicks on earlier requests, newest last; none before the first request.
  assert train[10]["history"].size == 0
  np.testing.assert_array_equal(train[12]["history"], [2])       # bob clicked x at request 10
  test = records["test"][0]
  np.testing.assert_array_equal(test["history"], [3])            # amy clicked y at request 11
  assert int(test["city"]) == 0                                   # missing value -> padding id
  assert int(train[10]["city"]) == 2 and int(train[11]["city"]) == 1   # oslo 1, rome 2

  schema = schema_lib.LogSchema.load(str(tmp_path))
  assert (schema.num_users, schema.num_items, schema.stages) == (3, 5, ("rank", "rerank"))
  assert schema.has_recall_log and schema.user_features == {"city": 3}
  catalog = schema_lib.ItemCatalog.load(str(tmp_path))
  # Train days only: x clicked once (request 10), y once (11), z once (12); request 13 is test.
  np.testing.assert_array_equal(catalog.click_count, [0, 0, 1, 1, 1])
  np.testing.assert_array_equal(catalog.exposure_count, [0, 0, 1, 2, 1])
  np.testing.assert_array_equal(catalog.features["category"], [0, 3, 2, 1, 2])
  with np.load(tmp_path / logs.IDS_FILE) as ids:
    assert ids["item_raw_id"].tolist() == ["", "w", "x", "y", "z"]
    assert ids["user_raw_id"].tolist() == ["", "amy", "bob"]


def test_exposure_only_logs_have_no_space_b(tmp_path):
  tables = small_tables()
  tables = logs.LogTables(requests=tables.requests.drop(columns=["recalled", "recalled_stage"]),
                          items=tables.items, user_features=("city",), item_features=("category",))
  generators = logs.write(str(tmp_path), tables, {"train": ["2024-01-01", "2024-01-02"],
                                                  "test": ["2024-01-03"]}, source="exposures only")
  for _, record in generators["train"]:
    np.testing.assert_array_equal(record["recalled"], record["exposed"])
  assert not schema_lib.LogSchema.load(str(tmp_path)).has_recall_log


@pytest.mark.parametrize(
  "changes, message",
  [
    (dict(clicked=[[1], [1], [1], [0]]), "request 10: 'clicked' has 1 values for 2 exposed items"),
    (dict(clicked=[[1, 2], [1], [1], [0]]), "request 10: 'clicked' must hold 0/1"),
    (
      dict(exposed=[["x", "q"], ["y"], ["z"], ["x"]]),
      "request 10: exposed item 'q' is not in 'recalled'",
    ),
    (
      dict(recalled=[["x", "y", "q"], ["y", "x"], ["z", "y"], ["x"]]),
      "request 10: item 'q' is not in the items table",
    ),
    (
      dict(recalled_stage=[["rerank", "rank"], ["rerank", "rank"], ["rerank", "rank"], ["rerank"]]),
      "request 10: 'recalled_stage' has 2 values for 3 recalled items",
    ),
    (
      dict(
        recalled_stage=[
          ["rerank", "rerank", "prerank"],
          ["rerank", "rank"],
          ["rerank", "rank"],
          ["rerank"],
        ]
      ),
      "request 10: unknown stage 'prerank'",
    ),
    (
      dict(date=["2024/01/01", "2024-01-01", "2024-01-02", "2024-01-03"]),
      "request 10: 'date' must be a YYYY-MM-DD",
    ),
    (dict(request_id=[10, 10, 12, 13]), "request_id 10 appears more than once"),
    (dict(timestamp=[1.5, 2.0, 3.0, 4.0]), "column 'timestamp' must hold integers"),
  ],
)
def test_a_malformed_table_is_one_error_naming_request_and_column(tmp_path, changes, message):
  with pytest.raises(logs.LogFormatError, match=message.replace("(", r"\(").replace(")", r"\)")):
    logs.write(
      str(tmp_path),
      small_tables(**changes),
      {"train": ["2024-01-01"], "test": ["2024-01-03"]},
      source="small",
    )
  assert not os.path.exists(tmp_path / schema_lib.SCHEMA_FILE)  # nothing written half-way


def _prepare(name, manual_dir, data_dir):
  return subprocess.run(
    [
      sys.executable,
      "-m",
      "pipelines.prepare",
      f"--dataset=request_logs/{name}",
      f"--manual_dir={manual_dir}",
      f"--data_dir={data_dir}",
    ],
    capture_output=True,
    text=True,
    timeout=300,
  )


@pytest.fixture(scope="module")
def built_logs(tmp_path_factory):
  data_dir = str(tmp_path_factory.mktemp("tfds_logs"))
  for layout in ("one_row", "two_tables"):
    result = _prepare(layout, os.path.join(FIXTURES, layout), data_dir)
    assert result.returncode == 0, result.stderr[-3000:]
  return data_dir


def test_both_layouts_give_the_same_records(built_logs):
  import tensorflow_datasets as tfds

  from uma2_tf.sources import registry

  def records(layout):
    b = registry.builder(f"request_logs/{layout}", built_logs)
    out = {}
    for split in ("train", "test"):
      for r in tfds.as_numpy(b.as_dataset(split=split)):
        out[int(r["request_id"])] = {k: np.asarray(v).tolist() for k, v in r.items()}
    return out

  one, two = records("one_row"), records("two_tables")
  assert len(one) == 240 and one == two
  dataset = registry.load("request_logs/one_row", built_logs)
  assert dataset.schema.stages == ("prerank", "rank", "rerank")
  assert sorted(dataset.split_files) == ["test", "train"]


def test_one_epoch_on_own_logs_through_the_trainer(built_logs, tmp_path):
  from uma2_tf import training

  results = training.train(
    training.TrainConfig(
      dataset="request_logs/two_tables",
      data_dir=built_logs,
      output_dir=str(tmp_path),
      epochs=1,
      batch_size=64,
      eval_ks=(5, 10, 20),
      monitor="recall@10",
      early_stopping_patience=0,
      # Every train click is trained on: nothing held out for validation.
      evaluate_each_epoch=False,
      validation="none",
    ),
    verbose=0,
  )
  assert 0 <= results["model"]["recall@10"] <= 1 and "oracle" not in results  # no world: no oracle
  assert results["run"]["train_positives"] == 567


@pytest.mark.parametrize("layout, table, edit, message", [
    ("one_row", "requests", lambda t: t.drop(columns=["clicked"]), "missing column(s) ['clicked']"),
    ("one_row", "requests", lambda t: t.assign(request_id="r" + t["request_id"].astype(str)),
     "requests.csv: column 'request_id' must hold integers, got 'r1001'"),
    ("two_tables", "recalls", lambda t: t[t["request_id"] != 1003],
     "recalls.csv: request 1003 is in exposures.csv but has no row here"),
    ("two_tables", "exposures", lambda t: t.assign(position=1.5),
     "exposures.csv: column 'position' must hold integers"),
])
def test_a_malformed_file_stops_the_build_with_one_line(tmp_path, layout, table, edit, message):
  manual = tmp_path / "logs"
  shutil.copytree(os.path.join(FIXTURES, layout), manual)
  edit(pd.read_csv(manual / f"{table}.csv")).to_csv(manual / f"{table}.csv", index=False)
  result = _prepare("broken", manual, tmp_path / "tfds")
  assert result.returncode == 2, result.stderr[-3000:]
  assert message in result.stderr and "Traceback" not in result.stderr, result.stderr[-3000:]
  assert not (tmp_path / "tfds" / "request_logs" / "broken" / "1.0.0").exists()


def test_eval_ks_beyond_the_corpus_is_one_flag_error(built_logs, tmp_path):
  result = subprocess.run(
    [
      sys.executable,
      "-m",
      "pipelines.train",
      "--dataset=request_logs/one_row",
      f"--data_dir={built_logs}",
      f"--output_dir={tmp_path}",
    ],
    capture_output=True,
    text=True,
    timeout=300,
  )
  assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr[-3000:]
  assert "--eval_ks: the largest K (200) must be below the corpus size" in result.stderr

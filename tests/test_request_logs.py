"""Own logs (`request_logs`) and the canonical writer every real-log builder uses (`logs.write`):
ids, histories, stages and popularity by hand on a small log; both file layouts end to end through
the trainer; malformed files give one clear error naming file, row, column and value, and leave
nothing behind; a changed log is not reused."""
import uma2_tf  # noqa: F401

import json
import os
import re
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


# ----------------------------------------------------------------------------------------------
# A user's own malformed logs: tiny hand-written log dirs, each prepared by `pipelines.prepare`
# in one subprocess (TensorFlow is imported once for all of them, as CI time matters).

ITEMS = "item_id,category\nv1,c1\nv7,c2\nw,c1\n"
REQUESTS = ("request_id,timestamp,date,user_id,age,exposed,clicked\n"
            "1,10,2024-01-01,u1,20,v1 v7,1 0\n"
            "2,20,2024-01-01,u2,30,v7,1\n"
            "3,30,2024-01-02,u1,20,w v1,0 1\n")
EXPOSURES = ("request_id,timestamp,date,user_id,item_id,position,clicked\n"
             "1,10,2024-01-01,u1,v1,0,1\n"
             "1,10,2024-01-01,u1,v7,1,0\n"
             "2,20,2024-01-02,u1,w,0,1\n")
SPLITS = '{"train": ["2024-01-01"], "test": ["2024-01-02"]}'
RECALLS = "request_id,item_id\n1,v1\n1,v7\n2,w\n"


def _with_column(text, header, value):
  """A CSV `text` with one more column, `header`, holding `value` on every data row."""
  head, *rows = text.splitlines()
  return "\n".join([f"{head},{header}", *(f"{row},{value}" for row in rows)]) + "\n"

# Runs `pipelines.prepare` once per step in one process: a step is ["prepare", [flags]] (answers
# [exit status, the lines starting with "error" or "Traceback" it printed]) or ["write", path,
# text]. Called like `app.run` calls it: flags parsed, then main's return value is the status.
_DRIVER = """
import contextlib, io, json, sys, traceback
from pipelines import prepare
answers = []
for step in json.loads(sys.argv[1]):
  if step[0] == "write":
    open(step[1], "w").write(step[2])
    continue
  err = io.StringIO()
  with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
    try:
      prepare.FLAGS.unparse_flags()
      prepare.FLAGS(["prepare", *step[1]])
      status = prepare.main(["prepare"])
    except BaseException:
      traceback.print_exc()
      status = 1
  answers.append([status, [l for l in err.getvalue().splitlines()
                           if l.startswith(("error", "Traceback"))]])
print(json.dumps(answers))
"""


def _log_dir(root, name, **files):
  """A manual dir `root/name` holding `files` (file name with '.' as '_' -> text)."""
  directory = root / name
  directory.mkdir(parents=True)
  for file_name, text in files.items():
    (directory / file_name.replace("_", ".")).write_text(text)
  return directory


def _run_steps(steps):
  result = subprocess.run([sys.executable, "-c", _DRIVER, json.dumps(steps, default=str)],
                          capture_output=True, text=True, timeout=600,
                          cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
  assert result.returncode == 0, result.stderr[-3000:]
  return json.loads(result.stdout.splitlines()[-1])


def _prepare_flags(name, manual_dir, data_dir, *more):
  return ["prepare", [f"--dataset=request_logs/{name}", f"--manual_dir={manual_dir}",
                      f"--data_dir={data_dir}", *more]]


# name -> (the log's files, prepare's extra flags, the error's end after the manual dir or None).
BAD_LOGS = {
    # 1. Crashes.
    "header_only_requests": (
        dict(items_csv=ITEMS, requests_csv=REQUESTS.splitlines()[0]), (),
        "requests.csv: no data row, only the header; expected one row per request"),
    "header_only_exposures": (
        dict(items_csv=ITEMS, exposures_csv=EXPOSURES.splitlines()[0]), (),
        "exposures.csv: no data row, only the header; expected one row per exposed item"),
    "empty_item_id": (
        dict(items_csv=ITEMS + ",c3\n", requests_csv=REQUESTS), (),
        "items.csv: data row 4 (line 5), column 'item_id': expected an item id, got an empty cell"),
    "no_click": (
        dict(items_csv=ITEMS, requests_csv=REQUESTS.replace("1 0", "0 0")
             .replace("v7,1\n", "v7,0\n").replace("0 1\n", "0 0\n")), (),
        "requests.csv: column 'clicked': expected at least one click (1) in split 'train', got "
        "none in its 2 request(s) and 3 exposure(s) (dates 2024-01-01)"),
    # 2. Ids as written: strings mixing digit-only ids and others, a '-1' id.
    "mixed_ids": (dict(items_csv=ITEMS.replace("v7", "7"),
                       requests_csv=REQUESTS.replace("v7", "7")), (), None),
    "minus_one": (dict(items_csv=ITEMS.replace("v7", "-1"),
                       requests_csv=REQUESTS.replace("v7", "-1")), (), None),
    # 3. Bad cells.
    "text_request_id": (
        dict(items_csv=ITEMS, requests_csv=REQUESTS.replace("\n2,20", "\nx2,20")), (),
        "requests.csv: data row 2 (line 3), column 'request_id': expected an integer (int64), "
        "got 'x2'"),
    "huge_request_id": (
        dict(items_csv=ITEMS, requests_csv=REQUESTS.replace("\n2,20", "\n99999999999999999999,20")),
        (), "requests.csv: data row 2 (line 3), column 'request_id': expected an integer (int64), "
        "got '99999999999999999999'"),
    "no_timestamp": (
        dict(items_csv=ITEMS, requests_csv=REQUESTS.replace("\n2,20", "\n2,")), (),
        "requests.csv: data row 2 (line 3), column 'timestamp': expected an integer (int64), "
        "got an empty cell"),
    "no_request_id": (
        dict(items_csv=ITEMS, requests_csv=REQUESTS.replace("\n2,20", "\n,20")), (),
        "requests.csv: data row 2 (line 3), column 'request_id': expected an integer (int64), "
        "got an empty cell"),
    "empty_exposed_item": (
        dict(items_csv=ITEMS, exposures_csv=EXPOSURES.replace("u1,v7", "u1,"),
             recalls_csv="request_id,item_id\n1,v1\n1,v7\n2,w\n"), (),
        "exposures.csv: data row 2 (line 3), request 1, column 'item_id': expected an item id, "
        "got an empty cell"),
    "exposed_twice": (
        dict(items_csv=ITEMS, exposures_csv=EXPOSURES.replace("u1,v7", "u1,v1")), (),
        "exposures.csv: data row 2 (line 3), request 1, column 'item_id': expected each item once "
        "per request, got 'v1' again (first at data row 1 (line 2))"),
    # 4. Silent acceptance or loss.
    "out_of_split": (
        dict(items_csv=ITEMS, splits_json=SPLITS,
             requests_csv=REQUESTS + "4,40,2024-01-05,u2,30,v1,1\n"), (),
        "requests.csv: request 4, column 'date': expected a date of the splits (train: "
        "2024-01-01, test: 2024-01-02), got '2024-01-05' (1 request(s) fall in no split); or "
        "leave such requests out: skip 'out_of_split' (pipelines.prepare --skip=out_of_split)"),
    # u1's request 3 (timestamp 5, 2024-01-02) comes before its request 1 (timestamp 10,
    # 2024-01-01): request 1's history would hold a click of the next day.
    "date_mismatch": (
        dict(items_csv=ITEMS, requests_csv=REQUESTS.replace("3,30,", "3,5,")), (),
        "requests.csv: request 1 (user 'u1'), column 'date': expected '2024-01-02' or later, the "
        "date of the user's request 3 that comes before it in time (timestamp 5, this one 10), "
        "got '2024-01-01': within a user, requests in timestamp order must have non-decreasing "
        "dates, else a day's history holds a later day's clicks (1 request(s) break this); or "
        "leave such requests out: skip 'date_mismatch' (pipelines.prepare --skip=date_mismatch)"),
    "both_skipped": (
        dict(items_csv=ITEMS, splits_json=SPLITS, requests_csv=REQUESTS.replace("3,30,", "3,5,")
             + "4,40,2024-01-05,u2,30,v1,1\n"),
        ("--skip=out_of_split,date_mismatch",), None),
    "misspelt_list": (
        dict(items_csv=ITEMS, requests_csv=REQUESTS.replace("clicked\n", "clicked,recalld\n")
             .replace("1 0\n", "1 0,v1 v7 w\n").replace(",1\n", ",1,v7\n")
             .replace("0 1\n", "0 1,w v1\n")), (),
        "requests.csv: data row 1 (line 2), column 'recalld': expected one categorical value (a "
        "column outside the layout is a user feature; only requests.csv's exposed, clicked, "
        "recalled, recalled_stage hold lists), got the list 'v1 v7 w'; did you mean 'recalled'?"),
    # 5. Headers: pandas would rename a repeated `date` to `date.1` (then crash) and make an empty
    # name an all-empty feature `Unnamed: 2`.
    "repeated_column": (
        dict(items_csv=ITEMS, requests_csv=_with_column(REQUESTS, "date", "2024-01-01")), (),
        "requests.csv: the header repeats column(s) ['date']; expected each column once, got "
        "['request_id', 'timestamp', 'date', 'user_id', 'age', 'exposed', 'clicked', 'date']"),
    "repeated_recall_column": (
        dict(items_csv=ITEMS, exposures_csv=EXPOSURES,
             recalls_csv=_with_column(RECALLS, "item_id", "v1")), (),
        "recalls.csv: the header repeats column(s) ['item_id']; expected each column once, got "
        "['request_id', 'item_id', 'item_id']"),
    "unnamed_column": (
        dict(items_csv=ITEMS.replace("category\n", "category,\n"), requests_csv=REQUESTS), (),
        "items.csv: the header's column 3 (of 3) has no name; expected a column name (or remove "
        "the column: a trailing separator on the header line adds one), got ['item_id', "
        "'category', '']"),
    # 6. Side files silently misread.
    "split_typo": (
        dict(items_csv=ITEMS, requests_csv=REQUESTS,
             splits_json='{"train": ["2024-01-01"], "tset": ["2024-01-02"]}'), (),
        "splits.json: unknown split 'tset' (a misspelling of 'test'?); expected the splits 'train' "
        "and 'test' (and optionally 'test_random', randomly exposed items), got ['train', 'tset']"),
    "split_date_in_two": (
        dict(items_csv=ITEMS, requests_csv=REQUESTS,
             splits_json='{"train": ["2024-01-01"], "test": ["2024-01-02", "2024-01-01"]}'), (),
        "splits.json: date 2024-01-01 is in splits 'train' and 'test'; expected each date in one "
        "split"),
    "split_empty": (
        dict(items_csv=ITEMS, requests_csv=REQUESTS,
             splits_json='{"train": ["2024-01-01", "2024-01-02"], "test": []}'), (),
        "splits.json: split 'test' holds no request: expected dates of the logs "
        "(2024-01-01..2024-01-02, 2 dates), got []"),
    "empty_stages": (
        dict(items_csv=ITEMS, requests_csv=REQUESTS, stages_txt="\n  \n"), (),
        "stages.txt: no stage name; expected one stage name per line, in pipeline order (or "
        "remove the file: stages are then taken in order of first appearance)"),
    # 7. Ids as written: `034` and `34` are two users; `034` is no item of int item ids.
    "users_034_and_34": (
        dict(items_csv=ITEMS, requests_csv=REQUESTS.replace("u1", "034").replace("u2", "34")),
        (), None),
    "item_034": (
        dict(items_csv=ITEMS.replace("v1", "1").replace("v7", "7").replace("w,", "34,"),
             requests_csv=REQUESTS.replace("v1", "1").replace("v7", "7").replace("w ", "034 ")),
        (), "requests.csv: data row 3 (line 4), request 3, column 'exposed': expected an item_id "
        "of items.csv, got '034'"),
    # 8. Rows left unread.
    "orphan_recalls": (
        dict(items_csv=ITEMS, exposures_csv=EXPOSURES, recalls_csv=RECALLS + "9,v1\n9,w\n"), (),
        "recalls.csv: data row 4 (line 5), request 9, column 'request_id': expected a request_id "
        "of exposures.csv (a recall set belongs to an exposed request), got '9' (2 row(s) of 1 "
        "request(s) are not in it)"),
    "both_layouts": (
        dict(items_csv=ITEMS, requests_csv=REQUESTS, exposures_csv=EXPOSURES), (),
        "both requests.csv and exposures.csv; expected one layout: requests.csv (one row per "
        "request), or exposures (+ recalls) tables; move the other files out"),
    # 9. Where and what: the line a row starts on after a multi-line cell; a huge cell cut.
    "multi_line_cell": (
        dict(items_csv=ITEMS, requests_csv=REQUESTS.replace("u1,20,", 'u1,"2\n0",', 1)
             .replace("\n3,30", "\nx3,30")), (),
        "requests.csv: data row 3 (line 5), column 'request_id': expected an integer (int64), "
        "got 'x3'"),
    "huge_cell": (
        dict(items_csv=ITEMS, requests_csv=REQUESTS.replace("20,2024-01-01,u2", "20," + "9" * 1000
                                                            + ",u2")), (),
        "requests.csv: data row 2 (line 3), request 2, column 'date': expected a date YYYY-MM-DD, "
        "got '" + "9" * 79 + "… (1,000 characters)"),
}


@pytest.fixture(scope="module")
def bad_logs(tmp_path_factory):
  """name -> (manual dir, data dir, exit status, error lines) of each of BAD_LOGS prepared."""
  root = tmp_path_factory.mktemp("bad_logs")
  dirs = {name: (_log_dir(root / "logs", name, **files), root / "tfds" / name)
          for name, (files, _, _) in BAD_LOGS.items()}
  for _, data_dir in dirs.values():
    data_dir.mkdir(parents=True)
  answers = _run_steps([_prepare_flags(name, manual, data_dir, *BAD_LOGS[name][1])
                        for name, (manual, data_dir) in dirs.items()])
  return {name: (*dirs[name], *answer) for name, answer in zip(dirs, answers)}


def _assert_one_error(prepared, message):
  """A prepared log (manual dir, data dir, exit status, error lines) failed with status 2 and the
  one line `error: <manual dir>/<message>`, and wrote nothing."""
  manual, data_dir, status, errors = prepared
  assert (status, errors) == (2, [f"error: {manual}/{message}"])
  assert os.listdir(data_dir) == []  # not even an empty dataset directory


# The fixture logs, each with one file broken: (layout, table, edit, the error's end).
BROKEN_FIXTURES = [
    ("one_row", "requests", lambda t: t.drop(columns=["clicked"]),
     "requests.csv: missing column(s) ['clicked']; it has ['request_id', 'timestamp', 'date', "
     "'user_id', 'age', 'city', 'exposed', 'recalled', 'recalled_stage']"),
    ("one_row", "requests", lambda t: t.assign(request_id="r" + t["request_id"].astype(str)),
     "requests.csv: data row 1 (line 2), column 'request_id': expected an integer (int64), "
     "got 'r1001'"),
    ("two_tables", "recalls", lambda t: t[t["request_id"] != 1003],
     "recalls.csv: request 1003 is in exposures.csv (data row 9 (line 10)) but has no row here "
     "(its recall set is unknown); expected its recalled items"),
    ("two_tables", "exposures", lambda t: t.assign(position=1.5),
     "exposures.csv: data row 1 (line 2), column 'position': expected an integer (int64), "
     "got '1.5'"),
]


@pytest.fixture(scope="module")
def broken_fixtures(tmp_path_factory):
  """(manual dir, data dir, exit status, error lines) of each of BROKEN_FIXTURES prepared."""
  root = tmp_path_factory.mktemp("broken")
  dirs = []
  for i, (layout, table, edit, _) in enumerate(BROKEN_FIXTURES):
    manual, data_dir = root / f"logs{i}", root / f"tfds{i}"
    shutil.copytree(os.path.join(FIXTURES, layout), manual)
    edit(pd.read_csv(manual / f"{table}.csv")).to_csv(manual / f"{table}.csv", index=False)
    data_dir.mkdir()
    dirs.append((manual, data_dir))
  answers = _run_steps([_prepare_flags("broken", *d) for d in dirs])
  return [(*d, *answer) for d, answer in zip(dirs, answers)]


@pytest.mark.parametrize("case", range(len(BROKEN_FIXTURES)), ids=[
    "missing_column", "text_request_id", "no_recall_rows", "float_position"])
def test_a_malformed_file_stops_the_build_with_one_line(broken_fixtures, case):
  _assert_one_error(broken_fixtures[case], BROKEN_FIXTURES[case][-1])


@pytest.mark.parametrize("name", [
    "header_only_requests", "header_only_exposures", "empty_item_id", "no_click"])
def test_empty_tables_an_empty_item_id_and_no_click_are_one_error(bad_logs, name):
  _assert_one_error(bad_logs[name], BAD_LOGS[name][2])


def test_item_ids_are_compared_as_written(bad_logs):
  for name, raw_ids in (("mixed_ids", ["", "7", "v1", "w"]), ("minus_one", ["", "-1", "v1", "w"])):
    _, data_dir, status, errors = bad_logs[name]
    assert (status, errors) == (0, [])
    with np.load(data_dir / "request_logs" / name / "1.0.0" / logs.IDS_FILE) as ids:
      assert ids["item_raw_id"].tolist() == raw_ids


@pytest.mark.parametrize("name", [
    "text_request_id", "huge_request_id", "no_timestamp", "no_request_id", "empty_exposed_item",
    "exposed_twice", "multi_line_cell", "huge_cell", "item_034"])
def test_a_bad_cell_is_named_by_file_row_column_and_raw_value(bad_logs, name):
  _assert_one_error(bad_logs[name], BAD_LOGS[name][2])


@pytest.mark.parametrize("name", ["out_of_split", "date_mismatch", "misspelt_list"])
def test_dropped_or_misread_requests_are_errors(bad_logs, name):
  _assert_one_error(bad_logs[name], BAD_LOGS[name][2])


@pytest.mark.parametrize("name", [
    "repeated_column", "repeated_recall_column", "unnamed_column", "split_typo",
    "split_date_in_two", "split_empty", "empty_stages", "orphan_recalls"])
def test_a_bad_header_side_file_or_orphan_row_is_one_error(bad_logs, name):
  _assert_one_error(bad_logs[name], BAD_LOGS[name][2])


def test_both_layouts_in_one_dir_is_one_error(bad_logs):
  manual, data_dir, status, errors = bad_logs["both_layouts"]
  assert (status, errors) == (2, [f"error: {manual}: {BAD_LOGS['both_layouts'][2]}"])
  assert os.listdir(data_dir) == []


def test_user_ids_are_compared_as_written(bad_logs):
  _, data_dir, status, errors = bad_logs["users_034_and_34"]
  assert (status, errors) == (0, [])
  built = data_dir / "request_logs" / "users_034_and_34" / "1.0.0"
  with np.load(built / logs.IDS_FILE) as ids:
    assert ids["user_raw_id"].tolist() == ["", "034", "34"]


def test_skipped_requests_are_left_out_and_counted(bad_logs):
  _, data_dir, status, errors = bad_logs["both_skipped"]
  assert (status, errors) == (0, [])
  built = data_dir / "request_logs" / "both_skipped" / "1.0.0"
  report = json.loads((built / "validation.json").read_text())
  assert (report["skip"], report["checked"], report["skipped"]) == (
      ["date_mismatch", "out_of_split"], 4, 2)
  assert {r: n for r, n in report["skipped_by_reason"].items() if n} == {
      "out_of_split": 1, "date_mismatch": 1}
  stats = json.loads((built / "stats.json").read_text())
  assert (stats["train_requests"], stats["test_requests"]) == (1, 1)  # requests 2 and 3


def test_a_changed_log_is_not_reused_until_overwritten(tmp_path):
  manual = _log_dir(tmp_path, "logs", items_csv=ITEMS, requests_csv=REQUESTS)
  data_dir = tmp_path / "tfds"
  built = data_dir / "request_logs" / "mine" / "1.0.0"
  prepare = _prepare_flags("mine", manual, data_dir)
  more = REQUESTS + "4,40,2024-01-01,u3,20,w,1\n"
  overwrite = [prepare[0], [*prepare[1], "--overwrite"]]
  answers = _run_steps([
      prepare, prepare,                                             # built, then reused
      ["write", manual / "requests.csv", more], prepare,            # changed: refused
      # The test day's only request has no click: the rebuild fails, the old dataset stays.
      ["write", manual / "requests.csv", more + "5,50,2024-01-03,u3,20,w,0\n"], overwrite,
      ["write", manual / "requests.csv", REQUESTS], prepare,        # the old files: reused
      ["write", manual / "requests.csv", more], overwrite,          # rebuilt
  ])
  assert answers[:2] == [[0, []], [0, []]]
  assert answers[2] == [2, [f"error: request_logs/mine is already built in {built} from other "
                            f"files than those in {manual}: requests.csv (changed); rebuild it "
                            "with --overwrite (or prepare it under another name)"]]
  assert answers[3] == [2, [f"error: {manual}/requests.csv: column 'clicked': expected at least "
                            "one click (1) in split 'test', got none in its 1 request(s) and 1 "
                            "exposure(s) (dates 2024-01-03)"]]
  assert answers[4:] == [[0, []], [0, []]]
  assert sorted(os.listdir(built.parent)) == ["1.0.0"]
  assert json.loads((built / "stats.json").read_text())["train_requests"] == 3


def _one_row_with_list_columns(manual):
  """A copy of the one-row fixture in `manual`; its requests with the list cells as lists."""
  shutil.copytree(os.path.join(FIXTURES, "one_row"), manual)
  requests = pd.read_csv(manual / "requests.csv")
  for column in ("exposed", "clicked", "recalled", "recalled_stage"):
    requests[column] = [[int(v) if column == "clicked" else v for v in cell.split()]
                        for cell in requests[column]]
  return requests


def test_parquet_logs_read_as_their_csv(tmp_path):
  from uma2_tf.sources import request_logs

  manual = tmp_path / "parquet"
  requests = _one_row_with_list_columns(manual)
  for name, frame in (("requests", requests), ("items", pd.read_csv(manual / "items.csv"))):
    frame.to_parquet(manual / f"{name}.parquet")
    os.remove(manual / f"{name}.csv")
  parquet = request_logs.read_tables(str(manual))
  csv = request_logs.read_tables(os.path.join(FIXTURES, "one_row"))
  pd.testing.assert_frame_equal(parquet.requests, csv.requests)
  pd.testing.assert_frame_equal(parquet.items, csv.items)
  requests.assign(recalld=requests["recalled"]).to_parquet(manual / "requests.parquet")
  with pytest.raises(logs.LogFormatError, match=re.escape(
      "requests.parquet: data row 1, column 'recalld': expected one categorical value")):
    request_logs.read_tables(str(manual))


def test_parquet_nulls_and_repeated_columns_are_named(tmp_path):
  import pyarrow as pa
  import pyarrow.parquet as pq

  from uma2_tf.sources import request_logs

  manual = tmp_path / "parquet"
  requests = _one_row_with_list_columns(manual)
  # A null in a list<int64> column: pandas would make every row's clicks floats (row 1: '0.0').
  requests.at[1, "clicked"] = [1, None, 1, 1]
  requests.to_parquet(manual / "requests.parquet")
  os.remove(manual / "requests.csv")
  with pytest.raises(logs.LogFormatError, match=re.escape(
      "requests.parquet: data row 2, request 1002, column 'clicked': expected 0 or 1, got a null "
      "(None) as element 2 of the list")):
    request_logs.read_tables(str(manual))
  items = pd.read_csv(manual / "items.csv", dtype=str)
  pq.write_table(pa.table([items["item_id"], items["category"], items["category"]],
                          names=["item_id", "category", "category"]), manual / "items.parquet")
  os.remove(manual / "items.csv")
  with pytest.raises(logs.LogFormatError, match=re.escape(
      "items.parquet: the header repeats column(s) ['category']; expected each column once")):
    request_logs.read_tables(str(manual))

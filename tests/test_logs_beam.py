"""The Apache Beam preparation (`logs_beam`, `recflow_beam.RecflowBeam`,
`prepare --beam_pipeline_options`) gives the same records and side files as the in-memory one, and
fails on bad logs as it does.

Beam runs on its DirectRunner, in this process (the CLI test: in a child process)."""
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

beam = pytest.importorskip("apache_beam")

# After the importorskip: these import apache_beam.
from uma2_tf.data import schema as schema_lib  # noqa: E402
from uma2_tf.sources import logs, logs_beam, recflow, recflow_files  # noqa: E402

FIXTURE = os.path.join(
  os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "data", "recflow", "RecFlow"
)
SIDE_JSON = (schema_lib.SCHEMA_FILE, "stats.json")
SIDE_NPZ = (schema_lib.CATALOG_FILE, logs.IDS_FILE)


def _options():
  return logs_beam.pipeline_options("runner=DirectRunner")


def _comparable(record: dict) -> tuple:
  """A record as nested tuples (numpy arrays compare elementwise, tuples as a whole)."""
  return tuple(sorted((k, tuple(np.asarray(v).reshape(-1).tolist())) for k, v in record.items()))


def _assert_same_side_files(a: str, b: str, json_files=SIDE_JSON):
  for name in json_files:
    with open(os.path.join(a, name)) as fa, open(os.path.join(b, name)) as fb:
      assert json.load(fa) == json.load(fb), name
  for name in SIDE_NPZ:
    with np.load(os.path.join(a, name)) as za, np.load(os.path.join(b, name)) as zb:
      assert sorted(za.files) == sorted(zb.files), name
      for key in za.files:
        np.testing.assert_array_equal(za[key], zb[key], err_msg=f"{name}:{key}")


def _split_records(directory: str) -> dict:
  """split -> {request_id: comparable record} of a built dataset, read back through TFDS."""
  import tensorflow_datasets as tfds

  builder = tfds.builder_from_directory(directory)
  out = {}
  for split in builder.info.splits:
    records = {}
    for example in tfds.as_numpy(builder.as_dataset(split=split)):
      records[int(example["request_id"])] = _comparable(example)
    out[split] = records
  return out


# ----------------------------------------------------------------------------------------------
# RecFlow: the fixture prepared both ways.


@pytest.fixture(scope="module")
def built_both_ways(tmp_path_factory):
  import tensorflow_datasets as tfds

  root = tmp_path_factory.mktemp("recflow_beam")
  in_memory = recflow.Recflow(config="tiny", data_dir=str(root / "memory"))
  in_memory.download_and_prepare(download_config=tfds.download.DownloadConfig(manual_dir=FIXTURE))
  result = subprocess.run([sys.executable, "-m", "pipelines.prepare", "--dataset=recflow/tiny",
                           f"--manual_dir={FIXTURE}", f"--data_dir={root / 'beam'}",
                           "--beam_pipeline_options=runner=DirectRunner"],
                          capture_output=True, text=True, timeout=600)
  assert result.returncode == 0, result.stderr[-3000:]
  beam_dir = root / "beam" / "recflow" / "tiny" / str(recflow.Recflow.VERSION)
  return str(in_memory.data_dir), str(beam_dir), result


def test_recflow_beam_writes_the_same_side_files(built_both_ways):
  in_memory, with_beam, result = built_both_ways
  _assert_same_side_files(in_memory, with_beam, (*SIDE_JSON, recflow.SOURCE_FILE))
  printed = result.stdout[result.stdout.index("\n{\n") + 1:]  # The CLI ends with stats.json.
  assert json.loads(printed) == json.load(open(os.path.join(with_beam, "stats.json")))


def test_recflow_beam_writes_the_same_records(built_both_ways):
  in_memory, with_beam, _ = built_both_ways
  expected, got = _split_records(in_memory), _split_records(with_beam)
  assert set(got) == set(expected) == {"train", "test"}
  for split in expected:
    assert len(expected[split]) > 0
    assert got[split] == expected[split], split


def test_recflow_beam_dataset_loads_as_recflow(built_both_ways):
  from uma2_tf.sources import registry

  _, with_beam, _ = built_both_ways
  data_dir = os.path.dirname(os.path.dirname(os.path.dirname(with_beam)))
  dataset = registry.load("recflow/tiny", data_dir)
  assert dataset.schema.stages == recflow_files.STAGES
  assert (
    dataset.num_records("train")
    == json.load(open(os.path.join(with_beam, "stats.json")))["train_requests"]
  )


# ----------------------------------------------------------------------------------------------
# The generic writer on a hand-made log: string ids, missing values, a `split` column and requests
# outside every split, against `logs.write`.


def _hand_log(**overrides) -> logs.LogTables:
  requests = pd.DataFrame(
    {
      "request_id": [10, 11, 12, 13, 14, 15],
      "timestamp": [5, 1, 3, 2, 4, 9],
      "date": ["2024-01-01", "2024-01-01", "2024-01-02", "2024-01-02", "2024-01-02", "2024-01-09"],
      "user_id": ["u2", "u1", "u1", "u2", "u1", "u3"],
      "age": ["30s", None, "20s", "30s", "20s", "40s"],
      "exposed": [["b", "a"], ["a", "c"], ["c"], ["d", "a"], ["a", "b"], ["a"]],
      "clicked": [[1, 0], [1, 1], [0], [0, 1], [1, 0], [1]],
      "recalled": [
        ["b", "a", "e"],
        ["a", "c", "d"],
        ["c", "e"],
        ["d", "a"],
        ["a", "b", "c"],
        ["a"],
      ],
      "recalled_stage": [
        ["show", "show", "rank"],
        ["show", "show", "pre"],
        ["show", "pre"],
        ["show", "show"],
        ["show", "show", "rank"],
        ["show"],
      ],
      "split": [None, None, None, None, "test", None],
    }
  )
  items = pd.DataFrame({"item_id": ["a", "b", "c", "d", "e"], "genre": ["x", "y", None, "x", "z"]})
  tables = dict(requests=requests, items=items, user_features=("age",), item_features=("genre",),
                stages=("pre", "rank", "show"))
  tables.update(overrides)
  return logs.LogTables(**tables)


SPLITS = {"train": ["2024-01-01", "2024-01-02"], "test": ["2024-01-03"]}


def _run_beam_writer(tables: logs.LogTables, directory: str, check_records=None):
  from apache_beam.testing.util import assert_that, equal_to

  with beam.Pipeline(options=_options()) as pipeline:
    requests = pipeline | "Requests" >> beam.Create(tables.requests.to_dict("records"))
    # Two batches that share item "c": the earlier batch's row wins, as `logs.write` keeps the
    # first.
    later = pd.concat([pd.DataFrame({"item_id": ["c"], "genre": ["late"]}), tables.items.iloc[2:]])
    items = pipeline | "Items" >> beam.Create([
        (1, {c: later[c].to_numpy() for c in later.columns}),
        (0, {c: tables.items[c].to_numpy()[:3] for c in tables.items.columns})])
    out = logs_beam.write(pipeline, directory, requests, items, splits=SPLITS, source="hand",
                          user_features=tables.user_features, item_features=tables.item_features,
                          stages=tables.stages, has_recall_log=tables.has_recall_log, max_history=3)
    for split, expected in (check_records or {}).items():
      got = out[split] | f"Comparable_{split}" >> beam.Map(lambda kv: (kv[0], _comparable(kv[1])))
      assert_that(got, equal_to(expected), label=f"Check_{split}")


def test_generic_writer_matches_logs_write(tmp_path):
  tables = _hand_log()
  generators = logs.write(str(tmp_path / "memory"), tables, SPLITS, source="hand", max_history=3)
  expected = {
    split: [(rid, _comparable(r)) for rid, r in records] for split, records in generators.items()
  }
  assert len(expected["train"]) == 4 and len(expected["test"]) == 1  # 15 is outside every split.
  _run_beam_writer(tables, str(tmp_path / "beam"), expected)
  _assert_same_side_files(str(tmp_path / "memory"), str(tmp_path / "beam"))
  stats = json.load(open(tmp_path / "beam" / "stats.json"))
  assert stats["requests_outside_splits"] == 1 and stats["train_requests"] == 4
  assert stats["dates"] == {"train": ["2024-01-01", "2024-01-02"], "test": ["2024-01-02"]}
  # By hand: u1's requests in time order are 11 (t1, clicks a, c), 12 (t3, no click), 14 (t4, sent
  # to test by its `split` whatever its date): 14's history is [a, c] = dense ids [1, 3].
  test_record = dict(expected["test"][0][1])
  assert test_record["history"] == (1, 3) and test_record["recalled_stage"] == (3, 3, 2)


@pytest.mark.parametrize(
  "change, message",
  [
    (
      lambda r: r.assign(request_id=[10, 11, 12, 13, 14, 10]),
      "request_id 10 appears more than once",
    ),
    (
      lambda r: r.assign(recalled=[["b"], *r["recalled"][1:]]),
      "request 10: exposed item 'a' is not in 'recalled'",
    ),
    (
      lambda r: r.assign(split=[None, "valid", None, None, "test", None]),
      "names split(s) ['valid']",
    ),
    (
      lambda r: r.assign(
        exposed=[["b", "zz"], *r["exposed"][1:]],
        recalled=[["b", "zz"], *r["recalled"][1:]],
        recalled_stage=[["show", "show"], *r["recalled_stage"][1:]],
      ),
      "request 10: item 'zz' is not in the items table",
    ),
  ],
)
def test_generic_writer_rejects_a_bad_log_like_logs_write(tmp_path, change, message):
  tables = _hand_log()
  tables = logs.LogTables(**{**tables.__dict__, "requests": change(tables.requests)})
  with pytest.raises(logs.LogFormatError, match=f"^hand: .*{re.escape(message)}"):
    logs.write(str(tmp_path / "memory"), tables, SPLITS, source="hand")
  with pytest.raises(logs.LogFormatError, match=f"^hand: .*{re.escape(message)}"):
    _run_beam_writer(tables, str(tmp_path / "beam"))


def test_vocabulary_orders_and_looks_up_like_logs():
  for values in ([30, 10, 20, 10, None], ["b", "a", None, "c"], [3, "x", 1]):
    expected = logs._vocabulary(values)
    vocabulary = logs_beam.Vocabulary(values)
    assert vocabulary.values() == list(expected) and len(vocabulary) == len(expected)
    assert [vocabulary.id(v) for v in expected] == list(expected.values())
    assert vocabulary.ids(list(expected)).tolist() == list(expected.values())
    assert vocabulary.id("unknown") == 0 and vocabulary.id(None) == 0 and vocabulary.id(99) == 0
  ints = logs_beam.Vocabulary(np.array([7, 3, 5]))
  assert ints.ids(np.array([5, 4, 7, 100, 3])).tolist() == [2, 0, 3, 0, 1]
  assert logs_beam.Vocabulary([]).ids(np.array([1, 2])).tolist() == [0, 0]


# ----------------------------------------------------------------------------------------------
# The CLI.


def test_pipeline_options_of_the_flag():
  options = logs_beam.pipeline_options("runner=DirectRunner,direct_num_workers=2").get_all_options()
  assert options["runner"] == "DirectRunner" and options["direct_num_workers"] == 2
  with pytest.raises(ValueError, match=r"--flag: Beam has no option\(s\) \['runer'\]"):
    logs_beam.pipeline_options("runer=DirectRunner", flag="--flag")
  with pytest.raises(ValueError, match="key=value"):
    logs_beam.pipeline_options("DirectRunner")


def test_cli_beam_build_of_a_malformed_file_fails_in_one_line_and_leaves_nothing(tmp_path):
  import pyarrow.feather as feather

  manual = tmp_path / "RecFlow"
  shutil.copytree(FIXTURE, manual)
  path = manual / "all_stage" / "2024-01-14.feather"
  feather.write_feather(feather.read_table(path).drop_columns(["rank_neg"]), path)
  data_dir = tmp_path / "tfds"
  result = subprocess.run([sys.executable, "-m", "pipelines.prepare", "--dataset=recflow/tiny",
                           f"--manual_dir={manual}", f"--data_dir={data_dir}",
                           "--beam_pipeline_options=runner=DirectRunner"],
                          capture_output=True, text=True, timeout=600)
  assert result.returncode == 2, result.stderr[-3000:]
  last = result.stderr.strip().splitlines()[-1]
  assert (
    last.startswith("error: ")
    and "all_stage/2024-01-14.feather: missing column(s) ['rank_neg']" in last
  )
  assert "Traceback" not in result.stderr
  built = data_dir / "recflow" / "tiny"
  assert not built.exists() or not any(built.iterdir()), list(built.iterdir())

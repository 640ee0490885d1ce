"""`recflow`: the builder on the fixture in RecFlow's released layout (data/recflow/RecFlow), one
request checked by hand, stage-restricted B on it, one epoch through `make train`'s code path, and
malformed files giving one clear error."""
import uma2_tf  # noqa: F401

import json
import os
import pickle
import shutil
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from uma2_tf.data import batch_keys
from uma2_tf.data import reading
from uma2_tf.data import samplers
from uma2_tf.data import schema as schema_lib
from uma2_tf.sources import logs
from uma2_tf.sources import recflow
from uma2_tf.sources import recflow_files
from uma2_tf.sources import registry

FIXTURE = os.path.join(
  os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "data", "recflow", "RecFlow"
)
HAND = 1000001  # data/recflow/make_fixture.py: HAND_REQUEST.
TINY_DATES = (*recflow.TINY_TRAIN_DATES, *recflow.TINY_TEST_DATES)


def prepare(name, manual_dir, data_dir):
  import tensorflow_datasets as tfds

  builder = registry.builder(name, str(data_dir))
  builder.download_and_prepare(download_config=tfds.download.DownloadConfig(manual_dir=str(manual_dir)))
  return builder


@pytest.fixture(scope="module")
def tiny_recflow(tmp_path_factory):
  data_dir = tmp_path_factory.mktemp("tfds_recflow")
  prepare("recflow/tiny", FIXTURE, data_dir)
  return str(data_dir)


@pytest.fixture(scope="module")
def records(tiny_recflow):
  """request_id -> record (numpy) of both splits, and the dataset."""

  dataset = registry.load("recflow/tiny", tiny_recflow)
  out = {}
  for split, files in dataset.split_files.items():
    for batch in reading.read_requests(files, dataset.schema, 1000):
      batch = {k: (v.numpy() if hasattr(v, "numpy") else v) for k, v in batch.items()}
      for i, rid in enumerate(batch["request_id"]):
        out[int(rid)] = {
          k: (v[i] if isinstance(v, np.ndarray) else v[i].numpy()) for k, v in batch.items()
        }
        out[int(rid)]["split"] = split
  return out, dataset


def raw_ids(dataset):
  with np.load(os.path.join(dataset.directory, logs.IDS_FILE)) as z:
    return {k: z[k] for k in z.files}


def test_hand_checked_request(records):
  by_rid, dataset = records
  ids = raw_ids(dataset)
  item = lambda dense: [int(ids["item_raw_id"][i]) for i in dense]  # noqa: E731
  r = by_rid[HAND]
  assert r["split"] == "train" and int(r["day"]) == 1
  assert int(ids["user_raw_id"][r["user_id"]]) == 0
  # Positives and A: exposure in rerank_index order (the file has it shuffled), effective_view.
  assert item(r["exposed"]) == [3, 17, 42, 8]
  assert r["clicked"].tolist() == [1, 0, 1, 0]
  positives = {v for v, c in zip(item(r["exposed"]), r["clicked"]) if c}
  assert positives == {3, 42}
  assert set(item(r["exposed"])) - positives == {17, 8}  # A
  # B with the furthest stage each video reached (71: prerank_neg and rank_neg rows -> rank_neg).
  stage = dict(zip(item(r["recalled"]), (recflow_files.STAGES[s - 1] for s in r["recalled_stage"])))
  b = {v: s for v, s in stage.items() if v not in {3, 17, 42, 8}}
  assert b == {50: "prerank_neg", 51: "prerank_neg", 0: "prerank_neg", 71: "rank_neg",
               60: "coarse_neg", 61: "coarse_neg", 70: "rank_neg", 72: "rank_pos",
               80: "rerank_neg", 81: "rerank_pos"}
  assert all(stage[v] == "realshow" for v in (3, 17, 42, 8))
  # C: every other video of the corpus (all 160 videos of the fixture were seen).
  assert dataset.schema.num_items == 161 and dataset.schema.stages == recflow_files.STAGES
  corpus = set(int(v) for v in ids["item_raw_id"][1:])
  assert corpus == set(range(160))
  assert len(corpus - set(stage)) == 160 - 14
  # User and item features, remapped (0 = padding) and back.
  assert r["history"].size == 0  # user 0's first request
  assert {f: ids[f"user_feature/{f}"][r[f]] for f in recflow_files.USER_FEATURES} == \
      {"age": "0", "gender": "0", "province": "0"}
  dense3 = list(ids["item_raw_id"]).index("3")
  feats = {
    f: ids[f"item_feature/{f}"][dataset.catalog.features[f][dense3]]
    for f in recflow_files.ITEM_FEATURES
  }
  videos = pd.read_feather(os.path.join(FIXTURE, "realshow", "2024-01-13.feather"))
  v3 = videos[videos["video_id"] == 3].iloc[0]
  assert feats == {
    "author_id": str(v3["author_id"]),
    "category_level_one": str(v3["category_level_one"]),
    "category_level_two": str(v3["category_level_two"]),
    "upload_type": str(v3["upload_type"]),
    "duration_bucket": str(recflow_files.duration_bucket(v3["duration"])),
  }


def test_splits_histories_and_what_was_left_out(records):
  by_rid, dataset = records
  assert 1000099 not in by_rid  # stage samples but no exposure
  assert sum(r["split"] == "train" for r in by_rid.values()) == 32
  assert sum(r["split"] == "test" for r in by_rid.values()) == 16
  # A later request of user 0 has the clicks of its earlier ones (3 and 42 first).
  ids = raw_ids(dataset)
  user0 = sorted((r for r in by_rid.values() if ids["user_raw_id"][r["user_id"]] == "0"),
                 key=lambda r: (r["day"], r["request_id"]))
  assert [int(ids["item_raw_id"][i]) for i in user0[1]["history"][:2]] == [3, 42]
  with open(os.path.join(dataset.directory, recflow.SOURCE_FILE)) as f:
    source = json.load(f)
  day1 = source["days"][0]
  assert day1["requests_without_exposure"] == 1 and day1["stage_source"] == "all_stage"
  assert source["label"] == "effective_view" and source["id_cnt"]["video_id"] == 160
  stats = dataset.stats()
  assert stats["train_requests"] == 32 and stats["stages"] == list(recflow_files.STAGES)


@pytest.mark.parametrize(
  "label, clicked",
  [("effective_view", [1, 0, 1, 0]), ("long_view", [0, 0, 1, 0]), ("like", [1, 0, 0, 0])],
)
def test_label_column(label, clicked):
  tables, _ = recflow_files.read_tables(FIXTURE, TINY_DATES, label=label)
  row = tables.requests.set_index("request_id").loc[HAND]
  assert row["exposed"].tolist() == [3, 17, 42, 8] and row["clicked"].tolist() == clicked


def test_irregular_rows_are_counted_not_silent(tmp_path):
  manual = tmp_path / "RecFlow"
  shutil.copytree(FIXTURE, manual)
  day = "2024-01-13.feather"

  def realshow(t):
    again = t[(t["request_id"] == HAND) & (t["video_id"] == 17)].assign(
      effective_view=1, rerank_index=9
    )
    hidden = t[(t["request_id"] == HAND) & (t["video_id"] == 3)].assign(video_id=99, realshow=0)
    return pd.concat([t, again, hidden])

  def all_stage(t):
    unflagged = t[t["request_id"] == HAND].head(1).assign(video_id=98, realshow=0)
    return pd.concat([t[~((t["request_id"] == HAND) & (t["video_id"] == 8))], unflagged])

  _edit_feather(manual / "realshow" / day, realshow)
  _edit_feather(manual / "all_stage" / day, all_stage)
  tables, source = recflow_files.read_tables(str(manual), TINY_DATES)
  row = tables.requests.set_index("request_id").loc[HAND]
  assert row["exposed"].tolist() == [3, 17, 42, 8]      # 17 once, at its first position
  assert row["clicked"].tolist() == [1, 1, 1, 0]        # clicked on its second showing
  stage = dict(zip(row["recalled"].tolist(), row["recalled_stage"].tolist()))
  assert stage[8] == "realshow" and 98 not in stage and 99 not in stage
  day1 = source["days"][0]
  assert (
    day1["duplicate_exposures"],
    day1["realshow_rows_not_shown"],
    day1["stage_rows_without_flag"],
    day1["exposed_videos_missing_from_stage_samples"],
  ) == (1, 1, 1, 1)


def test_request_in_two_days_is_an_error(tmp_path):
  manual = tmp_path / "RecFlow"
  shutil.copytree(FIXTURE, manual)
  first = int(pd.read_feather(manual / "realshow" / "2024-01-14.feather")["request_id"].min())
  for folder in ("realshow", "all_stage"):  # Day 2's first request renumbered as day 1's first.
    _edit_feather(
      manual / folder / "2024-01-14.feather",
      lambda t: t.assign(request_id=t["request_id"].where(t["request_id"] != first, HAND)),
    )
  with pytest.raises(
    logs.LogFormatError,
    match=f"realshow/2024-01-14.feather: request {HAND} is also in realshow/2024-01-13.feather",
  ):
    recflow_files.read_tables(str(manual), TINY_DATES)


def test_device_id_can_be_a_user_feature():
  tables, _ = recflow_files.read_tables(FIXTURE, TINY_DATES, user_features=("age", "device_id"))
  assert tables.user_features == ("age", "device_id")
  assert tables.requests.set_index("request_id").loc[HAND, "device_id"] == 100


def _same_tables(a, b):
  assert list(a.requests.columns) == list(b.requests.columns)
  for column in a.requests.columns:
    for x, y in zip(a.requests[column], b.requests[column]):
      assert np.array_equal(x, y) if isinstance(x, np.ndarray) else x == y, column
  assert a.items.equals(b.items)


def test_request_id_dict_gives_the_same_tables_and_replaces_a_missing_all_stage_day(tmp_path):
  from_all_stage, _ = recflow_files.read_tables(FIXTURE, TINY_DATES)
  from_pickles, source = recflow_files.read_tables(
    FIXTURE, TINY_DATES, stage_source="request_id_dict"
  )
  _same_tables(from_all_stage, from_pickles)
  assert {d["stage_source"] for d in source["days"]} == {"request_id_dict"}
  # The Hugging Face copy lacks all_stage/2024-01-13.feather: `auto` reads that day's pickle.
  manual = tmp_path / "RecFlow"
  shutil.copytree(FIXTURE, manual)
  os.remove(manual / "all_stage" / "2024-01-13.feather")
  tables, source = recflow_files.read_tables(str(manual), TINY_DATES)
  _same_tables(from_all_stage, tables)
  assert [d["stage_source"] for d in source["days"]] == [
    "request_id_dict",
    "all_stage",
    "all_stage",
  ]


def test_b_restricted_to_ranking_negatives(records):

  by_rid, dataset = records
  ids = raw_ids(dataset)
  config = samplers.SamplingConfig(strategy="ss_ab", ratio=(0, 1, 0), num_negatives=2,
                                   b_stages=("rank_neg",), requests_per_batch=64)
  for batch in samplers.make_training_dataset(dataset, config, 512, shuffle=False):
    for rid, items, space in zip(batch["request_id"].numpy(), batch["neg_items"].numpy(),
                                 batch["neg_space"].numpy()):
      r = by_rid[int(rid)]
      rank_neg = {int(v) for v, s in zip(r["recalled"], r["recalled_stage"])
                  if recflow_files.STAGES[s - 1] == "rank_neg"}
      assert set(items.tolist()) <= rank_neg and set(space.tolist()) == {batch_keys.SPACE_B}
      assert len(set(items.tolist())) == 2  # every request has >= 2 rank_neg videos: no repeats
      if rid == HAND:
        assert sorted(int(ids["item_raw_id"][i]) for i in items) == [70, 71]


def test_one_epoch_through_the_train_cli(tiny_recflow, tmp_path):
  out = tmp_path / "run"
  result = subprocess.run(
    [
      sys.executable,
      "-m",
      "pipelines.train",
      "--dataset=recflow/tiny",
      f"--data_dir={tiny_recflow}",
      f"--output_dir={out}",
      "--epochs=1",
      "--batch_size=32",
      "--eval_ks=10,50",
      "--monitor=recall@50",
      "--b_stages=rank_neg,rank_pos,rerank_neg,rerank_pos",
    ],
    capture_output=True,
    text=True,
    timeout=600,
  )
  assert result.returncode == 0, result.stderr[-3000:]
  metrics = json.load(open(out / "metrics.json"))
  assert 0 <= metrics["model"]["recall@50"] <= 1
  config = json.load(open(out / "config.json"))
  assert config["dataset"] == "recflow/tiny"
  assert config["sampling"]["b_stages"] == ["rank_neg", "rank_pos", "rerank_neg", "rerank_pos"]


def test_unknown_b_stage_is_one_line_at_the_cli(tiny_recflow, tmp_path):
  result = subprocess.run(
    [
      sys.executable,
      "-m",
      "pipelines.train",
      "--dataset=recflow/tiny",
      f"--data_dir={tiny_recflow}",
      f"--output_dir={tmp_path}",
      "--b_stages=rank",
    ],
    capture_output=True,
    text=True,
    timeout=300,
  )
  assert result.returncode == 2, result.stderr[-3000:]
  assert "unknown stage(s) ['rank']" in result.stderr and "Traceback" not in result.stderr


def _edit_feather(path, edit):
  edit(pd.read_feather(path)).reset_index(drop=True).to_feather(path)


def _edit_pickle(path, edit):
  with open(path, "rb") as f:
    data = pickle.load(f)
  with open(path, "wb") as f:
    pickle.dump(edit(data), f)


MALFORMED = {
  "missing_column": (
    ("realshow", "2024-01-14.feather"),
    lambda t: t.drop(columns=["effective_view"]),
    "realshow/2024-01-14.feather: missing column(s) ['effective_view']",
  ),
  "wrong_dtype": (
    ("all_stage", "2024-01-13.feather"),
    lambda t: t.astype({"video_id": "float64"}),
    "all_stage/2024-01-13.feather: column 'video_id' must hold integers (RecFlow's "
    "README: Integer), got type double",
  ),
  "string_ids": (
    ("realshow", "2024-01-15.feather"),
    lambda t: t.astype({"user_id": str}),
    "realshow/2024-01-15.feather: column 'user_id' must hold integers",
  ),
  "absent_from_stage_file": (
    ("all_stage", "2024-01-13.feather"),
    lambda t: t[t["request_id"] != HAND],
    f"realshow/2024-01-13.feather: request {HAND} has no stage sample in ",
  ),
  "not_binary": (
    ("realshow", "2024-01-13.feather"),
    lambda t: t.assign(effective_view=2),
    "realshow/2024-01-13.feather: row 0 (request 1000001): column 'effective_view' "
    "must be 0 or 1, got 2",
  ),
}


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_a_malformed_file_is_one_clear_error(tmp_path, case):
  (folder, name), edit, message = MALFORMED[case]
  manual = tmp_path / "RecFlow"
  shutil.copytree(FIXTURE, manual)
  _edit_feather(manual / folder / name, edit)
  with pytest.raises(logs.LogFormatError) as error:
    prepare("recflow/tiny", manual, tmp_path / "tfds")
  assert message in str(error.value)
  assert not (tmp_path / "tfds" / "recflow" / "tiny" / "1.0.0").exists()


@pytest.mark.parametrize(
  "edit, message",
  [
    (
      lambda d: {
        k: (v if k != HAND else {"rank_neg": np.zeros((2, 8), np.float32)}) for k, v in d.items()
      },
      f"request {HAND}: stage 'rank_neg': expected an integer array [n, 8]",
    ),
    (
      lambda d: {k: v for k, v in d.items() if k != HAND},
      f"request {HAND} has no stage sample in ",
    ),
    (lambda d: list(d), "expected a dict {request_id: {stage: array}}, got list"),
  ],
)
def test_a_malformed_request_id_dict_is_one_clear_error(tmp_path, edit, message):
  manual = tmp_path / "RecFlow"
  shutil.copytree(FIXTURE, manual)
  _edit_pickle(manual / "request_id_dict" / "2024-01-13.pkl", edit)
  with pytest.raises(logs.LogFormatError, match="request_id_dict/2024-01-13.pkl") as error:
    recflow_files.read_tables(str(manual), TINY_DATES, stage_source="request_id_dict")
  assert message in str(error.value)


def test_missing_day_and_missing_dir_name_the_path(tmp_path):
  with pytest.raises(FileNotFoundError, match="realshow/2024-02-18.feather does not exist"):
    recflow_files.read_tables(FIXTURE, ("2024-01-13", "2024-02-18"))
  manual = tmp_path / "RecFlow"
  shutil.copytree(FIXTURE, manual)
  os.remove(manual / "all_stage" / "2024-01-14.feather")
  os.remove(manual / "request_id_dict" / "2024-01-14.pkl")
  with pytest.raises(FileNotFoundError, match="neither .*all_stage/2024-01-14.feather nor "
                                               ".*request_id_dict/2024-01-14.pkl exists"):
    recflow_files.read_tables(str(manual), TINY_DATES)


def test_prepare_cli_reports_a_malformed_file_in_one_line(tmp_path):
  manual = tmp_path / "RecFlow"
  shutil.copytree(FIXTURE, manual)
  _edit_feather(manual / "realshow" / "2024-01-14.feather", MALFORMED["missing_column"][1])
  result = subprocess.run([sys.executable, "-m", "pipelines.prepare", "--dataset=recflow/tiny",
                           f"--manual_dir={manual}", f"--data_dir={tmp_path / 'tfds'}"],
                          capture_output=True, text=True, timeout=300)
  assert result.returncode == 2, result.stderr[-3000:]
  assert MALFORMED["missing_column"][2] in result.stderr and "Traceback" not in result.stderr


def test_configs():

  names = {c.name: c for c in recflow.Recflow.BUILDER_CONFIGS}
  assert set(names) == {"default", "long_view", "like", "tiny", "tiny_long_view", "tiny_like"}
  default = names["default"]
  assert default.train_dates[0] == "2024-01-13" and default.train_dates[-1] == "2024-02-17"
  assert len(default.train_dates) == 36 and default.test_dates == ("2024-02-18",)
  assert names["like"].label == "like" and names["tiny"].splits == {
    "train": list(recflow.TINY_TRAIN_DATES),
    "test": list(recflow.TINY_TEST_DATES),
  }
  with pytest.raises(ValueError, match="label"):
    recflow.RecflowConfig(
      name="x", train_dates=("2024-01-13",), test_dates=("2024-01-14",), label="click"
    )
  with pytest.raises(ValueError, match="disjoint"):
    recflow.RecflowConfig(name="x", train_dates=("2024-01-13",), test_dates=("2024-01-13",))
  assert registry.builder("recflow/default", "/nonexistent").builder_config.name == "default"
  assert schema_lib.RECALLED_STAGE in registry.builder("recflow/tiny", "/nonexistent").info.features


def test_reads_a_remote_copy_through_gfile_like_local_files():
  """A path with a scheme (gs://, hdfs://; here TF's in-memory ram://) is read through tf.io.gfile:
  what a Beam preparation on Dataflow reads the release from."""
  import tensorflow as tf

  remote = "ram://recflow_fixture"
  for root, _, files in os.walk(FIXTURE):
    target = remote + root[len(FIXTURE):]
    tf.io.gfile.makedirs(target)
    for name in files:
      tf.io.gfile.copy(os.path.join(root, name), f"{target}/{name}", overwrite=True)
  recflow_files.check_days(remote, TINY_DATES)
  for date, stage_source in (("2024-01-14", "all_stage"), ("2024-01-14", "request_id_dict")):
    local = recflow_files.read_day(FIXTURE, date, stage_source=stage_source)
    got = recflow_files.read_day(remote, date, stage_source=stage_source)
    pd.testing.assert_frame_equal(got[0], local[0])
    pd.testing.assert_frame_equal(got[1], local[1])
  with pytest.raises(FileNotFoundError, match="ram://recflow_fixture/realshow/2024-03-01.feather"):
    recflow_files.check_days(remote, ("2024-03-01",))

"""`recflow_files`: RecFlow's released files read into the canonical tables of `sources.logs`.

    tables, source = recflow_files.read_tables("/data/RecFlow", ["2024-01-13", "2024-01-14"])
    requests, items, info = recflow_files.read_day("/data/RecFlow", "2024-01-13")  # one day

The builders `recflow.Recflow` (every day in memory) and `recflow_beam.RecflowBeam` (one day per
Beam worker) read the release through these functions; the layout and the mapping below are theirs.

**The released layout** (checked against github.com/RecFlow-ICLR/RecFlow: README.md, and the data
loading of `retrieval/dataset.py`, `coarse/dataset.py`, `rank/dataset.py`, `*/run_*.py`,
`*/file.txt`):

    realshow/<date>.feather          exposed samples: one row per (request, video)
    all_stage/<date>.feather         samples of every stage of the same requests (exposed ones too),
                                     one row per (request, video), the same columns
    request_id_dict/<date>.pkl       {request_id: {stage: int64[n, 8]}}, stage in realshow,
                                     rerank_pos, rerank_neg, rank_pos, rank_neg, coarse_neg,
                                     prerank_neg; array columns (from the code): 0 video_id,
                                     1 author_id, 2 duration, 3 category_level_two, 4 upload_type,
                                     5 upload_timestamp, 6 category_level_one, 7 effective_view
    seq_effective_50_dict/<date>.pkl {request_id: int64[50, 10]}: the user's last 50 effective views
    others/id_cnt.pkl                {field: number of ids}
    others/realshow_video_info_daily/<date>.feather, others/*_test.feather (not read here)

Columns (README): request_id, request_timestamp (ms), user_id, device_id, age, gender, province,
video_id, author_id, category_level_one, category_level_two, upload_type, upload_timestamp (s),
duration (ms), realshow, rerank_pos, rerank_neg, rank_pos, rank_neg, coarse_neg, prerank_neg,
rank_index, rerank_index, playing_time, effective_view, long_view, like, follow, forward, comment;
every one "Integer". Raw ids start at 0 (the code adds 1 to keep 0 for padding). The reader needs
only the columns it uses (below), accepts any integer width, and refuses anything else (float,
string, nulls) with one `logs.LogFormatError` naming the file and column.

Where the README and the code disagree (the code wins here):
- The README names the test file `others/retrieval_test.feather`; the retrieval evaluation reads
  `others/recall_test.feather`. Neither is read here: the test split is the test day's own
  `realshow` + `all_stage` files, like every other day.
- The README calls the per-day stage files `all_stage/`; the coarse/rank "data distribution shift"
  scripts read the same columns from `remap_daily/<date>.feather`. `all_stage/` is read here.
- `others/id_cnt.pkl` is read by key `video_id` in retrieval/ and `photo_id` in coarse/ and rank/
  (so the file carries both). It is only recorded (recflow_source.json), not needed: vocabulary
  sizes come from the data.
- `seq_effective_50_dict` column 7 is "time_ms" in coarse/ and "request_timestamp" in rank/; its
  rows are left-padded with zeros (a row is history when column 7 > 0).
The split is the code's: `*/file.txt` lists the training days 2024-01-13 .. 2024-02-17 and every
evaluation reads 2024-02-18. One more thing from the issue tracker (RecFlow-ICLR/RecFlow#8): the
Hugging Face copy lacks `all_stage/2024-01-13.feather`; with `stage_source="auto"` (the default)
a day without its all_stage file is read from `request_id_dict/<date>.pkl` instead.

**Mapping to the request record** (one per request of `realshow/<date>.feather`):
- exposed: the request's realshow rows with `realshow == 1` (all of them when the file has no
  `realshow` column), ordered by `rerank_index` (then file order); a video shown twice is kept once.
- clicked: `realshow == 1 & <label> == 1`, label `effective_view` (default), `long_view` or `like`
  (config `label`).
- recalled: every video of the request's stage samples (all_stage rows, or request_id_dict arrays),
  plus its exposed videos (they are recalled by definition; counted when missing from the stage
  rows). B = recalled - exposed, as in every dataset.
- recalled_stage: the furthest stage a recalled video reached, from its stage flag(s), in the
  schema's `STAGES` order (pipeline order; within a stage its `_neg` before its `_pos`):
  prerank_neg, coarse_neg, rank_neg, rank_pos, rerank_neg, rerank_pos, realshow (exposed). A video
  with several rows or flags gets the furthest; an exposed video is `realshow`. So
  `--b_stages=rank_neg` gives the "hard negatives from ranking", `--b_stages=prerank_neg` the
  earliest-filtered ones. (The code's own FSLTR priority ranks them the same way: prerank_neg 1,
  coarse_neg 2, rank_neg = rerank_neg 3, rank_pos = rerank_pos 4, realshow 5.) Stage rows with no
  flag set are left out and counted.
- user features: age, gender, province (config `user_features`; device_id can be added) from the
  request's first realshow row; a request whose rows disagree on user_id is an error.
- item features (catalog): author_id, category_level_one, category_level_two, upload_type and
  duration_bucket (duration in ms cut at 5, 10, 20, 30, 60, 120, 300, 600 s: 9 buckets), from the
  first row seen of each video (realshow rows before stage rows, earlier days first). The corpus is
  every video seen in the files read.
- history: computed by `logs.write` from the user's clicks (the label) in earlier requests of the
  days read, newest last. `seq_effective_50_dict` is not read: it would bring history from before
  the first day, but it is keyed by request and always `effective_view`, whatever the label.
- timestamp: request_timestamp (ms); date: the file's date.
A realshow request with no stage sample (all_stage rows, or request_id_dict entry) is an error
naming both files: its recall set is unknown. Stage samples of requests with no exposure are left
out (nothing to train or test on) and counted.

**Reading.** Each day is read with vectorised numpy (only the columns used). Files may sit on any
file system TensorFlow reads (gs://, hdfs://: read through tf.io.gfile).
"""
from __future__ import annotations

import os
import pickle
from typing import Mapping, Sequence

import numpy as np
from absl import logging

from uma2_tf.sources import logs

LABELS = ("effective_view", "long_view", "like")
# Pipeline order; the record's `recalled_stage` is the 1-based index into this tuple.
STAGES = ("prerank_neg", "coarse_neg", "rank_neg", "rank_pos", "rerank_neg", "rerank_pos",
          "realshow")
REALSHOW_STAGE = len(STAGES)  # Stage id of exposed videos.
USER_FEATURES = ("age", "gender", "province")
OPTIONAL_USER_FEATURES = ("device_id",)
ITEM_COLUMNS = ("author_id", "category_level_one", "category_level_two", "upload_type", "duration")
ITEM_FEATURES = ("author_id", "category_level_one", "category_level_two", "upload_type",
                 "duration_bucket")
DURATION_EDGES_MS = (5_000, 10_000, 20_000, 30_000, 60_000, 120_000, 300_000, 600_000)
# Columns of the request_id_dict arrays, from the release's code.
REQUEST_DICT_COLUMNS = ("video_id", "author_id", "duration", "category_level_two", "upload_type",
                        "upload_timestamp", "category_level_one", "effective_view")
STAGE_SOURCES = ("auto", "all_stage", "request_id_dict")

# Files go through tf.io.gfile, so the release may sit in a bucket (gs://, hdfs://) that a Beam
# preparation on Dataflow reads; local Feather files are memory-mapped instead of read whole.


def _isfile(path: str) -> bool:
  import tensorflow as tf
  return tf.io.gfile.exists(path) and not tf.io.gfile.isdir(path)


def _isdir(path: str) -> bool:
  import tensorflow as tf
  return tf.io.gfile.isdir(path)


def _read_bytes(path: str) -> bytes:
  import tensorflow as tf
  with tf.io.gfile.GFile(path, "rb") as f:
    return f.read()


def _source(path: str):
  """What pyarrow reads `path` from: the local path itself, or the remote file's bytes."""
  if "://" not in path:
    return path
  import pyarrow as pa
  import tensorflow as tf
  try:
    with tf.io.gfile.GFile(path, "rb") as f:
      return pa.BufferReader(f.read())
  except tf.errors.OpError as e:
    raise logs.LogFormatError(f"{path}: cannot be read ({e.message})") from None


def _feather_schema(path: str, source):
  import pyarrow as pa
  import pyarrow.feather as feather

  try:
    if isinstance(source, str):
      with pa.OSFile(source, "rb") as f:
        return pa.ipc.open_file(f).schema
    source.seek(0)
    return pa.ipc.open_file(source).schema
  except pa.ArrowInvalid:
    pass  # Not Feather v2 (an Arrow IPC file): Feather v1, read whole below.
  except OSError as e:
    raise logs.LogFormatError(f"{path}: cannot be read ({e})") from None
  try:
    if not isinstance(source, str):
      source.seek(0)
    return feather.read_table(source).schema
  except Exception as e:  # pyarrow raises several types for files that are not Feather.
    raise logs.LogFormatError(f"{path}: not a Feather file ({e})") from None


def read_columns(path: str, required: Sequence[str], optional: Sequence[str] = ()) -> dict:
  """The named integer columns of a Feather file as int64 numpy arrays.

  Raises `logs.LogFormatError` naming the file and the column when a required column is missing,
  or a column is not integer-typed, or holds nulls.
  """
  import pyarrow as pa
  import pyarrow.feather as feather

  if not _isfile(path):
    raise FileNotFoundError(f"{path}: no such file (RecFlow layout: see "
                            "uma2_tf/sources/recflow_files.py)")
  source = _source(path)
  schema = _feather_schema(path, source)
  names = set(schema.names)
  missing = [c for c in required if c not in names]
  if missing:
    raise logs.LogFormatError(f"{path}: missing column(s) {missing} of RecFlow's layout; "
                              f"the file has {schema.names}")
  columns = [*required, *(c for c in optional if c in names and c not in required)]
  for c in columns:
    kind = schema.field(c).type
    if not pa.types.is_integer(kind):
      raise logs.LogFormatError(f"{path}: column '{c}' must hold integers "
                                f"(RecFlow's README: Integer), got type {kind}")
  try:
    if isinstance(source, str):
      table = feather.read_table(source, columns=columns, memory_map=True)
    else:
      source.seek(0)
      table = feather.read_table(source, columns=columns)
  except Exception as e:
    raise logs.LogFormatError(f"{path}: cannot be read ({e})") from None
  out = {}
  for c in columns:
    column = table.column(c)
    if column.null_count:
      raise logs.LogFormatError(f"{path}: column '{c}' has {column.null_count} missing value(s); "
                                "RecFlow's columns are never null")
    out[c] = np.asarray(column.to_numpy(), dtype=np.int64)
  return out


def _check_binary(columns: Mapping[str, np.ndarray], names: Sequence[str], path: str) -> None:
  for name in names:
    values = columns[name]
    bad = np.flatnonzero((values != 0) & (values != 1))
    if bad.size:
      i = int(bad[0])
      raise logs.LogFormatError(f"{path}: row {i} (request {int(columns['request_id'][i])}): "
                                f"column '{name}' must be 0 or 1, got {int(values[i])}")


def _stage_codes(columns: Mapping[str, np.ndarray]) -> np.ndarray:
  """Per row, 1-based index into STAGES of the furthest stage flag set; 0 when none is."""
  code = np.zeros(len(columns["request_id"]), np.int64)
  for i, stage in enumerate(STAGES):
    code = np.where(columns[stage] == 1, i + 1, code)  # Later stages overwrite earlier ones.
  return code


def _read_all_stage(path: str) -> tuple[dict, dict]:
  columns = read_columns(path, ("request_id", "video_id", *STAGES, *ITEM_COLUMNS))
  _check_binary(columns, STAGES, path)
  code = _stage_codes(columns)
  keep = code > 0
  rows = {k: columns[k][keep] for k in ("request_id", "video_id", *ITEM_COLUMNS)}
  rows["stage"] = code[keep]
  return rows, {"stage_rows": int(code.size), "stage_rows_without_flag": int((~keep).sum())}


def _read_request_id_dict(path: str) -> tuple[dict, dict]:
  # RecFlow ships these as pickles, and unpickling runs code the file names: read only files from
  # the dataset's own release (the manual dir is trusted input, like any TFDS manual download).
  if not _isfile(path):
    raise FileNotFoundError(f"{path}: no such file (RecFlow layout: see "
                            "uma2_tf/sources/recflow_files.py)")
  try:
    data = pickle.loads(_read_bytes(path))
  except Exception as e:  # Unpickling raises many types.
    raise logs.LogFormatError(f"{path}: cannot be unpickled ({e})") from None
  if not isinstance(data, Mapping):
    raise logs.LogFormatError(f"{path}: expected a dict {{request_id: {{stage: array}}}}, got "
                              f"{type(data).__name__}")
  stage_id = {s: i + 1 for i, s in enumerate(STAGES)}
  rids, arrays, codes = [], [], []
  unknown_keys: dict = {}
  for rid, by_stage in data.items():
    if not isinstance(rid, (int, np.integer)):
      raise logs.LogFormatError(f"{path}: request id {rid!r} is not an integer")
    if not isinstance(by_stage, Mapping):
      raise logs.LogFormatError(f"{path}: request {rid}: expected a dict {{stage: array}}, got "
                                f"{type(by_stage).__name__}")
    for stage, array in by_stage.items():
      if stage not in stage_id:
        unknown_keys[str(stage)] = unknown_keys.get(str(stage), 0) + 1
        continue
      array = np.asarray(array)
      if array.ndim != 2 or array.shape[1] < len(REQUEST_DICT_COLUMNS) or \
          not np.issubdtype(array.dtype, np.integer):
        raise logs.LogFormatError(
            f"{path}: request {rid}: stage '{stage}': expected an integer array [n, "
            f"{len(REQUEST_DICT_COLUMNS)}] ({', '.join(REQUEST_DICT_COLUMNS)}), "
            f"got dtype {array.dtype} shape {array.shape}")
      rids.append(np.full(array.shape[0], int(rid), np.int64))
      arrays.append(array[:, :len(REQUEST_DICT_COLUMNS)].astype(np.int64))
      codes.append(np.full(array.shape[0], stage_id[stage], np.int64))
  table = np.concatenate(arrays) if arrays else np.zeros((0, len(REQUEST_DICT_COLUMNS)), np.int64)
  rows = {name: table[:, i] for i, name in enumerate(REQUEST_DICT_COLUMNS)
          if name in ("video_id", *ITEM_COLUMNS)}
  rows["request_id"] = np.concatenate(rids) if rids else np.zeros(0, np.int64)
  rows["stage"] = np.concatenate(codes) if codes else np.zeros(0, np.int64)
  if unknown_keys:
    logging.warning("%s: stage keys not in RecFlow's README left out: %s", path, unknown_keys)
  return rows, {"stage_rows": int(rows["stage"].size), "unknown_stage_keys": unknown_keys}


def _stage_file(manual_dir: str, date: str, stage_source: str) -> tuple[str, str]:
  all_stage = os.path.join(manual_dir, "all_stage", f"{date}.feather")
  request_dict = os.path.join(manual_dir, "request_id_dict", f"{date}.pkl")
  if stage_source == "all_stage" or (stage_source == "auto" and _isfile(all_stage)):
    return "all_stage", all_stage
  if stage_source == "request_id_dict" or _isfile(request_dict):
    return "request_id_dict", request_dict
  raise FileNotFoundError(f"recflow {date}: neither {all_stage} nor {request_dict} exists; "
                          "the stage samples of a day are in one of them (RecFlow layout: see "
                          "uma2_tf/sources/recflow_files.py)")


def _group_starts(sorted_keys: np.ndarray) -> np.ndarray:
  """Start index of each run of equal values in a sorted array."""
  if not sorted_keys.size:
    return np.zeros(0, np.int64)
  return np.concatenate([[0], np.flatnonzero(sorted_keys[1:] != sorted_keys[:-1]) + 1])


def _count_missing_pairs(rid: np.ndarray, vid: np.ndarray, in_rid: np.ndarray,
                         in_vid: np.ndarray) -> int:
  """How many of the distinct (rid, vid) pairs are not among the (in_rid, in_vid) pairs."""
  source = np.concatenate([np.zeros(in_rid.size, np.int8), np.ones(rid.size, np.int8)])
  r, v = np.concatenate([in_rid, rid]), np.concatenate([in_vid, vid])
  order = np.lexsort((source, v, r))
  r, v, source = r[order], v[order], source[order]
  # Sorted so that a pair's `in` entries come right before its own.
  found = np.zeros(r.size, bool)
  found[1:] = (r[1:] == r[:-1]) & (v[1:] == v[:-1]) & (source[:-1] == 0)
  return int(((source == 1) & ~found).sum())


def read_day(manual_dir: str, date: str, *, label: str = "effective_view",
             user_features: Sequence[str] = USER_FEATURES, stage_source: str = "auto"):
  """One day's requests and videos in the canonical layout of `uma2_tf.sources.logs`.

  Returns (requests DataFrame, items DataFrame, info dict of counts and files).
  """
  import pandas as pd

  realshow_path = os.path.join(manual_dir, "realshow", f"{date}.feather")
  rs = read_columns(realshow_path,
                    ("request_id", "request_timestamp", "user_id", *user_features, "video_id",
                     *ITEM_COLUMNS, label),
                    optional=("realshow", "rerank_index"))
  _check_binary(rs, [c for c in ("realshow", label) if c in rs], realshow_path)
  info = {"date": date, "realshow_file": realshow_path, "realshow_rows": int(rs["request_id"].size)}
  shown = rs["realshow"] == 1 if "realshow" in rs else np.ones(rs["request_id"].size, bool)
  info["realshow_rows_not_shown"] = int((~shown).sum())
  rs = {k: v[shown] for k, v in rs.items()}

  # Exposure in position order: by request, then rerank_index, then file order.
  position = rs.get("rerank_index", np.zeros_like(rs["request_id"]))
  order = np.lexsort((np.arange(rs["request_id"].size), position, rs["request_id"]))
  rs = {k: v[order] for k, v in rs.items()}
  rids = rs["request_id"]
  starts = _group_starts(rids)
  request_ids = rids[starts]
  users_min = np.minimum.reduceat(rs["user_id"], starts) if starts.size else starts
  users_max = np.maximum.reduceat(rs["user_id"], starts) if starts.size else starts
  if np.any(users_min != users_max):
    i = int(np.flatnonzero(users_min != users_max)[0])
    raise logs.LogFormatError(f"{realshow_path}: request {int(request_ids[i])}: its rows have "
                              f"different user_id values ({int(users_min[i])}, "
                              f"{int(users_max[i])})")

  source, stage_path = _stage_file(manual_dir, date, stage_source)
  if source == "all_stage":
    st, counts = _read_all_stage(stage_path)
  else:
    st, counts = _read_request_id_dict(stage_path)
  info.update(stage_source=source, stage_file=stage_path, **counts)

  has_exposure = np.isin(st["request_id"], request_ids)
  info["stage_rows_of_requests_without_exposure"] = int((~has_exposure).sum())
  info["requests_without_exposure"] = int(np.unique(st["request_id"][~has_exposure]).size)
  st = {k: v[has_exposure] for k, v in st.items()}
  absent = request_ids[~np.isin(request_ids, st["request_id"])]
  if absent.size:
    more = f" (and {absent.size - 1} more)" if absent.size > 1 else ""
    raise logs.LogFormatError(
        f"{realshow_path}: request {int(absent[0])}{more} has no stage sample in {stage_path}: its "
        "recall set is unknown (every exposed request has its samples in the stage files of its "
        "day)")

  # Exposed videos of each request, once each (first position), clicked if any of its rows is.
  key_order = np.lexsort((np.arange(rids.size), rs["video_id"], rids))
  first = np.ones(rids.size, bool)
  same = (rids[key_order][1:] == rids[key_order][:-1]) & \
         (rs["video_id"][key_order][1:] == rs["video_id"][key_order][:-1])
  first[key_order[1:][same]] = False
  click = rs[label].copy()
  if same.any():  # A video shown twice: clicked if either showing was.
    group = np.cumsum(np.concatenate([[True], ~same]))
    any_click = np.maximum.reduceat(click[key_order], _group_starts(group))
    click[key_order] = any_click[group - 1]
  info["duplicate_exposures"] = int((~first).sum())
  exp_rid, exp_vid, exp_click = rids[first], rs["video_id"][first], click[first]

  # Recall set: stage rows plus the exposed videos (stage realshow); each video once, furthest
  # stage.
  all_rid = np.concatenate([st["request_id"], exp_rid])
  all_vid = np.concatenate([st["video_id"], exp_vid])
  all_code = np.concatenate([st["stage"], np.full(exp_rid.size, REALSHOW_STAGE, np.int64)])
  order = np.lexsort((-all_code, all_vid, all_rid))
  all_rid, all_vid, all_code = all_rid[order], all_vid[order], all_code[order]
  keep = np.ones(all_rid.size, bool)
  keep[1:] = (all_rid[1:] != all_rid[:-1]) | (all_vid[1:] != all_vid[:-1])
  info["exposed_videos_missing_from_stage_samples"] = _count_missing_pairs(
      exp_rid, exp_vid, st["request_id"], st["video_id"])
  rec_rid, rec_vid, rec_code = all_rid[keep], all_vid[keep], all_code[keep]
  # Within a request: furthest stage first, then video id.
  order = np.lexsort((rec_vid, -rec_code, rec_rid))
  rec_rid, rec_vid, rec_code = rec_rid[order], rec_vid[order], rec_code[order]

  stage_names = np.array(STAGES, dtype=object)
  exp_starts, rec_starts = _group_starts(exp_rid), _group_starts(rec_rid)
  assert (np.array_equal(exp_rid[exp_starts], request_ids)
          and np.array_equal(rec_rid[rec_starts], request_ids))
  requests = pd.DataFrame({
      "request_id": request_ids,
      "timestamp": np.minimum.reduceat(rs["request_timestamp"], starts) if starts.size else starts,
      "date": date,
      "user_id": rs["user_id"][starts],
      **{f: rs[f][starts] for f in user_features},
  })
  requests["exposed"] = list(np.split(exp_vid, exp_starts[1:])) if exp_starts.size else []
  requests["clicked"] = list(np.split(exp_click, exp_starts[1:])) if exp_starts.size else []
  requests["recalled"] = list(np.split(rec_vid, rec_starts[1:])) if rec_starts.size else []
  requests["recalled_stage"] = (list(np.split(stage_names[rec_code - 1], rec_starts[1:]))
                                if rec_starts.size else [])
  info["requests"] = int(request_ids.size)
  logging.info("recflow %s: %d requests, %d stage samples (%s)", date, info["requests"],
               info["stage_rows"], info["stage_source"])

  # Videos: realshow rows first, then stage rows; the first row of a video gives its features.
  vids = np.concatenate([rs["video_id"], st["video_id"]])
  feats = {c: np.concatenate([rs[c], st[c]]) for c in ITEM_COLUMNS}
  _, first_row = np.unique(vids, return_index=True)
  items = pd.DataFrame({"item_id": vids[first_row],
                        **{c: feats[c][first_row] for c in ITEM_COLUMNS if c != "duration"},
                        "duration_bucket": duration_bucket(feats["duration"][first_row])})
  return requests, items, info


def duration_bucket(duration_ms: np.ndarray) -> np.ndarray:
  """0..len(DURATION_EDGES_MS): the bucket of each duration (ms)."""
  edges = np.asarray(DURATION_EDGES_MS)
  return np.searchsorted(edges, np.asarray(duration_ms), side="right").astype(np.int64)


def read_tables(manual_dir: str, dates: Sequence[str], *, label: str = "effective_view",
                user_features: Sequence[str] = USER_FEATURES, stage_source: str = "auto"):
  """The named days of RecFlow as `logs.LogTables`, with a dict describing what was read."""
  import pandas as pd

  check_days(manual_dir, dates)
  day_requests, day_items, days = [], [], []
  seen_rids = np.zeros(0, np.int64)  # Sorted request ids of the days read so far.
  for date in sorted(dates):
    requests, items, info = read_day(manual_dir, date, label=label, user_features=user_features,
                                     stage_source=stage_source)
    rids = requests["request_id"].to_numpy(np.int64)
    again = rids[np.isin(rids, seen_rids)]
    if again.size:
      earlier = next(d["date"] for d, r in zip(days, day_requests)
                     if (r["request_id"] == again[0]).any())
      raise logs.LogFormatError(f"{info['realshow_file']}: request {int(again[0])} is also in "
                                f"realshow/{earlier}.feather (request ids are unique)")
    seen_rids = np.union1d(seen_rids, rids)
    day_requests.append(requests)
    day_items.append(items)
    days.append(info)
  items = pd.concat(day_items, ignore_index=True).drop_duplicates("item_id", keep="first")
  tables = logs.LogTables(requests=pd.concat(day_requests, ignore_index=True),
                          items=items.reset_index(drop=True), user_features=tuple(user_features),
                          item_features=ITEM_FEATURES, stages=STAGES)
  return tables, source_description(manual_dir, days)


def check_days(manual_dir: str, dates: Sequence[str]) -> None:
  """Raises FileNotFoundError, naming the first missing file, unless every day has its realshow
  file."""
  if not _isdir(manual_dir):
    raise FileNotFoundError(f"recflow: {manual_dir} is not a directory (the one holding realshow/ "
                            "and all_stage/)")
  missing = [d for d in dates if not _isfile(os.path.join(manual_dir, "realshow", f"{d}.feather"))]
  if missing:
    raise FileNotFoundError(f"recflow: "
                            f"{os.path.join(manual_dir, 'realshow', missing[0] + '.feather')} "
                            f"does not exist ({len(missing)} of the {len(dates)} days asked for "
                            f"are missing: {missing[:5]}{' ...' if len(missing) > 5 else ''})")


def source_description(manual_dir: str, days: Sequence[Mapping]) -> dict:
  """recflow_source.json's description of what was read: the files and counts of each day."""
  source = {"manual_dir": manual_dir, "stages": list(STAGES),
            "days": sorted(days, key=lambda d: d["date"])}
  id_cnt = os.path.join(manual_dir, "others", "id_cnt.pkl")
  if _isfile(id_cnt):
    try:
      counts = pickle.loads(_read_bytes(id_cnt))
      source["id_cnt"] = {str(k): int(v) for k, v in counts.items()}
    except Exception as e:  # Informational only.
      logging.warning("%s: not read (%s)", id_cnt, e)
  return source

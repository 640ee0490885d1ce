"""Real logs in one canonical layout -> request records, side files and TFDS splits.

Builders of real datasets (`recflow`, `kuairand`, `request_logs`) read their files into a
`LogTables` and hand it to `write`, which remaps ids, computes histories, validates every record and
writes the side files training and evaluation read.

Canonical layout of a real log, raw ids (ints or strings), as pandas DataFrames:

```python
from uma2_tf.sources import logs

tables = logs.LogTables(
    requests=requests_df,   # one row per request, columns:
        # request_id: int64 (unique)
        # timestamp:  int64 (any monotone unit; orders a user's requests for `history`)
        # date:       str "YYYY-MM-DD" (the day; splits are lists of dates)
        # user_id:    raw id (int or str)
        # <one column per user feature>: raw categorical value (int or str)
        # exposed:    list of raw item ids, in position order
        # clicked:    list of 0/1 ints aligned with exposed (the positive label)
        # recalled:   (optional) list of raw item ids: the recall set, containing every exposed item
        # recalled_stage: (optional, needs recalled) list of stage names (str) aligned with recalled
    items=items_df,          # item_id + one column per item feature (raw categorical values)
    user_features=("age", "gender"),      # user feature column names
    item_features=("category", "author"), # item feature column names
    stages=("prerank", "rank"),           # stage names, pipeline order ('' / () when no stage info)
)
generators = logs.write(directory, tables, splits={"train": [...dates...], "test": ["2024-02-18"]},
                        source="recflow/default")
# -> {split: iterator of (key, record)} for a TFDS GeneratorBasedBuilder._split_generators.
# It also writes into `directory`: schema.json (LogSchema with vocab sizes), catalog.npz (item
# features remapped, click/exposure counts over the "train" split), ids.npz (raw id of every dense
# id and every feature vocabulary), stats.json. Raw ids are remapped to dense ids 1..n
# (0 = padding).
# `history` is computed from the user's earlier clicks (by timestamp), newest last.
# Every record goes through validation.RecordValidator(policy="error"); bad tables raise
# logs.LogFormatError (a ValueError) naming the table, row/request_id, column and what was expected.
# strict=True (a user's own logs, `request_logs`) also refuses a split without a click and the
# requests breaking REQUEST_RULES (a date in no split; dates out of timestamp order within a user),
# unless skip=("out_of_split", ...) leaves them out, counted per rule in validation.json.

schema = logs.declared_schema(user_features=("age", "gender"), stages=("prerank", "rank"),
                              has_recall_log=True)
# A LogSchema with the right field names (vocab sizes are placeholders): what a builder's `_info`
# passes to `schema_lib.tfds_features(schema)`. The real sizes land in schema.json at build time.
```

Without a `recalled` column (exposure-only logs like KuaiRand) the writer sets recalled = exposed
and `LogSchema.has_recall_log = False` (there is no space B). With `recalled_stage`, records carry
an extra field `recalled_stage` (int64[], aligned with `recalled`, values 1..len(stages),
0 = unknown), the schema has `LogSchema.stages`, and
`schema_lib.RECALLED_STAGE == "recalled_stage"`; `parse_requests` parses it as a ragged int64 list.

A `split` column in the requests table, where set, sends a request to that split whatever its date
(KuaiRand's random-log requests share their dates with `test`).

TFDS builders of real logs live in `uma2_tf/sources/<name>.py` and are registered by
`registry.REAL_LOG_BUILDERS`. They read the user's files from TFDS's manual dir
(`manual_files.manual_dir(dl_manager)`); `python -m pipelines.prepare --dataset=<name>/<config>
--manual_dir=DIR` builds any of them. Everything is held in memory on one machine: fine for a
company's sample or KuaiRand-Pure, a large machine for RecFlow's 37 days. `logs_beam.write` is the
same writer as an Apache Beam pipeline (the `[beam]` extra), with the same records and side files;
`recflow_beam.RecflowBeam` uses it.
"""
from __future__ import annotations

import dataclasses
import json
import os
import re
from typing import Collection, Iterator, Mapping, Sequence

import numpy as np

from uma2_tf.data import validation
from uma2_tf import atomic_files
from uma2_tf.data import reading
from uma2_tf.data import schema as schema_lib

REQUEST_COLUMNS = ("request_id", "timestamp", "date", "user_id", "exposed", "clicked")
RECALLED = "recalled"
RECALLED_STAGE = "recalled_stage"
ITEM_ID = "item_id"
SPLIT = "split"
# The split each kept request goes to (by its `split`, else its date).
_KEPT_SPLIT = "uma2_assigned_split"
IDS_FILE = "ids.npz"
DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")


class LogFormatError(ValueError):
  """A log table breaks the canonical layout; the message names the table, row and column."""


@dataclasses.dataclass(frozen=True)
class LogTables:
  """A real log in the canonical layout (see the module docstring); ids are raw.

  Attributes:
    requests: one row per request.
    items: the corpus: `item_id` and one column per item feature.
    user_features: the requests' user feature columns.
    item_features: the items' feature columns.
    stages: stage names in pipeline order, when `requests` has `recalled_stage`.
    requests_file: the file the requests were read from, named by `write`'s errors about them.
  """

  requests: "pandas.DataFrame"  # noqa: F821
  items: "pandas.DataFrame"  # noqa: F821
  user_features: tuple[str, ...] = ()
  item_features: tuple[str, ...] = ()
  stages: tuple[str, ...] = ()
  requests_file: str = ""

  @property
  def has_recall_log(self) -> bool:
    return RECALLED in self.requests.columns


def declared_schema(user_features: Sequence[str], stages: Sequence[str] = (),
                    has_recall_log: bool = True,
                    item_features: Sequence[str] = ()) -> schema_lib.LogSchema:
  """A `LogSchema` with the fields of such a log and placeholder vocabulary sizes (for `_info`)."""
  return schema_lib.LogSchema(num_users=2, num_items=2, user_features={f: 2 for f in user_features},
                              item_features={f: 2 for f in item_features}, stages=tuple(stages),
                              has_recall_log=has_recall_log)


def check_tables(tables: LogTables, source: str = "log") -> None:
  """Raises `LogFormatError` on the first thing in `tables` that breaks the canonical layout."""
  import pandas as pd

  requests, items = tables.requests, tables.items
  for name, frame, needed in (("requests", requests, (*REQUEST_COLUMNS, *tables.user_features)),
                              ("items", items, (ITEM_ID, *tables.item_features))):
    if not isinstance(frame, pd.DataFrame):
      raise LogFormatError(f"{source}: the {name} table must be a pandas DataFrame, "
                           f"got {type(frame).__name__}")
    missing = [c for c in needed if c not in frame.columns]
    if missing:
      raise LogFormatError(f"{source}: {name} table: missing column(s) {missing}; "
                           f"it has {list(frame.columns)}")
  if RECALLED_STAGE in requests.columns and RECALLED not in requests.columns:
    raise LogFormatError(f"{source}: requests table: '{RECALLED_STAGE}' needs a '{RECALLED}' "
                         f"column")
  if (RECALLED_STAGE in requests.columns) != bool(tables.stages):
    raise LogFormatError(f"{source}: requests table: '{RECALLED_STAGE}' and LogTables.stages go "
                         f"together (stages={tables.stages}, columns={list(requests.columns)})")
  for column in ("request_id", "timestamp"):
    if not pd.api.types.is_integer_dtype(requests[column]):
      raise LogFormatError(f"{source}: requests table: column '{column}' must hold integers, "
                           f"got dtype {requests[column].dtype}")
  duplicated = requests["request_id"][requests["request_id"].duplicated()]
  if len(duplicated):
    raise LogFormatError(f"{source}: requests table: request_id {duplicated.iloc[0]} appears more "
                         f"than once")
  if items[ITEM_ID].duplicated().any():
    raise LogFormatError(f"{source}: items table: item_id "
                         f"{items[ITEM_ID][items[ITEM_ID].duplicated()].iloc[0]!r} "
                         "appears more than once")
  if requests["user_id"].isna().any():
    row = requests[requests["user_id"].isna()].iloc[0]
    raise LogFormatError(f"{source}: requests table: request {row['request_id']}: "
                         f"user_id is missing")
  known_items = set(items[ITEM_ID].tolist())
  for row in requests.itertuples(index=False):
    check_request(row.request_id, row.date, row.exposed, row.clicked,
                  getattr(row, RECALLED) if tables.has_recall_log else None,
                  getattr(row, RECALLED_STAGE) if tables.stages else None,
                  known_item=known_items.__contains__, stages=tables.stages, source=source)


def check_request(rid, date, exposed, clicked, recalled=None, recalled_stage=None, *, known_item,
                  stages: Sequence[str] = (), source: str = "log") -> None:
  """Raises `LogFormatError` when one request row breaks the canonical layout.

  `recalled` is None for logs without a recall log, `recalled_stage` None for logs without stages;
  `known_item(raw_id)` says whether an item is in the items table. `logs_beam` checks each request
  with it too.
  """
  if not isinstance(date, str) or not DATE.match(date):
    raise LogFormatError(f"{source}: requests table: request {rid}: 'date' must be a YYYY-MM-DD "
                         f"string, got {date!r}")
  exposed, clicked = _list(exposed, "exposed", rid, source), _list(clicked, "clicked", rid, source)
  if len(clicked) != len(exposed):
    raise LogFormatError(f"{source}: requests table: request {rid}: 'clicked' has {len(clicked)} "
                         f"values for {len(exposed)} exposed items")
  if any(c not in (0, 1) for c in clicked):
    raise LogFormatError(f"{source}: requests table: request {rid}: 'clicked' must hold 0/1, "
                         f"got {clicked}")
  unknown = [i for i in exposed if not known_item(i)]
  if recalled is not None:
    recalled = _list(recalled, RECALLED, rid, source)
    unknown += [i for i in recalled if not known_item(i)]
    recall_set = set(recalled)
    missing = [i for i in exposed if i not in recall_set]
    if missing:
      raise LogFormatError(f"{source}: requests table: request {rid}: exposed item {missing[0]!r} "
                           f"is not in '{RECALLED}' (the recall set contains every exposed item)")
    if recalled_stage is not None:
      recalled_stage = _list(recalled_stage, RECALLED_STAGE, rid, source)
      if len(recalled_stage) != len(recalled):
        raise LogFormatError(f"{source}: requests table: request {rid}: '{RECALLED_STAGE}' has "
                             f"{len(recalled_stage)} values for {len(recalled)} recalled items")
      bad = [s for s in recalled_stage if s not in stages]
      if bad:
        raise LogFormatError(f"{source}: requests table: request {rid}: unknown stage {bad[0]!r}; "
                             f"stages are {list(stages)}")
  if unknown:
    raise LogFormatError(f"{source}: requests table: request {rid}: item {unknown[0]!r} is not in "
                         "the items table")


def _list(value, column: str, rid, source: str) -> list:
  if isinstance(value, np.ndarray):
    return value.tolist()
  if isinstance(value, (list, tuple)):
    return list(value)
  raise LogFormatError(f"{source}: requests table: request {rid}: '{column}' must be a list, "
                       f"got {value!r}")


def _vocabulary(values) -> dict:
  """Raw value -> dense id 1..n, in sorted order of the values (by type name for mixed types)."""
  distinct = {v for v in values if not _is_missing(v)}
  ordered = sorted(distinct, key=lambda v: (type(v).__name__, v))
  return {v: i + 1 for i, v in enumerate(ordered)}


def _is_missing(value) -> bool:
  return value is None or (isinstance(value, float) and np.isnan(value))


def make_record(*, request_id, day, user, user_features: Mapping[str, int], history: Sequence[int],
                exposed: np.ndarray, clicked: np.ndarray, recalled: np.ndarray,
                recalled_stage: Sequence[int] | None, max_history: int) -> dict:
  """One request record of DESIGN.md §4 from dense ids (shared by `write` and `logs_beam`)."""
  record = {
      schema_lib.REQUEST_ID: np.int64(request_id), schema_lib.DAY: np.int64(day),
      schema_lib.USER_ID: np.int64(user),
      **{f: np.int64(v) for f, v in user_features.items()},
      schema_lib.HISTORY: np.array(list(history)[-max_history:], np.int64),
      schema_lib.EXPOSED: exposed, schema_lib.CLICKED: clicked, schema_lib.RECALLED: recalled,
  }
  if recalled_stage is not None:
    record[schema_lib.RECALLED_STAGE] = np.array(recalled_stage, np.int64)
  return record


def next_history(history: Sequence[int], exposed: np.ndarray, clicked: np.ndarray,
                 max_history: int) -> list:
  """The user's history after this request: their clicks appended, newest last, the newest kept."""
  return (list(history) + exposed[clicked == 1].tolist())[-max_history:]


def raw_id_arrays(users: Sequence, items: Sequence, user_features: Mapping[str, Sequence],
                  item_features: Mapping[str, Sequence]) -> dict[str, np.ndarray]:
  """ids.npz's arrays: the raw value of every dense id (index = dense id; "" at the padding id
  0)."""
  def strings(values) -> np.ndarray:
    return np.array([""] + [str(v) for v in values], dtype=str)

  return {"user_raw_id": strings(users), "item_raw_id": strings(items),
          **{f"user_feature/{f}": strings(v) for f, v in user_features.items()},
          **{f"item_feature/{f}": strings(v) for f, v in item_features.items()}}


def save_side_files(directory: str, schema: schema_lib.LogSchema,
                    catalog: schema_lib.ItemCatalog, *, raw_ids: Mapping[str, np.ndarray],
                    stats: Mapping) -> None:
  """schema.json, catalog.npz, ids.npz and stats.json of a prepared log, each written atomically."""
  import tensorflow as tf

  tf.io.gfile.makedirs(directory)
  schema.save(directory)
  catalog.save(directory)
  atomic_files.atomic_savez(os.path.join(directory, IDS_FILE), **raw_ids)
  atomic_files.atomic_write_text(os.path.join(directory, reading.STATS_FILE),
                                 json.dumps(stats, indent=2))


def split_of_dates(splits: Mapping[str, Sequence[str]], source: str) -> dict:
  """date -> its split; `splits` must include "train" and name each date once."""
  if "train" not in splits:
    raise ValueError(f"{source}: splits must include 'train', got {sorted(splits)}")
  split_of_date = {}
  for split, dates in splits.items():
    for date in dates:
      if date in split_of_date:
        raise ValueError(f"{source}: date {date} is in splits {split_of_date[date]!r} "
                         f"and {split!r}")
      split_of_date[date] = split
  return split_of_date


def vocabulary_schema(users, items, user_vocab: Mapping, item_vocab: Mapping, *,
                      stages: Sequence[str], has_recall_log: bool) -> schema_lib.LogSchema:
  """The schema of a log whose id and feature vocabularies are these (anything with a len)."""
  return schema_lib.LogSchema(
      num_users=len(users) + 1, num_items=len(items) + 1,
      user_features={f: max(2, len(v) + 1) for f, v in user_vocab.items()},
      item_features={f: max(2, len(v) + 1) for f, v in item_vocab.items()},
      stages=tuple(stages), has_recall_log=has_recall_log)


COUNT_KEYS = ("requests", "exposures", "clicks", "recalled")
# What `write(strict=True)` refuses about a request's date, unless told to skip such requests.
OUT_OF_SPLIT = "out_of_split"
DATE_MISMATCH = "date_mismatch"
REQUEST_RULES = (OUT_OF_SPLIT, DATE_MISMATCH)


def _span(dates: Sequence[str]) -> str:
  """`2024-01-01..2024-01-07 (7 dates)`: dates in a message."""
  dates = sorted(dates)
  if len(dates) < 2:
    return ", ".join(dates) or "no date"
  return f"{dates[0]}..{dates[-1]} ({len(dates)} dates)"


def _date_mismatches(kept) -> tuple:
  """Which of `kept` (sorted by timestamp, request_id) are dated before an earlier request of
  their user, and a message about the first."""
  import pandas as pd

  day, _ = pd.factorize(kept["date"], sort=True)
  users = kept["user_id"].to_numpy(dtype=object)
  latest = pd.Series(day).groupby(users).cummax().to_numpy()
  mismatch = day < latest
  if not mismatch.any():
    return mismatch, ""
  j = int(np.argmax(mismatch))
  k = next(k for k in range(j) if users[k] == users[j] and day[k] == latest[j])
  row, earlier = kept.iloc[j], kept.iloc[k]
  return mismatch, (
      f"request {row['request_id']} (user {row['user_id']!r}), column 'date': expected "
      f"{earlier['date']!r} or later, the date of the user's request {earlier['request_id']} "
      f"that comes before it in time (timestamp {earlier['timestamp']}, this one "
      f"{row['timestamp']}), got {row['date']!r}: within a user, requests in timestamp order must "
      f"have non-decreasing dates, else a day's history holds a later day's clicks "
      f"({int(mismatch.sum())} request(s) break this)")


def stats_summary(source: str, schema: schema_lib.LogSchema, *, num_days: int,
                  dates: Mapping[str, list], outside_splits: int,
                  counts: Mapping[str, Mapping[str, int]], extra: Mapping | None = None) -> dict:
  """stats.json: sizes, dates and, per split, `<split>_<count>` for each of COUNT_KEYS."""
  summary = {"source": source, "num_users": schema.num_users - 1, "num_items": schema.num_items - 1,
             "num_days": num_days, "dates": dict(dates), "has_recall_log": schema.has_recall_log,
             "stages": list(schema.stages), "requests_outside_splits": outside_splits,
             **(extra or {})}
  for split, by_key in counts.items():
    for key in COUNT_KEYS:
      summary[f"{split}_{key}"] = int(by_key.get(key, 0))
  return summary


def write(directory: str, tables: LogTables, splits: Mapping[str, Sequence[str]], *, source: str,
          max_history: int = 100, extra_stats: Mapping | None = None, strict: bool = False,
          skip: Collection[str] = ()) -> dict[str, Iterator[tuple[int, dict]]]:
  """Remaps, validates and writes the side files of `tables`; returns the splits' record generators.

  Args:
    directory: the dataset directory being prepared (a builder's `self.data_dir`).
    tables: the log.
    splits: split name -> the dates (YYYY-MM-DD) it holds; must include "train" (the catalog's
      popularity counts are the train split's). Requests on other dates are left out and counted
      in stats.json (`requests_outside_splits`).
    source: named in every error and in stats.json (e.g. "recflow/default").
    max_history: clicks kept per record's `history` (the newest).
    extra_stats: more figures for stats.json (a builder's own, e.g. rows read per file).
    strict: for a user's own logs, refuse what the public datasets' builders let pass: a split
      without a click, and a request breaking one of REQUEST_RULES (unless its rule is in `skip`):
      `out_of_split`, a date in no split; `date_mismatch`, within a user, a request dated before
      one with an earlier (timestamp, request_id), the order histories are built in (a day's
      history would hold a later day's clicks). Not strict, requests outside the splits are left
      out (counted in stats.json) and dates are not compared with timestamps.
    skip: (strict) REQUEST_RULES whose breaking requests are left out instead, counted per rule
      in validation.json (written when strict).

  A `split` column in the requests table, where set, puts a request in that split whatever its
  date (KuaiRand's randomly exposed requests share their dates with `test`); the split must be a
  key of `splits`, which may list no date for it.
  """
  unknown = sorted(set(skip) - set(REQUEST_RULES))
  if unknown or (skip and not strict):
    raise ValueError(f"{source}: skip must name rules of {REQUEST_RULES} with strict=True, got "
                     f"{sorted(skip)}")
  split_of_date = split_of_dates(splits, source)
  check_tables(tables, source)
  where = tables.requests_file or f"{source}: requests table"
  skipped: dict[str, int] = {}
  examples: list[str] = []

  def refuse_or_skip(rule: str, count: int, message: str) -> None:
    if rule not in skip:
      raise LogFormatError(f"{where}: {message}; or leave such requests out: skip {rule!r} "
                           f"(pipelines.prepare --skip={rule})")
    skipped[rule] = count
    examples.append(f"{where}: {message}")

  requests, items = tables.requests, tables.items
  split_of_request = requests["date"].map(split_of_date)
  if SPLIT in requests.columns:
    chosen = requests[SPLIT].notna()
    unknown = sorted(set(requests.loc[chosen, SPLIT]) - set(splits))
    if unknown:
      raise LogFormatError(f"{source}: requests table: column '{SPLIT}' names split(s) {unknown}; "
                           f"the splits are {sorted(splits)}")
    split_of_request = split_of_request.where(~chosen, requests[SPLIT])
  in_splits = split_of_request.notna()
  if strict and not in_splits.all():
    first, outside = requests[~in_splits].iloc[0], int((~in_splits).sum())
    spans = ", ".join(f"{split}: {_span(dates)}" for split, dates in splits.items())
    refuse_or_skip(OUT_OF_SPLIT, outside,
                   f"request {first['request_id']}, column 'date': expected a date of the splits "
                   f"({spans}), got {first['date']!r} ({outside} request(s) fall in no split)")
  kept = requests[in_splits].assign(**{_KEPT_SPLIT: split_of_request[in_splits]})
  kept = kept.sort_values(["timestamp", "request_id"], kind="stable")
  if not len(kept):
    raise LogFormatError(f"{source}: no request falls on the split dates {sorted(split_of_date)}")
  if strict:
    mismatch, message = _date_mismatches(kept)
    if mismatch.any():
      refuse_or_skip(DATE_MISMATCH, int(mismatch.sum()), message)
      kept = kept[~mismatch]
  empty = [s for s in splits if not (kept[_KEPT_SPLIT] == s).any()]
  if empty:
    raise LogFormatError(f"{source}: split(s) {empty} hold no request (their dates: "
                         f"{ {s: list(splits[s]) for s in empty} })")
  day_of_date = {d: i + 1 for i, d in enumerate(sorted(set(kept["date"])))}

  users = _vocabulary(kept["user_id"].tolist())
  item_ids = _vocabulary(items[ITEM_ID].tolist())
  user_vocab = {f: _vocabulary(kept[f].tolist()) for f in tables.user_features}
  item_vocab = {f: _vocabulary(items[f].tolist()) for f in tables.item_features}
  stage_index = {name: i + 1 for i, name in enumerate(tables.stages)}
  schema = vocabulary_schema(users, item_ids, user_vocab, item_vocab, stages=tables.stages,
                             has_recall_log=tables.has_recall_log)

  features = {f: np.zeros(schema.num_items, np.int64) for f in tables.item_features}
  rows = items[ITEM_ID].map(item_ids).to_numpy(np.int64)
  for f in tables.item_features:
    features[f][rows] = [item_vocab[f].get(v, 0) if not _is_missing(v) else 0
                         for v in items[f].tolist()]
  click_count = np.zeros(schema.num_items, np.int64)
  exposure_count = np.zeros(schema.num_items, np.int64)

  # Records in time order: a user's history is the clicks of their earlier requests, newest last.
  records = {split: [] for split in splits}
  clicks_so_far: dict = {}
  stats = {split: dict.fromkeys(COUNT_KEYS, 0) for split in splits}
  for row in kept.itertuples(index=False):
    split = getattr(row, _KEPT_SPLIT)
    exposed = np.array([item_ids[i] for i in _list(row.exposed, "exposed", row.request_id, source)],
                       np.int64)
    clicked = np.array(_list(row.clicked, "clicked", row.request_id, source), np.int64)
    if tables.has_recall_log:
      recalled = np.array([item_ids[i] for i in getattr(row, RECALLED)], np.int64)
    else:
      recalled = exposed.copy()
    user = users[row.user_id]
    history = clicks_so_far.get(user, [])
    record = make_record(
        request_id=row.request_id, day=day_of_date[row.date], user=user,
        user_features={f: (user_vocab[f].get(getattr(row, f), 0)
                           if not _is_missing(getattr(row, f)) else 0)
                       for f in tables.user_features},
        history=history, exposed=exposed, clicked=clicked, recalled=recalled,
        recalled_stage=([stage_index[s] for s in getattr(row, RECALLED_STAGE)]
                        if tables.stages else None),
        max_history=max_history)
    records[split].append(record)
    clicks_so_far[user] = next_history(history, exposed, clicked, max_history)
    if split == "train":
      np.add.at(exposure_count, exposed, 1)
      np.add.at(click_count, exposed[clicked == 1], 1)
    counts = stats[split]
    counts["requests"] += 1
    counts["exposures"] += int(exposed.size)
    counts["clicks"] += int(clicked.sum())
    counts["recalled"] += int(recalled.size)

  if strict:
    # Training learns from clicks and evaluation needs them: a split without any is refused now,
    # not when a trainer reaches it.
    for split in sorted(splits, key=lambda s: s != "train"):
      if not stats[split]["clicks"]:
        raise LogFormatError(
            f"{where}: column 'clicked': expected at least one click (1) in split {split!r}, "
            f"got none in its {stats[split]['requests']} request(s) and "
            f"{stats[split]['exposures']} exposure(s) (dates {_span(splits[split])})")
  summary = stats_summary(source, schema, num_days=len(day_of_date),
                          dates={s: sorted(set(kept.loc[kept[_KEPT_SPLIT] == s, "date"]))
                                 for s in splits},
                          outside_splits=int((~in_splits).sum()), counts=stats, extra=extra_stats)
  save_side_files(directory, schema,
                  schema_lib.ItemCatalog(features=features, click_count=click_count,
                                         exposure_count=exposure_count),
                  raw_ids=raw_id_arrays(list(users), list(item_ids),
                                        {f: list(v) for f, v in user_vocab.items()},
                                        {f: list(v) for f, v in item_vocab.items()}),
                  stats=summary)

  # Every record is validated now, once, before TFDS writes a shard: a bad record fails the whole
  # preparation instead of leaving some splits written.
  validator = validation.RecordValidator(schema, policy="error", source=source)
  for split_records in records.values():
    for record in split_records:
      validator.check(record)
  if strict:
    # validation.json as a RecordValidator writes it, with the requests skipped by rule.
    report = validator.report()
    report["skip"] = sorted(skip)
    report["checked"] += sum(skipped.values())
    report["skipped"] += sum(skipped.values())
    report["skipped_by_reason"].update({rule: skipped.get(rule, 0) for rule in REQUEST_RULES})
    report["first_messages"] = examples + report["first_messages"]
    atomic_files.atomic_write_text(os.path.join(directory, validation.REPORT_FILE),
                                   json.dumps(report, indent=2))

  def generate(split: str):
    for record in records[split]:
      yield int(record[schema_lib.REQUEST_ID]), record

  return {split: generate(split) for split in splits}

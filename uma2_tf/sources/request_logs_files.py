"""Reads the files of a `request_logs` dataset (its layout: `uma2_tf.sources.request_logs`) into
`logs.LogTables`, checking every cell: a malformed one is one `logs.LogFormatError` naming the file,
the data row (and CSV line), the request, the column, the raw value and what was expected.

    tables = read_tables("/data/our_logs")        # LogTables of requests.csv or exposures+recalls
    splits = read_splits("/data/our_logs", tables)
"""
from __future__ import annotations

import datetime
import difflib
import json
import os
import re

import numpy as np

from uma2_tf.sources import logs

FORMATS = (".csv", ".parquet")
LIST_COLUMNS = ("exposed", "clicked", "recalled", "recalled_stage")
# What an element of each list column is, for an error about a null element (Parquet).
LIST_ELEMENTS = {"exposed": "an item id", "clicked": "0 or 1", "recalled": "an item id",
                 "recalled_stage": "a stage name"}
EXPOSURE_COLUMNS = ("request_id", "timestamp", "date", "user_id", "item_id", "position", "clicked")
RECALL_COLUMNS = ("request_id", "item_id", "stage")
# The splits training and evaluation read: `test` is evaluated after training, `test_random`
# (randomly exposed items, optional) too when present; any other name would never be read.
SPLIT_NAMES = ("train", "test", "test_random")
REQUIRED_SPLITS = ("train", "test")
# A column that must hold integers (request_id, timestamp, position) takes any integer literal.
_INT = re.compile(r"^[+-]?[0-9]+$")
# An id or feature column is typed int only if each value is written the one way str(int) writes
# it: `034` and `34` (or `+7` and `7`) would otherwise become one id.
_CANONICAL_INT = re.compile(r"^(0|-?[1-9][0-9]*)$")
_INT64 = (-(2 ** 63), 2 ** 63 - 1)
# Longest raw value an error shows whole (a 200,000-character cell would make it unreadable).
_SHOWN_CHARS = 80


def _find(directory: str, stem: str, required: bool = True) -> str | None:
  found = [os.path.join(directory, stem + ext) for ext in FORMATS
           if os.path.exists(os.path.join(directory, stem + ext))]
  if len(found) > 1:
    raise logs.LogFormatError(f"{directory}: both {found[0]} and {found[1]}; keep one format")
  if not found and required:
    raise logs.LogFormatError(f"{directory}: no {stem}.csv or {stem}.parquet")
  return found[0] if found else None


def _read(path: str) -> tuple:
  """The file's cells as written (a str, None for an empty (null) cell, a list of str or None in a
  Parquet list), and the physical line each data row starts on (None: Parquet, or not known)."""
  import pandas as pd

  try:
    if path.endswith(".parquet"):
      import pyarrow.parquet as pq

      parquet = pq.ParquetFile(path)
      schema = parquet.schema_arrow
      # A pandas index saved as a column is not one of the log's columns (pandas reads it back as
      # the index).
      index = {c for c in (schema.pandas_metadata or {}).get("index_columns", [])
               if isinstance(c, str)}
      names = [n for n in schema.names if n not in index]
      _check_header(path, names)
      table = parquet.read(columns=names, use_pandas_metadata=False)
      # Python values straight from Arrow: a list<int64> holding a null stays ints (pandas would
      # make the whole column floats, 0.0).
      return pd.DataFrame({n: [_raw(v) for v in table.column(n).to_pylist()] for n in names},
                          columns=names, dtype=object), None
    # Strings as written: no type inference (ids `7` and `v1` stay comparable), only "" is missing.
    frame = pd.read_csv(path, dtype=str, keep_default_na=False, na_values=[""])
  except logs.LogFormatError:
    raise
  except Exception as e:  # pandas raises many types for unreadable files
    raise logs.LogFormatError(f"{path}: cannot be read as {os.path.splitext(path)[1][1:]}: "
                              f"{e}") from None
  header, lines = _csv_layout(path)
  _check_header(path, header)
  if lines is not None and len(lines) != len(frame):
    lines = None  # the csv module split the rows otherwise than pandas: no line is named
  return frame.astype(object).where(frame.notna(), None), lines


def _csv_layout(path: str) -> tuple:
  """A CSV's header as written (pandas renames a repeated `date` to `date.1` and an empty name to
  `Unnamed: 3`) and the physical line each data row starts on (a quoted cell may hold newlines)."""
  import csv

  limit = csv.field_size_limit(2 ** 31 - 1)  # pandas read any cell length: so must this
  try:
    with open(path, newline="", encoding="utf-8-sig") as f:
      reader = csv.reader(f)
      header, starts, end = None, [], 0
      for row in reader:
        start, end = end + 1, reader.line_num
        if not row:
          continue  # a blank line, which pandas skips too
        if header is None:
          header = row
        else:
          starts.append(start)
  except (csv.Error, UnicodeError):
    return [], None
  finally:
    csv.field_size_limit(limit)
  return header or [], starts


def _check_header(path: str, names: list) -> None:
  """Each column has a name, and only one column has it."""
  empty = [j + 1 for j, name in enumerate(names) if not str(name).strip()]
  if empty:
    raise logs.LogFormatError(
        f"{path}: the header's column {empty[0]} (of {len(names)}) has no name; expected a column "
        f"name (or remove the column: a trailing separator on the header line adds one), got "
        f"{list(names)}")
  repeated = sorted({name for j, name in enumerate(names) if name in names[:j]})
  if repeated:
    raise logs.LogFormatError(
        f"{path}: the header repeats column(s) {repeated}; expected each column once, got "
        f"{list(names)}")


def _raw(value):
  """A Parquet cell as its text (a list as a list of texts), None when null."""
  if isinstance(value, (list, tuple)):
    return [_raw(v) for v in value]
  if value is None or (isinstance(value, float) and value != value):
    return None
  return str(value)


def _as_int(text, canonical: bool = False) -> int | None:
  """`text` as an int if it is an integer literal (`canonical`: as str(int) writes it) within
  int64's range, else None."""
  if isinstance(text, str) and (_CANONICAL_INT if canonical else _INT).match(text):
    value = int(text)
    if _INT64[0] <= value <= _INT64[1]:
      return value
  return None


def _typed(values: list) -> list:
  """A column as one type: ints if every present value is a canonical int64 literal (`0`, `7`,
  `-12`; not `034`, `+7`, `-0`), else the strings as written (None = missing)."""
  ints = [None if v is None else _as_int(v, canonical=True) for v in values]
  if any(v is not None for v in values) and all(
      i is not None for v, i in zip(values, ints) if v is not None):
    return ints
  return list(values)


def _objects(values: list):
  """`values` as a column of Python objects: pandas would make ints with a None floats (20.0)."""
  import pandas as pd

  return pd.Series(values, dtype=object)


def _shown(value) -> str:
  """A raw value in an error: quoted, cut after _SHOWN_CHARS characters."""
  if value is None:
    return "an empty cell"
  text = repr(value)
  if len(text) <= _SHOWN_CHARS:
    return text
  size = len(value) if isinstance(value, str) else len(text)
  return f"{text[:_SHOWN_CHARS]}… ({size:,} characters)"


class _File:
  """One log file as raw cells (`_read`), naming where a bad cell is."""

  def __init__(self, path: str):
    self.path = path
    self.name = os.path.basename(path)
    self.frame, self.lines = _read(path)

  def column(self, name: str) -> list:
    return self.frame[name].tolist() if name in self.frame.columns else []

  def row(self, i: int) -> str:
    """Row `i` (0-based) as errors name it: its 1-based data row, and the CSV line it starts on."""
    return f"data row {i + 1}" + (f" (line {self.lines[i]})" if self.lines is not None else "")

  def error(self, i: int, column: str, message: str, request=None) -> logs.LogFormatError:
    rid = "" if request is None else f", request {request}"
    return logs.LogFormatError(f"{self.path}: {self.row(i)}{rid}, column '{column}': {message}")

  def require(self, columns, rows_are: str) -> None:
    """The file has `columns` and at least one data row (each one `rows_are`)."""
    missing = [c for c in columns if c not in self.frame.columns]
    if missing:
      extra = [c for c in self.frame.columns if c not in columns]
      hints = [f"'{close[0]}' for '{c}'?" for c in missing
               for close in [difflib.get_close_matches(c, extra, n=1, cutoff=0.75)] if close]
      raise logs.LogFormatError(f"{self.path}: missing column(s) {missing}; it has "
                                f"{list(self.frame.columns)}"
                                + (f" (a misspelling: {' '.join(hints)})" if hints else ""))
    if not len(self.frame):
      raise logs.LogFormatError(f"{self.path}: no data row, only the header; expected one row "
                                f"per {rows_are}")

  def present(self, column: str, what: str, requests=None) -> list:
    """The column's values, each one value (`what`, not a list) and none missing."""
    values = self.column(column)
    for i, value in enumerate(values):
      if value is None or isinstance(value, list):
        raise self.error(i, column, f"expected {what}, got {_shown(value)}",
                         None if requests is None else requests[i])
    return values

  def ints(self, column: str) -> np.ndarray:
    values = self.column(column)
    out = np.empty(len(values), np.int64)
    for i, value in enumerate(values):
      number = _as_int(value)
      if number is None:
        raise self.error(i, column, f"expected an integer (int64), got {_shown(value)}")
      out[i] = number
    return out

  def clicks(self, column: str) -> np.ndarray:
    values = self.column(column)
    for i, value in enumerate(values):
      if value not in ("0", "1"):
        raise self.error(i, column, f"expected 0 or 1, got {_shown(value)}")
    return np.array([int(v) for v in values], np.int64)

  def dates(self, column: str, requests) -> list:
    values = self.column(column)
    for i, value in enumerate(values):
      if not _is_date(value):
        raise self.error(i, column, f"expected a date YYYY-MM-DD, got {_shown(value)}",
                         requests[i])
    return values

  def lists(self, column: str, requests) -> list[list[str]]:
    """A list column: a Parquet list, or a CSV cell of space-separated values (empty: [])."""
    out = []
    for i, value in enumerate(self.column(column)):
      if value is None:
        out.append([])
      elif isinstance(value, list):
        if None in value:
          raise self.error(i, column, f"expected {LIST_ELEMENTS[column]}, got a null (None) as "
                           f"element {value.index(None) + 1} of the list", requests[i])
        out.append(value)
      elif self.path.endswith(".csv"):
        out.append(value.split())
      else:
        raise self.error(i, column, f"expected a list, got {_shown(value)}", requests[i])
    return out

  def duplicate(self, keys: list, column: str, what: str, requests=None) -> None:
    """Raises on the first row whose key is on an earlier row too."""
    first = {}
    for i, key in enumerate(keys):
      if key in first:
        raise self.error(i, column, f"expected {what}, got {_shown(self.column(column)[i])} again "
                         f"(first at {self.row(first[key])})",
                         None if requests is None else requests[i])
      first[key] = i


def _is_date(value) -> bool:
  if not isinstance(value, str) or not logs.DATE.match(value):
    return False
  try:
    datetime.date.fromisoformat(value)
  except ValueError:
    return False
  return True


class _Items:
  """The items table and how a raw item id in the logs finds its item."""

  def __init__(self, directory: str):
    self.file = _File(_find(directory, "items"))
    self.file.require(("item_id",), "item")
    self.ids = _typed(self.file.present("item_id", "an item id"))
    self.file.duplicate(self.ids, "item_id", "a unique item id")
    self.is_int = isinstance(self.ids[0], int)
    self.known = set(self.ids)

  def key(self, raw: str):
    """The items' `item_id` that `raw` (as written in a log) is, or None if none is."""
    # Typed like items.csv's column (`_typed`): `034` is no item of int ids (34 is written `34`).
    key = _as_int(raw, canonical=True) if self.is_int else raw
    return key if key in self.known else None

  def keys(self, file: _File, column: str, values: list, requests) -> list:
    """`values` (the raw ids of file's row i) as item ids; raises on the first unknown one."""
    out = []
    for i, raw in enumerate(values):
      key = self.key(raw)
      if key is None:
        raise file.error(i, column, f"expected an item_id of {self.file.name}, got {_shown(raw)}",
                         requests[i])
      out.append(key)
    return out

  def table(self):
    import pandas as pd

    frame = self.file.frame
    return pd.DataFrame({"item_id": self.ids,
                         **{c: _objects(_typed(frame[c].tolist()))
                            for c in frame.columns if c != "item_id"}})


def read_tables(directory: str) -> logs.LogTables:
  """The logs in `directory` as `logs.LogTables` (either layout); `logs.LogFormatError` on the first
  malformed cell."""
  if not os.path.isdir(directory):
    raise logs.LogFormatError(f"{directory} is not a directory (the manual dir with the log files)")
  requests_path = _find(directory, "requests", required=False)
  if requests_path is not None:
    # The other layout's files would be left unread without a word.
    other = [p for stem in ("exposures", "recalls")
             for p in [_find(directory, stem, required=False)] if p is not None]
    if other:
      raise logs.LogFormatError(
          f"{directory}: both {os.path.basename(requests_path)} and "
          f"{' and '.join(os.path.basename(p) for p in other)}; expected one layout: "
          f"{os.path.basename(requests_path)} (one row per request), or exposures (+ recalls) "
          "tables; move the other files out")
  items = _Items(directory)
  stages = _read_stages(directory)
  if requests_path is not None:
    requests, path = _one_row(_File(requests_path), items, stages)
  else:
    requests, path = _two_tables(directory, items, stages)
  user_features = tuple(c for c in requests.columns
                        if c not in (*logs.REQUEST_COLUMNS, logs.RECALLED, logs.RECALLED_STAGE))
  if logs.RECALLED_STAGE in requests.columns and not stages:
    stages = _first_appearance(requests[logs.RECALLED_STAGE])
  elif logs.RECALLED_STAGE not in requests.columns:
    stages = ()
  return logs.LogTables(requests=requests, items=items.table(), user_features=user_features,
                        item_features=tuple(c for c in items.file.frame.columns if c != "item_id"),
                        stages=stages, requests_file=path)


def _one_row(file: _File, items: _Items, stages: tuple) -> tuple:
  """The requests table of the one-row-per-request layout, every cell checked."""
  import pandas as pd

  file.require(logs.REQUEST_COLUMNS, "request")
  columns = list(file.frame.columns)
  if logs.RECALLED_STAGE in columns and logs.RECALLED not in columns:
    raise logs.LogFormatError(f"{file.path}: column '{logs.RECALLED_STAGE}' needs a "
                              f"'{logs.RECALLED}' column (it is aligned with it)")
  rids = file.ints("request_id")
  file.duplicate(rids.tolist(), "request_id", "a unique request id")
  data = {"request_id": rids, "timestamp": file.ints("timestamp"),
          "date": file.dates("date", rids),
          "user_id": _typed(file.present("user_id", "a user id", rids))}
  features = [c for c in columns if c not in (*logs.REQUEST_COLUMNS, *LIST_COLUMNS)]
  lists = {c: file.lists(c, rids) for c in LIST_COLUMNS if c in columns}
  for i, rid in enumerate(rids):
    _check_request_lists(file, i, rid, lists, items, stages)
  data["exposed"] = [[items.key(v) for v in exposed] for exposed in lists["exposed"]]
  data["clicked"] = [[int(c) for c in clicked] for clicked in lists["clicked"]]
  if logs.RECALLED in lists:
    data[logs.RECALLED] = [[items.key(v) for v in recalled] for recalled in lists[logs.RECALLED]]
  if logs.RECALLED_STAGE in lists:
    data[logs.RECALLED_STAGE] = lists[logs.RECALLED_STAGE]
  stage_names = set(stages) | {s for row in lists.get(logs.RECALLED_STAGE, []) for s in row}
  for column in features:
    data[column] = _feature(file, column, items, stage_names)
  return pd.DataFrame(data, columns=["request_id", "timestamp", "date", "user_id", *features,
                                     *lists]), file.path


def _check_request_lists(file: _File, i: int, rid, lists: dict, items: _Items,
                         stages: tuple) -> None:
  """Row `i`'s list cells: clicks aligned with exposures, known and distinct items, a recall set
  holding the exposures, stages aligned with it."""
  exposed, clicked = lists["exposed"][i], lists["clicked"][i]
  if len(clicked) != len(exposed):
    raise file.error(i, "clicked", f"expected {len(exposed)} values (one per exposed item), got "
                     f"{len(clicked)}: {_shown(' '.join(clicked))}", rid)
  bad = [c for c in clicked if c not in ("0", "1")]
  if bad:
    raise file.error(i, "clicked", f"expected 0 or 1, got {_shown(bad[0])}", rid)
  for column in [c for c in ("exposed", logs.RECALLED) if c in lists]:
    seen = set()
    for raw in lists[column][i]:
      key = items.key(raw)
      if key is None:
        raise file.error(i, column, f"expected an item_id of {items.file.name}, got "
                         f"{_shown(raw)}", rid)
      if key in seen:
        raise file.error(i, column, f"expected each item once, got {_shown(raw)} twice", rid)
      seen.add(key)
  if logs.RECALLED not in lists:
    return
  recalled = {items.key(raw) for raw in lists[logs.RECALLED][i]}
  missing = [raw for raw in exposed if items.key(raw) not in recalled]
  if missing:
    raise file.error(i, "exposed", f"expected items of '{logs.RECALLED}' (the recall set holds "
                     f"every exposed item), got {_shown(missing[0])}", rid)
  if logs.RECALLED_STAGE in lists:
    stage = lists[logs.RECALLED_STAGE][i]
    if len(stage) != len(lists[logs.RECALLED][i]):
      raise file.error(i, logs.RECALLED_STAGE, f"expected {len(lists[logs.RECALLED][i])} values "
                       f"(one per recalled item), got {len(stage)}", rid)
    bad = [s for s in stage if stages and s not in stages]
    if bad:
      raise file.error(i, logs.RECALLED_STAGE, f"expected a stage of stages.txt {list(stages)}, "
                       f"got {_shown(bad[0])}", rid)


def _feature(file: _File, column: str, items: _Items, stage_names: set) -> list:
  """A user feature column, typed; a list in it is an error (see the module docstring)."""
  close = difflib.get_close_matches(column, LIST_COLUMNS, n=1, cutoff=0.75)
  values = file.column(column)
  for i, value in enumerate(values):
    tokens = value if isinstance(value, list) else (value or "").split()
    listed = isinstance(value, list) or (len(tokens) > 1 and (
        close or set(tokens) <= {"0", "1"}
        or all(items.key(t) is not None or t in stage_names for t in tokens)))
    if listed:
      hint = f"; did you mean '{close[0]}'?" if close else ""
      raise file.error(i, column, f"expected one categorical value (a column outside the layout "
                       f"is a user feature; only requests.csv's {', '.join(LIST_COLUMNS)} hold "
                       f"lists), got the list {_shown(value)}{hint}")
  return _objects(_typed(values))


def _two_tables(directory: str, items: _Items, stages: tuple) -> tuple:
  """One row per request from the exposure table (+ the recall table), every cell checked."""
  import pandas as pd

  file = _File(_find(directory, "exposures"))
  file.require(EXPOSURE_COLUMNS, "exposed item")
  rids = file.ints("request_id")
  features = [c for c in file.frame.columns if c not in EXPOSURE_COLUMNS]
  stage_names = set(stages)
  rows = pd.DataFrame({
      "request_id": rids, "timestamp": file.ints("timestamp"), "date": file.dates("date", rids),
      "user_id": file.present("user_id", "a user id", rids),
      "item": items.keys(file, "item_id", file.present("item_id", "an item id", rids), rids),
      "position": file.ints("position"), "clicked": file.clicks("clicked"),
      **{c: _feature(file, c, items, stage_names) for c in features},
      "row": np.arange(len(file.frame))})
  per_request = ["timestamp", "date", "user_id", *features]
  _check_same_per_request(file, rows, per_request)
  file.duplicate(list(zip(rids.tolist(), rows["item"])), "item_id",
                 "each item once per request", rids)
  rows = rows.sort_values(["request_id", "position"], kind="stable")
  grouped = rows.groupby("request_id", sort=True)
  requests = rows.drop_duplicates("request_id")[["request_id", *per_request]]
  requests = requests.reset_index(drop=True)
  requests["user_id"] = _typed(requests["user_id"].tolist())
  requests["exposed"] = grouped["item"].agg(list).to_numpy()
  requests["clicked"] = grouped["clicked"].agg(list).to_numpy()
  recalls_path = _find(directory, "recalls", required=False)
  if recalls_path is not None:
    _join_recalls(_File(recalls_path), file, rows, requests, items, stages)
  return requests, file.path


def _check_same_per_request(file: _File, rows, columns) -> None:
  """Each of `columns` holds one value on all the rows of a request."""
  first = rows.groupby("request_id")["row"].transform("first").to_numpy()
  for column in columns:
    values = rows[column].to_numpy(dtype=object)
    differs = [i for i in range(len(values)) if values[i] != values[first[i]]]
    if differs:
      i = differs[0]
      raise file.error(i, column, f"expected {_shown(values[first[i]])} as on the request's first "
                       f"row ({file.row(first[i])}): it is the same on every row of a request, got "
                       f"{_shown(values[i])}", rows["request_id"].iloc[i])


def _join_recalls(file: _File, exposures: _File, rows, requests, items: _Items,
                  stages: tuple) -> None:
  """Adds `recalled` (and `recalled_stage`) to `requests` from the recall table."""
  file.require(RECALL_COLUMNS[:2], "recalled item")
  extra = [c for c in file.frame.columns if c not in RECALL_COLUMNS]
  if extra:
    raise logs.LogFormatError(f"{file.path}: unexpected column(s) {extra}; it holds "
                              f"{', '.join(RECALL_COLUMNS)} (stage optional)")
  rids = file.ints("request_id")
  exposed = set(rows["request_id"].tolist())
  orphans = [i for i, rid in enumerate(rids.tolist()) if rid not in exposed]
  if orphans:
    # Its recall set would be dropped without a word: a request id mistyped in either file.
    i = orphans[0]
    raise file.error(i, "request_id", f"expected a request_id of {exposures.name} (a recall set "
                     f"belongs to an exposed request), got {_shown(file.column('request_id')[i])} "
                     f"({len(orphans)} row(s) of "
                     f"{len({rids[j] for j in orphans})} request(s) are not in it)", rids[i])
  keys = items.keys(file, "item_id", file.present("item_id", "an item id", rids), rids)
  file.duplicate(list(zip(rids.tolist(), keys)), "item_id", "each item once per request", rids)
  stage = file.present("stage", "a stage name", rids) if "stage" in file.frame.columns else None
  for i, name in enumerate(stage if stages and stage else []):
    if name not in stages:
      raise file.error(i, "stage", f"expected a stage of stages.txt {list(stages)}, got "
                       f"{_shown(name)}", rids[i])
  recalled, recalled_stage = {}, {}
  for i, (rid, key) in enumerate(zip(rids.tolist(), keys)):
    recalled.setdefault(rid, []).append(key)
    if stage is not None:
      recalled_stage.setdefault(rid, []).append(stage[i])
  pairs = set(zip(rids.tolist(), keys))
  in_file_order = rows.sort_index()
  for rid, key, i in zip(in_file_order["request_id"], in_file_order["item"], in_file_order["row"]):
    if rid not in recalled:
      raise logs.LogFormatError(f"{file.path}: request {rid} is in {exposures.name} "
                                f"({exposures.row(i)}) but has no row here (its recall set is "
                                "unknown); expected its recalled items")
    if (rid, key) not in pairs:
      raise exposures.error(i, "item_id", f"expected an item of the request's recall set in "
                            f"{file.name} (it holds every exposed item), got "
                            f"{_shown(exposures.column('item_id')[i])}", rid)
  requests[logs.RECALLED] = [recalled[r] for r in requests["request_id"]]
  if stage is not None:
    requests[logs.RECALLED_STAGE] = [recalled_stage[r] for r in requests["request_id"]]


def _read_stages(directory: str) -> tuple[str, ...]:
  """The stage names of stages.txt, in pipeline order; () without the file."""
  path = os.path.join(directory, "stages.txt")
  if not os.path.exists(path):
    return ()
  with open(path) as f:
    stages = tuple(line.strip() for line in f if line.strip())
  if not stages:
    # Taken as absent, stages would silently be in order of first appearance.
    raise logs.LogFormatError(f"{path}: no stage name; expected one stage name per line, in "
                              "pipeline order (or remove the file: stages are then taken in order "
                              "of first appearance)")
  repeated = [s for i, s in enumerate(stages) if s in stages[:i]]
  if repeated:
    raise logs.LogFormatError(f"{path}: stage {repeated[0]!r} is listed twice; expected each "
                              "stage once, in pipeline order")
  return stages


def _first_appearance(column) -> tuple[str, ...]:
  seen = {}
  for stages in column:
    for stage in stages:
      seen.setdefault(stage, None)
  return tuple(seen)


def read_splits(directory: str, tables: logs.LogTables) -> dict:
  """Split name -> its dates: splits.json's (checked against the logs), else the last date `test`
  and every earlier one `train`."""
  path = os.path.join(directory, "splits.json")
  dates = sorted({d for d in tables.requests["date"] if isinstance(d, str)})
  if os.path.exists(path):
    return _splits_json(path, set(dates))
  if len(dates) < 2:
    raise logs.LogFormatError(f"{directory}: the logs span {len(dates)} date(s); the default "
                              "split needs at least 2 (the last is the test day), or give "
                              "splits.json")
  return {"train": dates[:-1], "test": dates[-1:]}


def _splits_json(path: str, log_dates: set) -> dict:
  with open(path) as f:
    try:
      splits = json.load(f)
    except json.JSONDecodeError as e:
      raise logs.LogFormatError(f"{path}: not JSON ({e})") from None
  if not isinstance(splits, dict) or not all(isinstance(v, list) for v in splits.values()):
    raise logs.LogFormatError(f"{path}: expected {{split: [YYYY-MM-DD, ...]}}, got {splits!r}")
  names = f"'train' and 'test' (and optionally {SPLIT_NAMES[2]!r}, randomly exposed items)"
  unknown = [s for s in splits if s not in SPLIT_NAMES]
  if unknown:
    close = difflib.get_close_matches(unknown[0], SPLIT_NAMES, n=1, cutoff=0.5)
    raise logs.LogFormatError(f"{path}: unknown split {unknown[0]!r}"
                              + (f" (a misspelling of {close[0]!r}?)" if close else "")
                              + f"; expected the splits {names}, got {list(splits)}")
  missing = [s for s in REQUIRED_SPLITS if s not in splits]
  if missing:
    raise logs.LogFormatError(f"{path}: no {missing[0]!r} split; expected the splits {names}, "
                              f"got {list(splits)}")
  bad = [(s, d) for s, dates in splits.items() for d in dates if not _is_date(d)]
  if bad:
    raise logs.LogFormatError(f"{path}: split {bad[0][0]!r}: expected dates YYYY-MM-DD, got "
                              f"{_shown(bad[0][1])}")
  split_of_date = {}
  for split, dates in splits.items():
    for date in dates:
      if date in split_of_date:
        raise logs.LogFormatError(f"{path}: date {date} is in splits {split_of_date[date]!r} and "
                                  f"{split!r}; expected each date in one split")
      split_of_date[date] = split
  empty = [s for s, dates in splits.items() if not set(dates) & log_dates]
  if empty:
    span = sorted(log_dates)
    raise logs.LogFormatError(
        f"{path}: split {empty[0]!r} holds no request: expected dates of the logs ("
        f"{span[0]}..{span[-1]}, {len(span)} dates), got {splits[empty[0]]}")
  return splits

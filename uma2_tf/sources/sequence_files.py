"""The four public files of the interaction-sequence datasets, read in their public layouts into
`Interactions` (the kept rows in file order, raw ids as first-appearance indices) for `sequences`.

    interactions = sequence_files.read("gowalla", "/data/loc-gowalla_totalCheckins.txt")
    path = sequence_files.find_file(sequence_files.DATASETS["taobao"], manual_dir)

**Files** (the manual dir holds exactly one of a dataset's names; a malformed line stops the read
with one `logs.LogFormatError` naming the file, the 1-based line, the column or field, what was
expected and what is there; a blank line is skipped):

- `books`: `reviews_Books_5.json` or `reviews_Books_5.json.gz`, McAuley's 2014 5-core reviews,
  one JSON object a line: `reviewerID`, `asin` (non-empty strings), `unixReviewTime` (an integer,
  seconds: the review's day at 00:00 UTC); every review is an interaction.
- `gowalla`: `loc-gowalla_totalCheckins.txt` or `.txt.gz` (SNAP), no header, 5 tab-separated
  columns: user (id), check-in time (`2010-10-19T23:55:27Z`), latitude, longitude (numbers),
  location id (id); every check-in is an interaction.
- `retailrocket`: `events.csv` (Kaggle), header `timestamp,visitorid,event,itemid,transactionid`,
  timestamp an integer in ms, visitorid and itemid ids, event `view`, `addtocart` or
  `transaction`, transactionid empty or an id; every `view` event is an interaction.
- `taobao`: `UserBehavior.csv` (Tianchi), no header, `user_id,item_id,category_id,behavior_type,
  timestamp`: ids, a behaviour `pv`, `buy`, `cart` or `fav`, an integer timestamp in seconds;
  every `pv` row is an interaction.

(An id is a non-negative integer written in digits; Amazon's ids are strings.) The other rows
(Taobao's `buy`, `cart`, `fav`; RetailRocket's `addtocart`, `transaction`) are still checked, then
counted (`Interactions.info`) and dropped; repeats are kept.

Reading is one pass in Python over the lines (no line is held; ids are mapped to ints as they are
read), some 5 to 10 minutes for Taobao's 100M lines on one core; the kept interactions are then a
few numpy arrays.
"""
from __future__ import annotations

import array
import dataclasses
import datetime
import gzip
import json
import os
from typing import Callable

import numpy as np

from uma2_tf.sources import logs

_SHOWN_CHARS = 80
_MISSING = object()


@dataclasses.dataclass(frozen=True)
class Interactions:
  """The kept rows of a file, in file order, with ids as indices into their first-appearance lists.

  Attributes:
    path: the file read.
    users, items: int64 per row, indices into `user_keys` / `item_keys`.
    times: int64 per row, in the file's unit (`units_per_second` per second).
    user_keys, item_keys: the raw ids, in order of first appearance among the kept rows.
    categories: int64 per row, index into `category_keys` (None: the dataset has no category).
    category_keys: the raw category ids, in order of first appearance among the kept rows.
    units_per_second: 1 for seconds, 1000 for milliseconds.
    utc_offset_hours: the dataset's calendar days start at 00:00 of this offset (`day` only).
    info: lines read, blank lines, rows per behaviour, rows kept.
  """

  path: str
  users: np.ndarray
  items: np.ndarray
  times: np.ndarray
  user_keys: list
  item_keys: list
  categories: np.ndarray | None = None
  category_keys: list | None = None
  units_per_second: int = 1
  utc_offset_hours: int = 0
  info: dict = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class Dataset:
  """One public dataset: the names its file goes by, how to read it, where it comes from."""

  name: str
  files: tuple[str, ...]
  read: Callable[[str], Interactions]
  title: str
  homepage: str
  citation: str
  # The reference's history length (ComiRec/REMI `maxlen` / `seq_len`): the default cap of
  # `history` in the records.
  max_history: int


# ----------------------------------------------------------------------------- reading lines


def _shown(value) -> str:
  if value is _MISSING:
    return "nothing (the field is missing)"
  if isinstance(value, bytes):
    value = value.decode("utf-8", errors="replace")
  if value == "":
    return "an empty value"
  text = repr(value)
  return text if len(text) <= _SHOWN_CHARS else text[:_SHOWN_CHARS] + "..."


def _error(path: str, line: int, what: str, name: str, expected: str,
           got) -> logs.LogFormatError:
  return logs.LogFormatError(f"{path}: line {line}, {what} '{name}': expected {expected}, "
                             f"got {_shown(got)}")


def _lines(path: str):
  """(line number, raw bytes without the line break) of every line; a read error (a truncated
  .gz, say) is a LogFormatError naming the line it stopped at."""
  f = (gzip.open if path.endswith(".gz") else open)(path, "rb")
  number = 0
  with f:
    try:
      for number, raw in enumerate(f, 1):
        yield number, raw.rstrip(b"\r\n")
    except (OSError, EOFError) as e:
      raise logs.LogFormatError(f"{path}: line {number + 1}: cannot be read ({e})") from None


def _columns_error(path: str, line: int, fields: list, columns: tuple, separator: str):
  line_text = (b"\t" if separator == "tab" else b",").join(fields)
  return logs.LogFormatError(
      f"{path}: line {line}: expected {len(columns)} {separator}-separated columns "
      f"({', '.join(columns)}), got {len(fields)}: {_shown(line_text)}")


def _id(value: bytes, path: str, line: int, column: str) -> int:
  # Digits only: int() would also take " 7", "+7" and "1_000".
  if value.isdigit():
    return int(value)
  raise _error(path, line, "column", column, "an id (a non-negative integer)", value)


def _integer(value: bytes, path: str, line: int, column: str, expected: str) -> int:
  if value.isdigit() or (value[:1] == b"-" and value[1:].isdigit()):
    return int(value)
  raise _error(path, line, "column", column, expected, value)


class _Ids:
  """Raw id -> index, in order of first appearance."""

  def __init__(self):
    self.index: dict = {}

  def __call__(self, raw) -> int:
    return self.index.setdefault(raw, len(self.index))

  def keys(self) -> list:
    return list(self.index)


def _int64(values: array.array) -> np.ndarray:
  return np.frombuffer(values, dtype=np.int64).copy() if len(values) else np.zeros(0, np.int64)


# ----------------------------------------------------------------------------- the four readers

BOOKS_FIELDS = ("reviewerID", "asin", "unixReviewTime")


def read_books(path: str) -> Interactions:
  """McAuley's 2014 reviews (one JSON object a line): every review is an interaction."""
  users, items = _Ids(), _Ids()
  user_rows, item_rows, times = array.array("q"), array.array("q"), array.array("q")
  lines = blank = 0
  for lines, raw in _lines(path):
    if not raw.strip():
      blank += 1
      continue
    try:
      review = json.loads(raw)
    except ValueError as e:  # JSONDecodeError, UnicodeDecodeError
      raise logs.LogFormatError(f"{path}: line {lines}: expected one JSON object (a review), got "
                                f"{_shown(raw)} ({e})") from None
    if not isinstance(review, dict):
      raise logs.LogFormatError(f"{path}: line {lines}: expected one JSON object (a review), got "
                                f"{_shown(raw)}")
    reviewer, asin = review.get("reviewerID", _MISSING), review.get("asin", _MISSING)
    for field, value in (("reviewerID", reviewer), ("asin", asin)):
      if not isinstance(value, str) or not value:
        raise _error(path, lines, "field", field, "a non-empty string", value)
    seconds = review.get("unixReviewTime", _MISSING)
    if type(seconds) is not int:  # noqa: E721  (bool is an int too, and no timestamp)
      raise _error(path, lines, "field", "unixReviewTime",
                   "an integer (seconds since 1970-01-01 UTC)", seconds)
    user_rows.append(users(reviewer))
    item_rows.append(items(asin))
    times.append(seconds)
  rows = len(times)
  return Interactions(path=path, users=_int64(user_rows), items=_int64(item_rows),
                      times=_int64(times), user_keys=users.keys(), item_keys=items.keys(),
                      info={"lines": lines, "blank_lines": blank, "rows": rows,
                            "rows_by_type": {"review": rows}, "kept": "every review",
                            "rows_kept": rows})


GOWALLA_COLUMNS = ("user", "check-in time", "latitude", "longitude", "location id")
_EPOCH = datetime.datetime(1970, 1, 1)


def _iso_seconds(value: bytes) -> int | None:
  """`2010-10-19T23:55:27Z` -> seconds since 1970 (UTC); None if it is not such a time."""
  if (len(value) != 20 or value[19:20] != b"Z" or value[10:11] != b"T"
      or value[4:5] != b"-" or value[7:8] != b"-" or value[13:14] != b":"
      or value[16:17] != b":"):
    return None
  try:
    moment = datetime.datetime.fromisoformat(value[:19].decode("ascii"))
  except (ValueError, UnicodeDecodeError):
    return None
  return (moment - _EPOCH) // datetime.timedelta(seconds=1)


def read_gowalla(path: str) -> Interactions:
  """SNAP's Gowalla check-ins: every check-in (user, location) is an interaction."""
  users, items = _Ids(), _Ids()
  user_rows, item_rows, times = array.array("q"), array.array("q"), array.array("q")
  lines = blank = 0
  for lines, raw in _lines(path):
    fields = raw.split(b"\t")
    if len(fields) != 5:
      if not raw.strip():
        blank += 1
        continue
      raise _columns_error(path, lines, fields, GOWALLA_COLUMNS, "tab")
    user = _id(fields[0], path, lines, "user")
    seconds = _iso_seconds(fields[1])
    if seconds is None:
      raise _error(path, lines, "column", "check-in time",
                   "a UTC time YYYY-MM-DDTHH:MM:SSZ such as 2010-10-19T23:55:27Z", fields[1])
    for column, value in (("latitude", fields[2]), ("longitude", fields[3])):
      try:
        float(value)
      except ValueError:
        raise _error(path, lines, "column", column, "a number (degrees)", value) from None
    location = _id(fields[4], path, lines, "location id")
    user_rows.append(users(user))
    item_rows.append(items(location))
    times.append(seconds)
  rows = len(times)
  return Interactions(path=path, users=_int64(user_rows), items=_int64(item_rows),
                      times=_int64(times), user_keys=users.keys(), item_keys=items.keys(),
                      info={"lines": lines, "blank_lines": blank, "rows": rows,
                            "rows_by_type": {"check-in": rows}, "kept": "every check-in",
                            "rows_kept": rows})


RETAILROCKET_HEADER = b"timestamp,visitorid,event,itemid,transactionid"
RETAILROCKET_EVENTS = (b"view", b"addtocart", b"transaction")


def read_retailrocket(path: str) -> Interactions:
  """RetailRocket's events.csv: every `view` event (visitor, item) is an interaction."""
  users, items = _Ids(), _Ids()
  user_rows, item_rows, times = array.array("q"), array.array("q"), array.array("q")
  counts = dict.fromkeys(RETAILROCKET_EVENTS, 0)
  columns = tuple(RETAILROCKET_HEADER.decode().split(","))
  lines = blank = 0
  for lines, raw in _lines(path):
    if lines == 1:
      if raw.lstrip(b"\xef\xbb\xbf") != RETAILROCKET_HEADER:
        raise logs.LogFormatError(f"{path}: line 1: expected the header "
                                  f"{RETAILROCKET_HEADER.decode()!r}, got {_shown(raw)}")
      continue
    fields = raw.split(b",")
    if len(fields) != 5:
      if not raw.strip():
        blank += 1
        continue
      raise _columns_error(path, lines, fields, columns, "comma")
    milliseconds = _integer(fields[0], path, lines, "timestamp",
                            "an integer (milliseconds since 1970-01-01 UTC)")
    visitor = _id(fields[1], path, lines, "visitorid")
    event = fields[2]
    if event not in counts:
      raise _error(path, lines, "column", "event", "one of view, addtocart, transaction", event)
    item = _id(fields[3], path, lines, "itemid")
    if fields[4] and not fields[4].isdigit():
      raise _error(path, lines, "column", "transactionid", "an empty cell or an id", fields[4])
    counts[event] += 1
    if event != b"view":
      continue
    user_rows.append(users(visitor))
    item_rows.append(items(item))
    times.append(milliseconds)
  if not lines:
    raise logs.LogFormatError(f"{path}: line 1: expected the header "
                              f"{RETAILROCKET_HEADER.decode()!r}, got an empty file")
  return Interactions(path=path, users=_int64(user_rows), items=_int64(item_rows),
                      times=_int64(times), user_keys=users.keys(), item_keys=items.keys(),
                      units_per_second=1000,
                      info={"lines": lines, "blank_lines": blank, "rows": sum(counts.values()),
                            "rows_by_type": {k.decode(): v for k, v in counts.items()},
                            "kept": "event == view", "rows_kept": len(times)})


TAOBAO_COLUMNS = ("user_id", "item_id", "category_id", "behavior_type", "timestamp")
TAOBAO_BEHAVIORS = (b"pv", b"buy", b"cart", b"fav")


def read_taobao(path: str) -> Interactions:
  """Taobao's UserBehavior.csv: every `pv` row (user, item) is an interaction."""
  users, items, categories = _Ids(), _Ids(), _Ids()
  user_rows, item_rows, times = array.array("q"), array.array("q"), array.array("q")
  category_rows = array.array("q")
  counts = dict.fromkeys(TAOBAO_BEHAVIORS, 0)
  user_index, item_index, category_index = users.index, items.index, categories.index
  lines = blank = 0
  for lines, raw in _lines(path):
    fields = raw.split(b",")
    if len(fields) != 5:
      if not raw.strip():
        blank += 1
        continue
      raise _columns_error(path, lines, fields, TAOBAO_COLUMNS, "comma")
    user, item, category, behavior, seconds = fields
    # 100M lines: the checks are inlined for the common case, the helpers only name the error.
    if not (user.isdigit() and item.isdigit() and category.isdigit() and seconds.isdigit()):
      for column, value in zip(TAOBAO_COLUMNS[:3], fields):
        _id(value, path, lines, column)
      # A timestamp outside the nine days (the real file has a few) is kept, as the reference does;
      # a negative one too.
      _integer(seconds, path, lines, "timestamp", "an integer (seconds since 1970-01-01 UTC)")
    if behavior not in counts:
      raise _error(path, lines, "column", "behavior_type", "one of pv, buy, cart, fav", behavior)
    counts[behavior] += 1
    if behavior != b"pv":
      continue
    user_rows.append(user_index.setdefault(int(user), len(user_index)))
    item_rows.append(item_index.setdefault(int(item), len(item_index)))
    category_rows.append(category_index.setdefault(int(category), len(category_index)))
    times.append(int(seconds))
  return Interactions(path=path, users=_int64(user_rows), items=_int64(item_rows),
                      times=_int64(times), user_keys=users.keys(), item_keys=items.keys(),
                      categories=_int64(category_rows), category_keys=categories.keys(),
                      utc_offset_hours=8,  # the dataset's days are Beijing days
                      info={"lines": lines, "blank_lines": blank, "rows": sum(counts.values()),
                            "rows_by_type": {k.decode(): v for k, v in counts.items()},
                            "kept": "behavior_type == pv", "rows_kept": len(times)})


DATASETS = {
    "books": Dataset(
        name="books", files=("reviews_Books_5.json", "reviews_Books_5.json.gz"), read=read_books,
        title="Amazon Books 5-core reviews (McAuley, 2014)",
        homepage="https://jmcauley.ucsd.edu/data/amazon/",
        citation="He and McAuley, Ups and Downs: Modeling the Visual Evolution of Fashion Trends "
                 "with One-Class Collaborative Filtering, WWW 2016; McAuley et al., Image-based "
                 "Recommendations on Styles and Substitutes, SIGIR 2015",
        max_history=20),
    "gowalla": Dataset(
        name="gowalla", files=("loc-gowalla_totalCheckins.txt", "loc-gowalla_totalCheckins.txt.gz"),
        read=read_gowalla, title="Gowalla check-ins (SNAP)",
        homepage="https://snap.stanford.edu/data/loc-gowalla.html",
        citation="Cho, Myers and Leskovec, Friendship and Mobility: User Movement in "
                 "Location-Based Social Networks, KDD 2011",
        max_history=40),
    "retailrocket": Dataset(
        name="retailrocket", files=("events.csv",), read=read_retailrocket,
        title="RetailRocket e-commerce events (Kaggle)",
        homepage="https://www.kaggle.com/datasets/retailrocket/ecommerce-dataset",
        citation="Retailrocket recommender system dataset, Kaggle, 2016", max_history=20),
    "taobao": Dataset(
        name="taobao", files=("UserBehavior.csv",), read=read_taobao,
        title="Taobao UserBehavior (Alibaba, Tianchi)",
        homepage="https://tianchi.aliyun.com/dataset/dataDetail?dataId=649",
        citation="Zhu et al., Learning Tree-based Deep Model for Recommender Systems, KDD 2018",
        max_history=50),
}


def find_file(dataset: Dataset, directory: str) -> str:
  """The dataset's file in `directory`: FileNotFoundError naming it if absent, LogFormatError if
  two of its names are there (they could differ)."""
  found = [os.path.join(directory, name) for name in dataset.files
           if directory and os.path.isfile(os.path.join(directory, name))]
  if len(found) > 1:
    raise logs.LogFormatError(f"{directory}: both {found[0]} and {found[1]}; keep one")
  if not found:
    names = " or ".join(dataset.files)
    raise FileNotFoundError(
        f"{os.path.join(directory or '<no manual dir>', dataset.files[0])}: missing {names} in "
        f"the manual dir {directory or '(none given)'!r}; download {dataset.title} from "
        f"{dataset.homepage} and pass the directory holding the file as --manual_dir")
  return found[0]


def read(name: str, path: str) -> Interactions:
  """The kept rows of dataset `name`'s file at `path` (`DATASETS[name].read`)."""
  return DATASETS[name].read(path)

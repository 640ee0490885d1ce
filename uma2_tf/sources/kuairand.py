"""`kuairand`: request records from the KuaiRand logs (Kuaishou, CC BY-SA 4.0), with an unbiased
`test_random` split from the log of randomly exposed videos.

    python -m pipelines.prepare --dataset=kuairand/pure --manual_dir=~/KuaiRand-Pure/data
    python -m pipelines.train --dataset=kuairand/pure --strategy_name=ss_abc_fixed --ratio=1,0,24
    # or: registry.builder("kuairand/pure", data_dir).download_and_prepare(
    #         download_config=tfds.download.DownloadConfig(manual_dir="~/KuaiRand-Pure/data"))

KuaiRand cannot be downloaded by the builder: the user downloads it (`MANUAL_DOWNLOAD_INSTRUCTIONS`)
and passes the directory holding the CSV files as TFDS's manual dir.

**The files, per config** (the `data/` directory of each release):

- `pure`: standard logs `log_standard_4_08_to_4_21_pure.csv`, `log_standard_4_22_to_5_08_pure.csv`;
  random log `log_random_4_22_to_5_08_pure.csv`; `user_features_pure.csv`;
  `video_features_basic_pure.csv`.
- `1k`: the same names with `_1k` for `_pure`.
- `27k`: `_27k`, and each standard log in two parts: `log_standard_4_08_to_4_21_27k_part1.csv`,
  `..._part2.csv`, `log_standard_4_22_to_5_08_27k_part1.csv`, `..._part2.csv`.
- `tiny`: the `pure` names: for small files such as the test fixture `data/kuairand/`, which
  mirrors KuaiRand-Pure's `data/`.

`video_features_statistic_*.csv` is not read (daily averages over the whole month, test days
included, so using them as item features would leak the test period).

Columns read (comma-separated, one header line; `pandas.read_csv` defaults). Other columns of the
files are ignored, so a file that has them all (the real layout) and one that has only these read
the same:

- logs (standard and random, same header): `user_id` int64, `video_id` int64, `date` int64
  YYYYMMDD, `hourmin` int64 HHMM (in the real files always HH00: the hour), `time_ms` int64
  (epoch milliseconds), `is_click` int64 0/1 (the positive label), `tab` int64 0..14 (the app
  surface; read when the config groups by tab, the default).
- user features: `user_id` int64 and the categorical columns `USER_FEATURES`
  (`user_active_degree` str, the `*_range` buckets str, `is_*` flags and `onehot_feat0..17` int64;
  empty cells are missing values, id 0).
- video basic features: `video_id` int64, `author_id` int64, `video_type` str, `upload_type` str,
  `music_type` (float64 in the files: it has empty cells) and `tag` (a str such as "12,65": the
  video's categories; the first is the item's `category`).

What was checked, and where (the files cannot be downloaded here): file names, sizes and column
lists of the three releases from the dataset's own README (github.com/chongminggao/KuaiRand,
README.md: "Data Descriptions", the field tables with types and examples, e.g. `date` 20220421,
`hourmin` 400, `time_ms` 1650485801301); the exact header order
`user_id,video_id,date,hourmin,time_ms,is_click,is_like,is_follow,is_comment,is_forward,is_hate,
long_view,play_time_ms,duration_ms,profile_stay_time,comment_stay_time,is_profile_enter,is_rand,tab`
of all three Pure logs, the user header (`user_id,user_active_degree,...,register_days_range,
onehot_feat0..17`) and the video header (`video_id,author_id,video_type,upload_dt,upload_type,
visible_status,video_duration,server_width,server_height,music_id,music_type,tag`) from a public
manifest of the KuaiRand-Pure archive (member names, byte sizes, sha256 and headers) and from
several public test suites that mirror the Pure files; real rows quoted there show `hourmin` as
whole hours (1100, 1600, 1900), `time_ms` agreeing with `date`/`hourmin` in Beijing time (UTC+8),
and the float-typed video columns (`visible_status` 0.0, `music_type` 9.0, `video_duration`
87433.0); the kuairand.com page gives the download location (zenodo record 10439422) and the
license. Values of the fixture were then made up in that layout (`data/kuairand/README.md`).

**Pseudo-requests.** KuaiRand logs exposures, not requests. A pseudo-request is every exposure of
one user on one `date` in one `hourmin` window of `window_minutes` (default 60: the files' hourmin
is the hour) and, with `group_by_tab` (default), on one `tab`: a request serves one surface of the
app. Its exposures are ordered by `time_ms` (file order on ties), a video shown twice in it is kept
once at its first position and counts as clicked if either showing was clicked, and the request's
timestamp (which orders `history`) is its first `time_ms`. `tab` is then a request feature.
Request ids number all requests (standard and random) by time.

**Spaces.** Positives are clicked exposures, A the unclicked ones. KuaiRand has no recall log, so
there is no space B: records have `recalled` = `exposed` and the schema `has_recall_log = False`;
the sampler refuses strategies that ask for B (use e.g. `--ratio=1,0,24`), and nothing stands in
for B silently.

**Splits.**
- `test`: the standard-log requests of the last `test_days` (default 1) dates of the standard logs
  (2022-05-08 for the real files).
- `train`: the standard-log requests of every earlier date.
- `test_random`: the random-log requests of the test dates: exposures of videos drawn at random
  from the candidate pool and inserted in the feeds, so their clicks are free of the production
  policy's exposure bias. The trainer evaluates on it too when it is there. Random-log rows of
  other dates are not used at all (neither trained on nor counted in the catalog's popularity,
  which is the `train` split's); their count is in stats.json (`kuairand.random_rows_unused`).

The records, side files (schema.json, catalog.npz, ids.npz, stats.json) and validation are those of
every real-log builder (`uma2_tf.sources.logs`): ids are remapped to dense ones, `history` is the
user's clicks before the request (random-log clicks on the test dates included, as they happened),
each record passes `validation.RecordValidator`. stats.json has a `kuairand` section: files,
rows read, duplicates merged, users / videos without features, the test and test_random figures.

A malformed file stops the build with one `logs.LogFormatError` naming the file, the line (the
header is line 1) and the column: a missing column, a non-integer in an integer column, a click
other than 0/1, an impossible date or hourmin. A missing file raises `FileNotFoundError` naming
it and where to get it.
"""
from __future__ import annotations

import dataclasses
import datetime
import os

import numpy as np
import tensorflow_datasets as tfds
from absl import logging

from uma2_tf.sources import logs
from uma2_tf.sources import manual_files
from uma2_tf.data import schema as schema_lib

HOMEPAGE = "https://kuairand.com"
USER_FEATURES = ("user_active_degree", "is_lowactive_period", "is_live_streamer", "is_video_author",
                 "follow_user_num_range", "fans_user_num_range", "friend_user_num_range",
                 "register_days_range", *(f"onehot_feat{i}" for i in range(18)))
TAB = "tab"
# Item feature name -> the video_features_basic column it comes from.
ITEM_FEATURES = {"category": "tag", "author": "author_id", "video_type": "video_type",
                 "upload_type": "upload_type", "music_type": "music_type"}
LOG_COLUMNS = ("user_id", "video_id", "date", "hourmin", "time_ms", "is_click")
TEST_RANDOM = "test_random"


@dataclasses.dataclass(frozen=True)
class Files:
  """File names of one KuaiRand release, in its `data/` directory."""

  standard: tuple[str, ...]
  random: str
  users: str
  videos: str

  def all(self) -> tuple[str, ...]:
    return (*self.standard, self.random, self.users, self.videos)


def _files(suffix: str, parts: int = 1) -> Files:
  standard = tuple(f"log_standard_{period}_{suffix}{f'_part{p}' if parts > 1 else ''}.csv"
                   for period in ("4_08_to_4_21", "4_22_to_5_08") for p in range(1, parts + 1))
  return Files(standard=standard, random=f"log_random_4_22_to_5_08_{suffix}.csv",
               users=f"user_features_{suffix}.csv", videos=f"video_features_basic_{suffix}.csv")


FILES = {"pure": _files("pure"), "1k": _files("1k"), "27k": _files("27k", parts=2),
         "tiny": _files("pure")}
_DESCRIPTIONS = {
    "pure": "KuaiRand-Pure: 27,285 users, the 7,583 videos of the candidate pool (about 1.4M "
            "standard and 1.2M random exposures).",
    "1k": "KuaiRand-1K: 1,000 users and every video they saw (4.4M videos, 11.7M standard "
          "exposures).",
    "27k": "KuaiRand-27K: 27,285 users, 32M videos, 322M standard exposures (tens of GB of "
           "memory).",
    "tiny": "For tests: files in KuaiRand-Pure's layout such as the fixture data/kuairand/.",
}


class KuairandConfig(tfds.core.BuilderConfig):
  """A KuaiRand release's file names and how exposures become requests and splits.

  Attributes:
    files: the release's file names.
    test_days: the last this many dates of the standard logs are the test split.
    window_minutes: length of a pseudo-request's time window within a date (divides 24 * 60).
    group_by_tab: a pseudo-request holds one `tab` (and `tab` is a request feature).
    user_features: columns of the user-features file used as categorical user features.
  """

  def __init__(self, *, files: Files, test_days: int = 1, window_minutes: int = 60,
               group_by_tab: bool = True, user_features: tuple[str, ...] = USER_FEATURES, **kwargs):
    super().__init__(**kwargs)
    if test_days < 1:
      raise ValueError(f"test_days must be >= 1, got {test_days}")
    if window_minutes < 1 or (24 * 60) % window_minutes:
      raise ValueError(f"window_minutes must divide a day (1440 minutes), got {window_minutes}")
    self.files = files
    self.test_days = test_days
    self.window_minutes = window_minutes
    self.group_by_tab = group_by_tab
    self.user_features = tuple(user_features)

  @property
  def request_features(self) -> tuple[str, ...]:
    """The records' categorical user fields: the user features, then `tab` when grouped by tab."""
    return (*self.user_features, *((TAB,) if self.group_by_tab else ()))


class Kuairand(tfds.core.GeneratorBasedBuilder):
  """KuaiRand exposure logs as request records, with an unbiased `test_random` split."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "First release."}
  BUILDER_CONFIGS = [KuairandConfig(name=name, description=_DESCRIPTIONS[name], files=FILES[name])
                     for name in FILES]
  MANUAL_DOWNLOAD_INSTRUCTIONS = """\
  KuaiRand (CC BY-SA 4.0) is at https://kuairand.com, files on https://zenodo.org/records/10439422.
  Download the release of the config (KuaiRand-Pure for `pure`, KuaiRand-1K for `1k`, KuaiRand-27K
  for `27k`), unpack it and pass its `data` directory (the one holding
  log_standard_*.csv, log_random_*.csv, user_features_*.csv and video_features_basic_*.csv) as the
  manual dir:
  `python -m pipelines.prepare --dataset=kuairand/pure --manual_dir=<dir>/KuaiRand-Pure/data`.
  """

  def _info(self) -> tfds.core.DatasetInfo:
    # Field names only; the vocabulary sizes come from the files and go to schema.json at build
    # time.
    schema = logs.declared_schema(self.builder_config.request_features, has_recall_log=False)
    return tfds.core.DatasetInfo(
        builder=self, description=__doc__.split("\n", 1)[0],
        features=schema_lib.tfds_features(schema), homepage=HOMEPAGE,
        citation="Gao et al., KuaiRand: An Unbiased Sequential Recommendation Dataset with "
                 "Randomly Exposed Videos, CIKM 2022, https://doi.org/10.1145/3511808.3557624")

  def _split_generators(self, dl_manager):
    config = self.builder_config
    source = f"kuairand/{config.name}"
    directory = manual_directory(dl_manager, config.files)
    kuairand = read(directory, config, source)
    splits = dict(kuairand.splits)
    if kuairand.random_request_ids:
      splits[TEST_RANDOM] = []  # its requests are named by the table's `split` column
    else:
      logging.warning("%s: the random log has no row on the test dates %s: no %s split", source,
                      kuairand.splits["test"], TEST_RANDOM)
    generators = logs.write(str(self.data_dir), kuairand.tables, splits, source=source,
                            extra_stats={"kuairand": kuairand.info})
    return {split: self._generate_examples(examples) for split, examples in generators.items()}

  def _generate_examples(self, examples):
    yield from examples


@dataclasses.dataclass(frozen=True)
class KuaiRandTables:
  """What `read` makes of the files: the log, its date splits, and which test requests are
  random."""

  tables: logs.LogTables
  splits: dict
  random_request_ids: frozenset
  info: dict


def manual_directory(dl_manager, files: Files) -> str:
  """The manual dir, or one FileNotFoundError naming the files missing and where to get them."""
  directory = manual_files.manual_dir(dl_manager)
  check_files(directory, files)
  return directory


def check_files(directory: str, files: Files) -> None:
  missing = [name for name in files.all() if not os.path.isfile(os.path.join(directory, name))]
  if missing:
    raise FileNotFoundError(
        f"{os.path.join(directory or '<no manual dir>', missing[0])}: missing KuaiRand file"
        f"{'s ' + str(missing) if len(missing) > 1 else ''}; download the release from "
        f"https://zenodo.org/records/10439422 (see https://kuairand.com), unpack it and pass its "
        f"data directory as --manual_dir")


def read(directory: str, config: KuairandConfig, source: str = "kuairand") -> KuaiRandTables:
  """The KuaiRand files in `directory` as `logs.LogTables` plus the splits (module docstring)."""
  import pandas as pd

  files = config.files
  check_files(directory, files)
  columns = (*LOG_COLUMNS, *((TAB,) if config.group_by_tab else ()))
  standard = pd.concat([read_log(os.path.join(directory, name), columns)
                        for name in files.standard], ignore_index=True)
  if not len(standard):
    raise logs.LogFormatError(f"{source}: the standard logs {list(files.standard)} have no row")
  random = read_log(os.path.join(directory, files.random), columns)
  dates = sorted(standard["date"].unique())
  if len(dates) <= config.test_days:
    raise logs.LogFormatError(
        f"{source}: the standard logs span {len(dates)} date(s) ({[_iso(d) for d in dates]}); "
        f"test_days={config.test_days} leaves none to train on")
  test_dates = dates[-config.test_days:]
  random_rows = len(random)
  random = random[random["date"].isin(test_dates)]

  standard_requests, standard_merged = pseudo_requests(standard, config)
  random_requests, random_merged = pseudo_requests(random, config)
  standard_requests["is_random"] = False
  random_requests["is_random"] = True
  requests = pd.concat([standard_requests, random_requests], ignore_index=True)
  requests = requests.sort_values(["timestamp", "user_id", "is_random", "date"], kind="stable",
                                  ignore_index=True)
  requests.insert(0, "request_id", np.arange(1, len(requests) + 1, dtype=np.int64))
  random_ids = frozenset(requests.loc[requests["is_random"], "request_id"].tolist())
  # The random requests share their dates with `test`: the `split` column sends them to their own.
  requests[logs.SPLIT] = np.where(requests["is_random"], TEST_RANDOM, None)

  users = read_users(os.path.join(directory, files.users), config.user_features)
  users_seen = requests["user_id"].unique()
  requests = requests.merge(users, on="user_id", how="left", validate="many_to_one")
  for feature in config.user_features:
    requests[feature] = _categorical(requests[feature])
  if config.group_by_tab:
    requests[TAB] = _categorical(requests[TAB])
  videos_seen = pd.Index(np.unique(np.concatenate(
      [standard["video_id"].to_numpy(), random["video_id"].to_numpy()])), name="item_id")
  items, video_info = read_videos(os.path.join(directory, files.videos), videos_seen)

  tables = logs.LogTables(
      requests=requests[["request_id", "timestamp", "date", "user_id", *config.request_features,
                         "exposed", "clicked", logs.SPLIT]],
      items=items, user_features=config.request_features, item_features=tuple(ITEM_FEATURES))
  train_dates = [_iso(d) for d in dates[:-config.test_days]]
  info = {
      "files": list(files.all()),
      "standard_rows": int(len(standard)), "random_rows": int(random_rows),
      "random_rows_used": int(len(random)), "random_rows_unused": int(random_rows - len(random)),
      "duplicate_exposures_merged": int(standard_merged + random_merged),
      "pseudo_request": {"window_minutes": config.window_minutes,
                         "group_by_tab": config.group_by_tab,
                         "key": ["user_id", "date", "hourmin window",
                                 *([TAB] if config.group_by_tab else [])]},
      "test_days": config.test_days,
      "users_without_features": int(len(set(users_seen.tolist()) - set(users["user_id"].tolist()))),
      **video_info,
  }
  return KuaiRandTables(tables=tables,
                        splits={"train": train_dates, "test": [_iso(d) for d in test_dates]},
                        random_request_ids=random_ids, info=info)


def read_log(path: str, columns=LOG_COLUMNS):
  """One log file's `columns`, checked: integers, 0/1 clicks, real dates and hourmins."""
  frame = _read_csv(path, columns)
  for column in columns:
    _require_int(frame, column, path)
  _check_values(frame, "is_click", path, frame["is_click"].isin((0, 1)), "0 or 1")
  distinct = frame["date"].unique()
  bad = {d for d in distinct.tolist() if _parse_date(d) is None}
  _check_values(frame, "date", path, ~frame["date"].isin(bad), "a date YYYYMMDD")
  hourmin = frame["hourmin"]
  ok = (hourmin >= 0) & (hourmin // 100 <= 23) & (hourmin % 100 <= 59)
  _check_values(frame, "hourmin", path, ok, "a time of day HHMM (0..2359, minutes < 60)")
  if TAB in frame.columns:
    _check_values(frame, TAB, path, frame[TAB] >= 0, "a tab number >= 0")
  frame["date"] = frame["date"].astype(np.int64)
  return frame


def pseudo_requests(log, config: KuairandConfig):
  """Exposures -> one row per pseudo-request (module docstring): user_id, date (YYYY-MM-DD),
  timestamp, [tab], exposed, clicked. Also returns how many repeated exposures were merged."""
  import pandas as pd

  keys = ["user_id", "date", "window", *((TAB,) if config.group_by_tab else ())]
  out_columns = ["user_id", "date", "timestamp", *((TAB,) if config.group_by_tab else ()),
                 "exposed", "clicked"]
  if not len(log):
    dtypes = {"user_id": np.int64, "timestamp": np.int64, TAB: np.int64}
    return pd.DataFrame({c: pd.Series(dtype=dtypes.get(c, object)) for c in out_columns}), 0
  log = log.assign(
      window=(log["hourmin"] // 100 * 60 + log["hourmin"] % 100) // config.window_minutes,
      row=np.arange(len(log)))
  log = log.sort_values([*keys, "time_ms", "row"], kind="stable")
  log["is_click"] = log.groupby([*keys, "video_id"], sort=False)["is_click"].transform("max")
  repeated = log.duplicated([*keys, "video_id"])
  log = log[~repeated]
  grouped = log.groupby(keys, sort=False)
  requests = grouped.agg(timestamp=("time_ms", "min"), exposed=("video_id", list),
                         clicked=("is_click", list)).reset_index()
  requests["date"] = [_iso(d) for d in requests["date"].tolist()]
  return requests[out_columns], int(repeated.sum())


def read_users(path: str, features):
  """user_id + the feature columns, one row per user (the first where the file repeats one)."""
  frame = _read_csv(path, ("user_id", *features))
  _require_int(frame, "user_id", path)
  return frame.drop_duplicates("user_id", keep="first")


def read_videos(path: str, videos_seen):
  """The items table over `videos_seen` (the videos of the logs used) with `ITEM_FEATURES`."""
  import pandas as pd

  frame = _read_csv(path, ("video_id", *ITEM_FEATURES.values()))
  _require_int(frame, "video_id", path)
  repeated = int(frame["video_id"].duplicated().sum())
  frame = frame.drop_duplicates("video_id", keep="first").set_index("video_id")
  without_features = int((~videos_seen.isin(frame.index)).sum())
  frame = frame.reindex(videos_seen)
  tag = frame["tag"]
  first_tag = tag.where(tag.isna(), tag.astype(str).str.split(",").str[0].str.strip())
  items = pd.DataFrame({"item_id": videos_seen.to_numpy(np.int64)})
  for name, column in ITEM_FEATURES.items():
    items[name] = _categorical(first_tag if column == "tag" else frame[column]).to_numpy()
  info = {"videos": int(len(videos_seen)),
          "videos_without_features": without_features,
          "repeated_video_rows": repeated}
  return items, info


def _read_csv(path: str, columns):
  import pandas as pd

  try:
    header = pd.read_csv(path, nrows=0).columns
  except Exception as e:  # pandas raises many types for unreadable files.
    raise logs.LogFormatError(f"{path}: cannot be read as CSV: {e}") from None
  missing = [c for c in columns if c not in header]
  if missing:
    raise logs.LogFormatError(f"{path}: missing column{'s' if len(missing) > 1 else ''} "
                              f"{', '.join(repr(c) for c in missing)}; the file has {list(header)}")
  try:
    return pd.read_csv(path, usecols=list(columns), low_memory=False)
  except Exception as e:
    raise logs.LogFormatError(f"{path}: cannot be read as CSV: {e}") from None


def _require_int(frame, column: str, path: str) -> None:
  import pandas as pd

  values = frame[column]
  if pd.api.types.is_integer_dtype(values):
    return
  numeric = pd.to_numeric(values, errors="coerce")
  bad = numeric.isna() | (numeric != numeric.round())
  if not bad.any():  # e.g. "3.0" in a float column: integral, but the files write ints.
    bad = pd.Series(True, index=values.index)
  row = int(np.flatnonzero(bad.to_numpy())[0])
  value = values.iloc[row]
  value = value.item() if isinstance(value, np.generic) else value
  shown = "an empty cell" if isinstance(value, float) and np.isnan(value) else repr(value)
  raise logs.LogFormatError(f"{path}: line {row + 2}: column '{column}' must hold integers "
                            f"(int64 in KuaiRand), got {shown}")


def _check_values(frame, column: str, path: str, ok, expected: str) -> None:
  ok = np.asarray(ok, bool)
  if ok.all():
    return
  row = int(np.flatnonzero(~ok)[0])
  value = frame[column].iloc[row]
  value = value.item() if isinstance(value, np.generic) else value
  raise logs.LogFormatError(f"{path}: line {row + 2}: column '{column}' must be {expected}, "
                            f"got {value!r}")


def _parse_date(value) -> datetime.date | None:
  try:
    return datetime.datetime.strptime(str(int(value)), "%Y%m%d").date()
  except ValueError:
    return None


def _iso(value) -> str:
  return _parse_date(value).isoformat()


def _categorical(values):
  """Raw categorical values for `logs.write`: ints (integral floats too), strs, None for missing."""
  import pandas as pd

  values = pd.Series(values)
  if pd.api.types.is_float_dtype(values):
    present = values.dropna()
    if (present == present.round()).all():
      values = values.astype("Int64")
  values = values.astype(object)
  return values.where(values.notna(), None)

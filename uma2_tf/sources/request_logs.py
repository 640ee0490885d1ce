"""`request_logs`: a company's own serving logs, as CSV or Parquet files, in one documented layout.

    python -m pipelines.prepare --dataset=request_logs/mylogs --manual_dir=/path/to/logs
    python -m pipelines.train --dataset=request_logs/mylogs

The manual dir holds one of two layouts, never both (each file `.csv` or `.parquet`, not both):

**One row per request** — `requests.csv`:

| column           | type            | meaning                                                     |
|------------------|-----------------|-------------------------------------------------------------|
| request_id       | int             | unique                                                      |
| timestamp        | int             | any monotone unit; orders a user's requests (for `history`) |
| date             | str YYYY-MM-DD  | the day                                                     |
| user_id          | int or str      | raw id                                                      |
| exposed          | list            | item ids shown, in position order                           |
| clicked          | list of 0/1     | aligned with `exposed`                                      |
| recalled         | list (optional) | the whole recall set, containing `exposed`                  |
| recalled_stage   | list (optional) | the last stage each recalled item reached                   |
| any other column | int or str      | a categorical user feature (age, gender, city, ...)         |

Without `recalled` the log has no space B; `recalled_stage` is aligned with `recalled`. In CSV
a list is one cell of space-separated values (`"17 4 993"`); in Parquet a list column.

**An exposure table plus a recall table** joined on `request_id` — `exposures.csv`, one row per
exposed item: `request_id, timestamp, date, user_id, item_id, position, clicked` and the user
feature columns (the same on every row of a request); `recalls.csv` (optional), one row per
recalled item: `request_id, item_id` and optionally `stage`. A request in the exposure table that
has no row in the recall table is an error (its recall set is unknown), not an empty recall set; so
is a recall row whose request is not in the exposure table.

Both layouts need `items.csv`: `item_id` and one column per categorical item feature.

Every table's header names each column once (no empty name, no repeated one).

Stages: `stages.txt` (optional) lists the stage names in pipeline order, one per line (an empty
file is an error); without it they are taken in order of first appearance. Splits: `splits.json`
(optional) `{"train": ["2024-01-01", ...], "test": ["2024-01-08"]}`: `train` and `test`, and
optionally `test_random` (randomly exposed items, evaluated too), each date in one split and each
split holding a date of the logs; without it the last date is `test` and every earlier one `train`.

Values are read as written: only an empty cell is missing; an id or feature column is one type,
integers if every value in it is a canonical int64 literal (`0`, `7`, `-12`; not `034`, `+7`,
`-0`), else strings as written (so ids `034` and `34` stay two ids; item ids `v1` and `7` in
items.csv match `v1` and `7` in the logs, and `034` in a log is no item of int item ids); a
Parquet list holds no null. `request_id`, `timestamp` and `position` take any integer literal.
The records, side files and validation are those of every real-log builder
(`uma2_tf.sources.logs`): raw ids are remapped to dense ones (their raw values in `ids.npz`), each
user's `history` is their clicks at earlier timestamps.

A malformed file stops the build with one error naming the file, the data row (1-based, header
excluded; a CSV's line too: the one the row starts on) or request, the column, the raw value (its
first 80 characters) and what was expected; nothing is written. Besides the layout, the build
refuses:
  - a split (train, test) without any click (nothing to train or evaluate on);
  - a list in a column that is not a list column above (a misspelt `recalld` would silently be a
    user feature): a Parquet list, or a CSV cell of space-separated item ids, clicks or stage
    names, or any space-separated values in a column named like a list column (a categorical
    value may hold spaces: `new york`);
and, unless skipped with `--skip=<rule>,...` (`logs.REQUEST_RULES`), requests that break
  - `out_of_split`: a date in no split of splits.json;
  - `date_mismatch`: within one user, requests in timestamp order (ties by request_id: the order
    `history` is built in) must have non-decreasing dates, else a day's history holds a later
    day's clicks; the request dated before an earlier-timestamped one of its user breaks it.
Skipped requests are left out and counted per rule in the dataset's `validation.json`.

`source.json` records the sha256 of every log file (and `--skip`): preparing the same name again
after a file changed is an error naming the file (`--overwrite` rebuilds).
"""
from __future__ import annotations

import json
import os

import tensorflow_datasets as tfds

from uma2_tf import atomic_files
from uma2_tf.sources import logs
from uma2_tf.sources import manual_files
from uma2_tf.sources.request_logs_files import FORMATS, read_splits, read_tables
from uma2_tf.sources import movielens
from uma2_tf.data import schema as schema_lib

# The files of a log (either format); their digests tell a rebuild from stale data.
TABLES = ("items", "requests", "exposures", "recalls")
SIDE_FILES = ("stages.txt", "splits.json")
SOURCE_FILE = "source.json"


class RequestLogsConfig(tfds.core.BuilderConfig):
  """The field names of one company's logs (vocabulary sizes come from the files at build time)."""

  def __init__(self, *, user_features=(), stages=(), has_recall_log=True, skip=(), read_from=None,
               **kwargs):
    super().__init__(**kwargs)
    self.user_features = tuple(user_features)
    self.stages = tuple(stages)
    self.has_recall_log = has_recall_log
    # `logs.REQUEST_RULES` whose breaking requests are left out instead of stopping the build.
    self.skip = tuple(sorted(skip))
    # (directory, file digests, LogTables) the fields were read from (`config_for`): the build
    # reuses the tables instead of reading the whole log a second time.
    self.read_from = read_from


class RequestLogs(tfds.core.GeneratorBasedBuilder):
  """Request records from a company's own CSV/Parquet logs (see the module docstring)."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "First release."}
  BUILDER_CONFIGS = [RequestLogsConfig(name="default", description="Logs without user features or "
                                       "stages; `config_for` describes any other log.")]
  MANUAL_DOWNLOAD_INSTRUCTIONS = ("Put requests.csv (or exposures.csv [+ recalls.csv]) and "
                                  "items.csv in the manual dir; layout in "
                                  "uma2_tf/sources/request_logs.py.")

  def _info(self) -> tfds.core.DatasetInfo:
    config = self.builder_config
    return tfds.core.DatasetInfo(
        builder=self, description=__doc__.split("\n", 1)[0],
        features=schema_lib.tfds_features(logs.declared_schema(
            config.user_features, config.stages, config.has_recall_log)))

  def _split_generators(self, dl_manager):
    directory = manual_files.manual_dir(dl_manager)
    config = self.builder_config
    read_dir, digests, tables = config.read_from or (None, None, None)
    if read_dir is None or os.path.realpath(read_dir) != os.path.realpath(directory):
      digests = source_digests(directory)  # before reading: a file changed meanwhile looks stale
      tables = read_tables(directory)
    declared = (config.user_features, config.stages, config.has_recall_log)
    if declared != (tables.user_features, tables.stages, tables.has_recall_log):
      raise logs.LogFormatError(
          f"{directory}: the files have user features {tables.user_features}, "
          f"stages {tables.stages}, recall log {tables.has_recall_log}; the config {config.name!r} "
          f"declares {declared} (build it with `python -m pipelines.prepare`, which reads them "
          "from the files)")
    generators = logs.write(str(self.data_dir), tables, read_splits(directory, tables),
                            source=f"request_logs/{config.name}", strict=True, skip=config.skip)
    atomic_files.atomic_write_text(
        os.path.join(str(self.data_dir), SOURCE_FILE),
        json.dumps({"manual_dir": os.path.abspath(directory), "files": digests,
                    "skip": list(config.skip)}, indent=2))
    return {split: self._generate_examples(examples) for split, examples in generators.items()}

  def _generate_examples(self, examples):
    yield from examples


def config_for(name: str, directory: str, skip=()) -> RequestLogsConfig:
  """The builder config describing the logs in `directory` (their fields), named `name`."""
  digests = source_digests(directory)
  tables = read_tables(directory)
  return RequestLogsConfig(name=name, description=f"Request logs from {directory}",
                           user_features=tables.user_features, stages=tables.stages,
                           has_recall_log=tables.has_recall_log, skip=skip,
                           read_from=(directory, digests, tables))


def source_digests(directory: str) -> dict[str, str]:
  """File name -> sha256 of every log file in `directory` (tables and side files)."""
  names = [stem + ext for stem in TABLES for ext in FORMATS] + list(SIDE_FILES)
  return {name: movielens.file_digest(os.path.join(directory, name)) for name in sorted(names)
          if os.path.isfile(os.path.join(directory, name))}


def changed_sources(built_dir: str, directory: str, skip=()) -> list[str] | None:
  """What differs between the files (and `skip`) a dataset in `built_dir` was built from and those
  in `directory` now ([] if nothing); None if the dataset recorded no digests."""
  path = os.path.join(built_dir, SOURCE_FILE)
  if not os.path.exists(path):
    return None
  with open(path) as f:
    built = json.load(f)
  now, then = source_digests(directory), built["files"]
  changed = [f"{name} (changed)" for name in sorted(set(now) & set(then))
             if now[name] != then[name]]
  changed += [f"{name} (new)" for name in sorted(set(now) - set(then))]
  changed += [f"{name} (gone)" for name in sorted(set(then) - set(now))]
  if sorted(skip) != built["skip"]:
    changed.append(f"--skip (was {','.join(built['skip']) or 'none'})")
  return changed

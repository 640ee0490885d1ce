"""`request_logs`: a company's own serving logs, as CSV or Parquet files, in one documented layout.

    python -m pipelines.prepare --dataset=request_logs/mylogs --manual_dir=/path/to/logs
    python -m pipelines.train --dataset=request_logs/mylogs

The manual dir holds one of two layouts (`.csv` or `.parquet` for every file, not mixed):

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
has no row in the recall table is an error (its recall set is unknown), not an empty recall set.

Both layouts need `items.csv`: `item_id` and one column per categorical item feature.

Stages: `stages.txt` (optional) lists the stage names in pipeline order, one per line; without it
they are taken in order of first appearance. Splits: `splits.json` (optional)
`{"train": ["2024-01-01", ...], "test": ["2024-01-08"]}`; without it the last date is `test` and
every earlier one `train`.

The records, side files and validation are those of every real-log builder (`uma2_tf.sources.logs`):
raw ids are remapped to dense ones (their raw values in `ids.npz`), each user's `history` is their
clicks before the request, and a malformed file stops the build with one error naming the file,
the request or row, and the column.
"""
from __future__ import annotations

import json
import os

import numpy as np
import tensorflow_datasets as tfds

from uma2_tf.sources import logs
from uma2_tf.sources import manual_files
from uma2_tf.data import schema as schema_lib

FORMATS = (".csv", ".parquet")
LIST_COLUMNS = ("exposed", "clicked", "recalled", "recalled_stage")
EXPOSURE_COLUMNS = ("request_id", "timestamp", "date", "user_id", "item_id", "position", "clicked")


class RequestLogsConfig(tfds.core.BuilderConfig):
  """The field names of one company's logs (vocabulary sizes come from the files at build time)."""

  def __init__(self, *, user_features=(), stages=(), has_recall_log=True, read_from=None, **kwargs):
    super().__init__(**kwargs)
    self.user_features = tuple(user_features)
    self.stages = tuple(stages)
    self.has_recall_log = has_recall_log
    # (directory, LogTables) the fields were read from (`config_for`): the build reuses the tables
    # instead of reading the whole log a second time.
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
    read_dir, tables = config.read_from or (None, None)
    if read_dir is None or os.path.realpath(read_dir) != os.path.realpath(directory):
      tables = read_tables(directory)
    declared = (config.user_features, config.stages, config.has_recall_log)
    if declared != (tables.user_features, tables.stages, tables.has_recall_log):
      raise logs.LogFormatError(
          f"{directory}: the files have user features {tables.user_features}, "
          f"stages {tables.stages}, recall log {tables.has_recall_log}; the config {config.name!r} "
          f"declares {declared} (build it with `python -m pipelines.prepare`, which reads them "
          "from the files)")
    generators = logs.write(str(self.data_dir), tables, read_splits(directory, tables),
                            source=f"request_logs/{config.name}")
    return {split: self._generate_examples(examples) for split, examples in generators.items()}

  def _generate_examples(self, examples):
    yield from examples


def config_for(name: str, directory: str) -> RequestLogsConfig:
  """The builder config describing the logs in `directory` (their fields), named `name`."""
  tables = read_tables(directory)
  return RequestLogsConfig(name=name, description=f"Request logs from {directory}",
                           user_features=tables.user_features, stages=tables.stages,
                           has_recall_log=tables.has_recall_log, read_from=(directory, tables))


def _find(directory: str, stem: str, required: bool = True) -> str | None:
  found = [os.path.join(directory, stem + ext) for ext in FORMATS
           if os.path.exists(os.path.join(directory, stem + ext))]
  if len(found) > 1:
    raise logs.LogFormatError(f"{directory}: both {found[0]} and {found[1]}; keep one format")
  if not found and required:
    raise logs.LogFormatError(f"{directory}: no {stem}.csv or {stem}.parquet")
  return found[0] if found else None


def _read(path: str):
  import pandas as pd

  try:
    if path.endswith(".parquet"):
      return pd.read_parquet(path)
    return pd.read_csv(path, dtype={"date": str}, keep_default_na=True)
  except Exception as e:  # pandas raises many types for unreadable files
    raise logs.LogFormatError(f"{path}: cannot be read as {os.path.splitext(path)[1][1:]}: "
                              f"{e}") from None


def _cell_list(value, path: str, column: str, row: int) -> list:
  """A list cell: a Parquet list, or a CSV cell of space-separated values (ints where they are)."""
  if isinstance(value, (list, tuple, np.ndarray)):
    return [v.item() if isinstance(v, np.generic) else v for v in value]
  if isinstance(value, float) and np.isnan(value):
    return []
  if not isinstance(value, str):
    raise logs.LogFormatError(f"{path}: row {row}: column '{column}' must be a list "
                              f"(space-separated values), got {value!r}")
  return [int(v) if v.lstrip("-").isdigit() else v for v in value.split()]


def _int_column(frame, column: str, path: str):
  import pandas as pd

  if not pd.api.types.is_integer_dtype(frame[column]):
    bad = frame[column][pd.to_numeric(frame[column], errors="coerce").isna()]
    shown = bad.iloc[0] if len(bad) else frame[column].iloc[0]
    raise logs.LogFormatError(f"{path}: column '{column}' must hold integers, got {shown!r} "
                              f"(dtype {frame[column].dtype})")


def read_tables(directory: str) -> logs.LogTables:
  """The logs in `directory` as `logs.LogTables` (either layout)."""
  if not os.path.isdir(directory):
    raise logs.LogFormatError(f"{directory} is not a directory (the manual dir with the log files)")
  items_path = _find(directory, "items")
  items = _read(items_path)
  if "item_id" not in items.columns:
    raise logs.LogFormatError(f"{items_path}: missing column 'item_id'; "
                              f"it has {list(items.columns)}")
  requests_path = _find(directory, "requests", required=False)
  if requests_path is not None:
    requests = _read(requests_path)
    for column in ("request_id", "timestamp"):
      if column in requests.columns:
        _int_column(requests, column, requests_path)
    for column in LIST_COLUMNS:
      if column in requests.columns:
        requests[column] = [_cell_list(v, requests_path, column, i)
                            for i, v in enumerate(requests[column])]
  else:
    requests = _join_exposures(directory)
  user_features = tuple(c for c in requests.columns
                        if c not in (*logs.REQUEST_COLUMNS, logs.RECALLED, logs.RECALLED_STAGE))
  stages = ()
  if logs.RECALLED_STAGE in requests.columns:
    stages = _read_stages(directory, requests[logs.RECALLED_STAGE])
  return logs.LogTables(requests=requests, items=items, user_features=user_features,
                        item_features=tuple(c for c in items.columns if c != "item_id"),
                        stages=stages)


def _join_exposures(directory: str):
  """One row per request from the exposure table (+ the recall table)."""
  import pandas as pd

  path = _find(directory, "exposures")
  exposures = _read(path)
  missing = [c for c in EXPOSURE_COLUMNS if c not in exposures.columns]
  if missing:
    raise logs.LogFormatError(f"{path}: missing column(s) {missing}; "
                              f"it has {list(exposures.columns)}")
  for column in ("request_id", "timestamp", "position", "clicked"):
    _int_column(exposures, column, path)
  user_features = [c for c in exposures.columns if c not in EXPOSURE_COLUMNS]
  per_request = ["timestamp", "date", "user_id", *user_features]
  varying = exposures.groupby("request_id")[per_request].nunique(dropna=False).max()
  varying = [c for c in per_request if varying[c] > 1]
  if varying:
    rid = exposures.groupby("request_id")[varying[0]].nunique().idxmax()
    raise logs.LogFormatError(f"{path}: request {rid}: column '{varying[0]}' differs between its "
                              "rows (it must be the same on every row of a request)")
  exposures = exposures.sort_values(["request_id", "position"], kind="stable")
  grouped = exposures.groupby("request_id", sort=True)
  requests = grouped[per_request].first().reset_index()
  requests["exposed"] = grouped["item_id"].agg(list).to_numpy()
  requests["clicked"] = grouped["clicked"].agg(list).to_numpy()
  recalls_path = _find(directory, "recalls", required=False)
  if recalls_path is not None:
    recalls = _read(recalls_path)
    missing = [c for c in ("request_id", "item_id") if c not in recalls.columns]
    if missing:
      raise logs.LogFormatError(f"{recalls_path}: missing column(s) {missing}; "
                                f"it has {list(recalls.columns)}")
    _int_column(recalls, "request_id", recalls_path)
    by_request = recalls.groupby("request_id", sort=True)
    absent = sorted(set(requests["request_id"]) - set(by_request.groups))
    if absent:
      raise logs.LogFormatError(f"{recalls_path}: request {absent[0]} is in "
                                f"{os.path.basename(path)} but has no row here "
                                "(its recall set is unknown)")
    recalled = by_request["item_id"].agg(list)
    requests["recalled"] = [recalled[r] for r in requests["request_id"]]
    if "stage" in recalls.columns:
      stage = by_request["stage"].agg(list)
      requests["recalled_stage"] = [[str(s) for s in stage[r]] for r in requests["request_id"]]
  return pd.DataFrame(requests)


def _read_stages(directory: str, column) -> tuple[str, ...]:
  path = os.path.join(directory, "stages.txt")
  if os.path.exists(path):
    with open(path) as f:
      return tuple(line.strip() for line in f if line.strip())
  seen = []
  for stages in column:
    for stage in stages:
      if stage not in seen:
        seen.append(stage)
  return tuple(str(s) for s in seen)


def read_splits(directory: str, tables: logs.LogTables) -> dict:
  path = os.path.join(directory, "splits.json")
  if os.path.exists(path):
    with open(path) as f:
      try:
        splits = json.load(f)
      except json.JSONDecodeError as e:
        raise logs.LogFormatError(f"{path}: not JSON ({e})") from None
    if not isinstance(splits, dict) or not all(isinstance(v, list) for v in splits.values()):
      raise logs.LogFormatError(f"{path}: expected {{split: [YYYY-MM-DD, ...]}}, got {splits!r}")
    return splits
  dates = sorted({d for d in tables.requests["date"] if isinstance(d, str)})
  if len(dates) < 2:
    raise logs.LogFormatError(f"{directory}: the logs span {len(dates)} date(s); the default "
                              "split needs at least 2 (the last is the test day), or give "
                              "splits.json")
  return {"train": dates[:-1], "test": dates[-1:]}

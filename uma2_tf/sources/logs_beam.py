"""`logs.write` as an Apache Beam pipeline: the same records and side files, for logs one machine
cannot hold (RecFlow's 1.9B stage samples).

Needs the `[beam]` extra (`pip install -e '.[beam]'`). A TFDS builder whose `_split_generators`
takes the `pipeline` argument reads its files into two PCollections in the canonical layout of
`uma2_tf.sources.logs` and hands them to `write`:

```python
from uma2_tf.sources import logs_beam

def _split_generators(self, dl_manager, pipeline):
  requests = ...  # PCollection of dicts, one per request: the canonical requests table's columns
                  # (request_id, timestamp, date, user_id, <user features>, exposed, clicked,
                  #  [recalled, [recalled_stage]], [split]), lists as lists or numpy arrays
  items = ...     # PCollection of (order, {column: numpy array}): batches of the canonical
                  # items table (item_id + feature columns), e.g. one per file read. An item may
                  # be in several batches: its first row in the batch of the smallest `order`
                  # (distinct per batch) gives its features, as the in-memory path keeps an
                  # item's first row
  return logs_beam.write(pipeline, str(self.data_dir), requests, items,
                         splits={"train": [...], "test": [...]}, source="recflow/default",
                         user_features=("age",), item_features=("author_id",),
                         stages=("prerank", "rank"), has_recall_log=True)
  # -> {split: PCollection of (request_id, record)}; schema.json, catalog.npz, ids.npz and
  #    stats.json are written into the directory by the pipeline's last step.
```

The records and side files equal `logs.write`'s on the same log (tests/test_logs_beam.py builds
RecFlow's fixture both ways and compares). How the work is spread over workers:
- Item batches are cut into `ITEM_BUCKETS` buckets by item id and each bucket deduplicated where it
  is grouped (pandas, vectorised): elements are batches, not items. (Batches travel as dicts of
  numpy columns: Beam's coder would encode a DataFrame as the list of its column names.)
- Vocabularies (users, items, feature values, days) are gathered once and broadcast as one side
  input; integer ids are held as sorted numpy arrays (80 MB for 10M item ids), looked up with
  `searchsorted`.
- Records are built per user (GroupByKey on the raw user id): a record's history needs only the
  same user's earlier requests. Each record is validated (`validation.RecordValidator`, policy
  "error") and each request row checked (`logs.check_request`) where it is built.
- Train popularity and the per-split counts are summed per user, then globally.
- One final step writes the side files (tf.io.gfile: a gs:// data dir works).
A malformed log fails the pipeline with `logs.LogFormatError` (Beam appends the step's name); TFDS
then leaves no dataset behind, as with the in-memory path.
"""
from __future__ import annotations

import dataclasses
from typing import Iterable, Mapping, Sequence

import apache_beam as beam
import numpy as np
import pandas as pd

from uma2_tf.data import validation
from uma2_tf.sources import logs
from uma2_tf.data import schema as schema_lib


def pipeline_options(text: str, flag: str = "pipeline options"):
  """Text like `runner=DirectRunner,direct_num_workers=2` (as `tfds build --beam_pipeline_options`
  takes it) -> PipelineOptions. Built from `text` alone, never from sys.argv (which holds the
  program's own flags); an option Beam does not know is refused (Beam only warns, and a misspelt
  runner would then run locally)."""
  from apache_beam.options.pipeline_options import PipelineOptions

  pairs = [p.strip() for p in text.split(",") if p.strip()]
  bad = [p for p in pairs if "=" not in p or not p.split("=", 1)[0]]
  if not pairs or bad:
    raise ValueError(f"{flag} must be comma-separated key=value pairs (e.g. runner=DirectRunner), "
                     f"got {text!r}")
  options = PipelineOptions(flags=[f"--{p}" for p in pairs])
  unknown = sorted(set(options.get_all_options(retain_unknown_options=True))
                   - set(options.get_all_options()))
  if unknown:
    raise ValueError(f"{flag}: Beam has no option(s) {unknown}")
  return options


class Vocabulary:
  """Raw value -> dense id 1..n, in `logs._vocabulary`'s order; 0 for a missing or unknown value.

  All-integer values are held as one sorted int64 array (compact to broadcast, `searchsorted` to
  look up); anything else as a dict.
  """

  def __init__(self, values: Iterable):
    if isinstance(values, np.ndarray) and values.dtype.kind in "iu":
      self._sorted, self._ids = np.unique(values).astype(np.int64), None
      return
    distinct = {v for v in values if not logs._is_missing(v)}
    if all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in distinct):
      self._sorted = np.array(sorted(int(v) for v in distinct), np.int64)
      self._ids = None
    else:
      self._sorted = None
      self._ids = logs._vocabulary(distinct)

  def __len__(self) -> int:
    return len(self._ids) if self._sorted is None else int(self._sorted.size)

  def __contains__(self, value) -> bool:
    return self.id(value) > 0

  def values(self) -> list:
    """The raw values in dense-id order (id 1 first)."""
    return self._sorted.tolist() if self._sorted is not None else list(self._ids)

  def id(self, value) -> int:
    if logs._is_missing(value):
      return 0
    if self._ids is not None:
      return self._ids.get(value, 0)
    if not isinstance(value, (int, np.integer)):
      return 0
    i = int(np.searchsorted(self._sorted, value))
    return i + 1 if i < self._sorted.size and self._sorted[i] == value else 0

  def ids(self, values: Sequence) -> np.ndarray:
    """Dense ids of `values`, 0 for unknown ones (vectorised for integer vocabularies)."""
    array = np.asarray(values) if self._sorted is not None else None
    if array is None or (array.dtype.kind not in "iu" and array.size):
      return np.array([self.id(v) for v in values], np.int64)
    array = array.astype(np.int64).reshape(-1)
    if not self._sorted.size:
      return np.zeros(array.size, np.int64)
    at = np.minimum(np.searchsorted(self._sorted, array), self._sorted.size - 1)
    return np.where(self._sorted[at] == array, at + 1, 0).astype(np.int64)


@dataclasses.dataclass
class Vocabularies:
  """Everything a record needs besides its own request; broadcast to the record builders."""

  users: Vocabulary
  items: Vocabulary
  user_features: dict
  item_features: dict
  day_of_date: dict
  schema: schema_lib.LogSchema


class _Concatenate(beam.CombineFn):
  """int64 matrices [n_i, width] -> one [sum n_i, width], in no particular order."""

  def __init__(self, width: int):
    self._width = width

  def create_accumulator(self):
    return []

  def add_input(self, accumulator, rows):
    accumulator.append(rows)
    return accumulator

  def merge_accumulators(self, accumulators):
    return [rows for accumulator in accumulators for rows in accumulator]

  def extract_output(self, accumulator):
    return np.concatenate([np.zeros((0, self._width), np.int64), *accumulator])


class _MergeValueSets(beam.CombineFn):
  """{column: values} dicts -> {column: [distinct values]}."""

  def __init__(self, columns: Sequence[str]):
    self._columns = tuple(columns)

  def create_accumulator(self):
    return {c: set() for c in self._columns}

  def add_input(self, accumulator, values):
    for c in self._columns:
      accumulator[c].update(values[c])
    return accumulator

  def merge_accumulators(self, accumulators):
    merged = self.create_accumulator()
    for accumulator in accumulators:
      for c in self._columns:
        merged[c] |= accumulator[c]
    return merged

  def extract_output(self, accumulator):
    return {c: list(values) for c, values in accumulator.items()}


def write(pipeline, directory: str, requests, items, *, splits: Mapping[str, Sequence[str]],
          source: str, user_features: Sequence[str] = (), item_features: Sequence[str] = (),
          stages: Sequence[str] = (), has_recall_log: bool = True, max_history: int = 100) -> dict:
  """Builds the records of `requests` and the side files of the dataset, as `logs.write` does.

  Args:
    pipeline: the Beam pipeline (TFDS's, from `_split_generators(self, dl_manager, pipeline)`).
    directory: the dataset directory being prepared.
    requests, items: PCollections in the layout of the module docstring.
    splits: split name -> its dates; must include "train".
    source: named in every error and in stats.json.
    user_features, item_features, stages, has_recall_log: as `logs.LogTables`'.
    max_history: clicks kept per record's `history`.
  Returns:
    {split: PCollection of (request_id, record)}.
  """
  layout = _Layout(source=source, splits=tuple(splits),
                   split_of_date=logs.split_of_dates(splits, source),
                   user_features=tuple(user_features), item_features=tuple(item_features),
                   stages=tuple(stages), has_recall_log=has_recall_log, max_history=max_history)

  assigned = requests | "AssignSplit" >> beam.Map(_assign_split, layout=layout)
  _ = (assigned
       | "RequestIdAndDate" >> beam.Map(lambda r: (r["request_id"], r["date"]))
       | "GroupByRequestId" >> beam.GroupByKey()
       | "CheckRequestIdsUnique" >> beam.Map(_check_unique_request, source=source))
  kept = assigned | "KeepSplitRequests" >> beam.Filter(lambda r: r[logs._KEPT_SPLIT] is not None)
  outside = (assigned
             | "OutsideSplits" >> beam.Filter(lambda r: r[logs._KEPT_SPLIT] is None)
             | "CountOutside" >> beam.combiners.Count.Globally())

  first_items = (items
                 | "BucketItems" >> beam.FlatMap(_bucket_items, source=source)
                 | "GroupItemBuckets" >> beam.GroupByKey()
                 | "FirstRowOfEachItem" >> beam.MapTuple(_first_rows))
  split_dates = (kept
                 | "SplitAndDate" >> beam.Map(lambda r: (r[logs._KEPT_SPLIT], r["date"]))
                 | "DistinctSplitDates" >> beam.Distinct()
                 | "ListSplitDates" >> beam.combiners.ToList())
  user_ids = (kept
              | "UserIds" >> beam.Map(lambda r: r["user_id"])
              | "DistinctUsers" >> beam.Distinct()
              | "ListUsers" >> beam.combiners.ToList())
  item_ids = (first_items
              | "ItemIds" >> beam.Map(lambda table: table[logs.ITEM_ID])
              | "ListItems" >> beam.CombineGlobally(_ConcatenateIds()))
  user_values = (kept
                 | "UserFeatureValues" >> beam.Map(lambda r: {
                     f: [] if logs._is_missing(r[f]) else [r[f]] for f in layout.user_features})
                 | "MergeUserFeatureValues" >> beam.CombineGlobally(
                     _MergeValueSets(layout.user_features)))
  item_values = (first_items
                 | "ItemFeatureValues" >> beam.Map(lambda table: {
                     f: pd.Series(table[f]).dropna().unique().tolist()
                     for f in layout.item_features})
                 | "MergeItemFeatureValues" >> beam.CombineGlobally(
                     _MergeValueSets(layout.item_features)))

  vocabularies = (
      pipeline
      | "VocabulariesSeed" >> beam.Create([None])
      | "Vocabularies" >> beam.Map(_vocabularies, layout=layout,
                                   split_dates=beam.pvalue.AsSingleton(split_dates),
                                   user_ids=beam.pvalue.AsSingleton(user_ids),
                                   item_ids=beam.pvalue.AsSingleton(item_ids),
                                   user_values=beam.pvalue.AsSingleton(user_values),
                                   item_values=beam.pvalue.AsSingleton(item_values)))
  vocab = beam.pvalue.AsSingleton(vocabularies)

  built = (kept
           | "KeyByUser" >> beam.Map(lambda r: (r["user_id"], r))
           | "GroupByUser" >> beam.GroupByKey()
           | "UserRecords" >> beam.ParDo(_UserRecords(layout), vocab=vocab).with_outputs(
               _COUNTS, _POPULARITY, main=_RECORDS))
  counts = (built[_COUNTS]
            | "SumCounts" >> beam.CombinePerKey(sum)
            | "ListCounts" >> beam.combiners.ToList())
  popularity = built[_POPULARITY] | "StackPopularity" >> beam.CombineGlobally(_Concatenate(3))
  catalog_rows = (first_items
                  | "CatalogRows" >> beam.Map(_catalog_rows, layout=layout, vocab=vocab)
                  | "StackCatalog" >> beam.CombineGlobally(
                      _Concatenate(1 + len(layout.item_features))))
  _ = (pipeline
       | "SideFilesSeed" >> beam.Create([None])
       | "WriteSideFiles" >> beam.Map(
           _write_side_files, directory=directory, layout=layout, vocab=vocab,
           split_dates=beam.pvalue.AsSingleton(split_dates), counts=beam.pvalue.AsSingleton(counts),
           popularity=beam.pvalue.AsSingleton(popularity),
           catalog_rows=beam.pvalue.AsSingleton(catalog_rows),
           outside=beam.pvalue.AsSingleton(outside)))

  by_split = built[_RECORDS] | "PartitionBySplit" >> beam.Partition(
      lambda keyed, n: layout.splits.index(keyed[0]), len(layout.splits))
  return {split: by_split[i] | f"Records_{split}" >> beam.Values()
          for i, split in enumerate(layout.splits)}


_RECORDS, _COUNTS, _POPULARITY = "records", "counts", "popularity"


@dataclasses.dataclass(frozen=True)
class _Layout:
  source: str
  splits: tuple
  split_of_date: dict
  user_features: tuple
  item_features: tuple
  stages: tuple
  has_recall_log: bool
  max_history: int


def _check_unique_request(keyed, source: str):
  request_id, dates = keyed
  dates = list(dates)
  if len(dates) > 1:
    raise logs.LogFormatError(f"{source}: requests table: request_id {request_id} appears more "
                              f"than once (dates {sorted(dates)})")


def _assign_split(request: dict, layout: _Layout) -> dict:
  """The request with the split it goes to (None: outside every split); checks its key columns."""
  source, rid = layout.source, request.get("request_id")
  missing = [c for c in (*logs.REQUEST_COLUMNS, *layout.user_features) if c not in request]
  if layout.has_recall_log and logs.RECALLED not in request:
    missing.append(logs.RECALLED)
  if layout.stages and logs.RECALLED_STAGE not in request:
    missing.append(logs.RECALLED_STAGE)
  if missing:
    raise logs.LogFormatError(f"{source}: requests table: request {rid}: "
                              f"missing column(s) {missing}")
  for column in ("request_id", "timestamp"):
    value = request[column]
    if not isinstance(value, (int, np.integer)) or isinstance(value, bool):
      raise logs.LogFormatError(f"{source}: requests table: request {rid}: column '{column}' "
                                f"must hold integers, got {value!r}")
  if logs._is_missing(request["user_id"]):
    raise logs.LogFormatError(f"{source}: requests table: request {rid}: user_id is missing")
  # Grouping keys must encode deterministically: numpy scalars become Python ones.
  request = {**request, **{c: request[c].item() for c in ("request_id", "timestamp", "user_id")
                           if isinstance(request[c], np.generic)}}
  split = request.get(logs.SPLIT)
  if logs._is_missing(split):
    split = layout.split_of_date.get(request["date"])
  elif split not in layout.splits:
    raise logs.LogFormatError(f"{source}: requests table: column '{logs.SPLIT}' names split(s) "
                              f"{[split]}; the splits are {sorted(layout.splits)}")
  return {**request, logs._KEPT_SPLIT: split}


ITEM_BUCKETS = 64


def _bucket_items(batch, source: str):
  """(order, items columns) -> (bucket, (order, the rows of that bucket)) per bucket it has."""
  order, table = batch
  if not isinstance(table, Mapping) or logs.ITEM_ID not in table:
    raise logs.LogFormatError(f"{source}: items batch {order!r}: expected {{column: array}} "
                              f"with an '{logs.ITEM_ID}' column, got {type(table).__name__}")
  table = {c: np.asarray(v) for c, v in table.items()}
  ids = table[logs.ITEM_ID]
  if ids.dtype.kind in "iu":
    bucket = np.mod(ids.astype(np.int64), ITEM_BUCKETS)
  else:  # Strings (or mixed): the same value hashes the same in every batch and process.
    bucket = pd.util.hash_array(ids.astype(str).astype(object)) % ITEM_BUCKETS
  for b in np.unique(bucket):
    yield int(b), (order, {c: v[bucket == b] for c, v in table.items()})


def _first_rows(_, batches):
  """The bucket's rows of every batch -> its items once each, from the earliest batch's first
  row."""
  tables = [pd.DataFrame(table) for _, table in sorted(batches, key=lambda batch: batch[0])]
  first = pd.concat(tables, ignore_index=True).drop_duplicates(logs.ITEM_ID, keep="first")
  return {c: first[c].to_numpy() for c in first.columns}


class _ConcatenateIds(_Concatenate):
  """Arrays of item ids -> one array (an object array when the ids are not integers)."""

  def __init__(self):
    super().__init__(width=1)

  def extract_output(self, accumulator):
    return np.concatenate(accumulator) if accumulator else np.zeros(0, np.int64)


def _vocabularies(_, layout: _Layout, split_dates, user_ids, item_ids, user_values,
                  item_values) -> Vocabularies:
  source = layout.source
  if not split_dates:
    raise logs.LogFormatError(f"{source}: no request falls on the split dates "
                              f"{sorted(layout.split_of_date)}")
  empty = [s for s in layout.splits if s not in {split for split, _ in split_dates}]
  if empty:
    dates = {s: [d for d, t in layout.split_of_date.items() if t == s] for s in empty}
    raise logs.LogFormatError(f"{source}: split(s) {empty} hold no request (their dates: {dates})")
  users, items = Vocabulary(user_ids), Vocabulary(item_ids)
  user_vocab = {f: Vocabulary(user_values[f]) for f in layout.user_features}
  item_vocab = {f: Vocabulary(item_values[f]) for f in layout.item_features}
  schema = logs.vocabulary_schema(users, items, user_vocab, item_vocab, stages=layout.stages,
                                  has_recall_log=layout.has_recall_log)
  day_of_date = {d: i + 1 for i, d in enumerate(sorted({d for _, d in split_dates}))}
  return Vocabularies(users=users, items=items, user_features=user_vocab, item_features=item_vocab,
                      day_of_date=day_of_date, schema=schema)


class _UserRecords(beam.DoFn):
  """One user's requests -> their records in time order, each with the clicks before it as
  history."""

  def __init__(self, layout: _Layout):
    self._layout = layout
    self._validator = None

  def process(self, keyed, vocab: Vocabularies):
    layout, source = self._layout, self._layout.source
    if self._validator is None:
      self._validator = validation.RecordValidator(vocab.schema, policy="error", source=source)
    _, requests = keyed
    stage_index = {name: i + 1 for i, name in enumerate(layout.stages)}
    counts = {(split, key): 0 for split in layout.splits for key in logs.COUNT_KEYS}
    popularity: dict = {}
    history: list = []
    for request in sorted(requests, key=lambda r: (r["timestamp"], r["request_id"])):
      rid, split = request["request_id"], request[logs._KEPT_SPLIT]
      exposed_raw = logs._list(request["exposed"], "exposed", rid, source)
      recalled_raw = logs._list(request[logs.RECALLED], logs.RECALLED, rid, source) \
          if layout.has_recall_log else None
      stages_raw = request[logs.RECALLED_STAGE] if layout.stages else None
      # Items are looked up once, vectorised; the request check then only needs the unknown ones.
      exposed = vocab.items.ids(exposed_raw)
      recalled = vocab.items.ids(recalled_raw) if layout.has_recall_log else exposed.copy()
      unknown = {v for v, i in zip(exposed_raw, exposed.tolist()) if not i}
      if layout.has_recall_log:
        unknown |= {v for v, i in zip(recalled_raw, recalled.tolist()) if not i}
      logs.check_request(rid, request["date"], exposed_raw, request["clicked"], recalled_raw,
                         stages_raw, known_item=lambda v: v not in unknown, stages=layout.stages,
                         source=source)
      clicked = np.array(logs._list(request["clicked"], "clicked", rid, source), np.int64)
      record = logs.make_record(
          request_id=rid, day=vocab.day_of_date[request["date"]],
          user=vocab.users.id(request["user_id"]),
          user_features={f: vocab.user_features[f].id(request[f]) for f in layout.user_features},
          history=history, exposed=exposed, clicked=clicked, recalled=recalled,
          recalled_stage=[stage_index[s] for s in stages_raw] if layout.stages else None,
          max_history=layout.max_history)
      self._validator.check(record)
      history = logs.next_history(history, exposed, clicked, layout.max_history)
      if split == "train":
        for item, click in zip(exposed.tolist(), clicked.tolist()):
          seen = popularity.setdefault(item, [0, 0])
          seen[0] += click
          seen[1] += 1
      for key, value in zip(logs.COUNT_KEYS, (1, exposed.size, int(clicked.sum()), recalled.size)):
        counts[(split, key)] += int(value)
      yield split, (int(rid), record)
    for key, value in counts.items():
      if value:
        yield beam.pvalue.TaggedOutput(_COUNTS, (key, value))
    if popularity:
      yield beam.pvalue.TaggedOutput(_POPULARITY, np.array(
          [(item, clicks, exposures) for item, (clicks, exposures) in popularity.items()],
          np.int64))


def _catalog_rows(table, layout: _Layout, vocab: Vocabularies) -> np.ndarray:
  """[n, 1 + features]: each item's dense id and its features' dense ids."""
  columns = [vocab.items.ids(_values(table[logs.ITEM_ID]))]
  for f in layout.item_features:
    columns.append(vocab.item_features[f].ids(_values(table[f])))
  return np.stack(columns, axis=1).reshape(len(table[logs.ITEM_ID]), 1 + len(layout.item_features))


def _values(column: np.ndarray):
  """A table column for `Vocabulary.ids`: int64 when it holds only integers, else Python values."""
  if column.dtype.kind in "iu":
    return column.astype(np.int64)
  return [None if logs._is_missing(v) else v for v in column.tolist()]


def _write_side_files(_, directory: str, layout: _Layout, vocab: Vocabularies, split_dates, counts,
                      popularity: np.ndarray, catalog_rows: np.ndarray, outside: int) -> None:
  schema = vocab.schema
  features = {f: np.zeros(schema.num_items, np.int64) for f in layout.item_features}
  for column, f in enumerate(layout.item_features, start=1):
    features[f][catalog_rows[:, 0]] = catalog_rows[:, column]
  click_count = np.zeros(schema.num_items, np.int64)
  exposure_count = np.zeros(schema.num_items, np.int64)
  np.add.at(click_count, popularity[:, 0], popularity[:, 1])
  np.add.at(exposure_count, popularity[:, 0], popularity[:, 2])
  totals = dict(counts)
  summary = logs.stats_summary(
      layout.source, schema, num_days=len(vocab.day_of_date),
      dates={s: sorted(d for t, d in split_dates if t == s) for s in layout.splits},
      outside_splits=int(outside),
      counts={s: {k: totals.get((s, k), 0) for k in logs.COUNT_KEYS} for s in layout.splits})
  logs.save_side_files(
      directory, schema,
      schema_lib.ItemCatalog(features=features, click_count=click_count,
                             exposure_count=exposure_count),
      raw_ids=logs.raw_id_arrays(vocab.users.values(), vocab.items.values(),
                                 {f: v.values() for f, v in vocab.user_features.items()},
                                 {f: v.values() for f, v in vocab.item_features.items()}),
      stats=summary)

"""The request-log record and the item catalog: the one definition every reader uses.

A request record (DESIGN.md §4) is one request of the serving pipeline:

| field        | type      | meaning                                                        |
|--------------|-----------|----------------------------------------------------------------|
| request_id   | int64     | unique within a dataset                                        |
| day          | int64     | 1..N; the last day is the test day                             |
| user_id      | int64     | dense id                                                       |
| <user feat.> | int64     | one field per categorical user feature (`LogSchema.user_features`) |
| history      | int64[]   | item ids the user clicked before this request, newest last     |
| exposed      | int64[]   | item ids shown, in position order                              |
| clicked      | int64[]   | 0/1, aligned with `exposed`                                    |
| recalled     | int64[]   | the whole recall set (contains `exposed`); B = recalled - exposed |
| recalled_stage | int64[] | only when `LogSchema.stages`: see below                     |

`recalled_stage` (only when `LogSchema.stages`) is the last pipeline stage each recalled item
reached, 1..len(stages) (0 = unknown), aligned with `recalled`.

Logs with only exposures (no recall log) set `recalled` = `exposed` and `LogSchema.has_recall_log`
False: they have no space B.

**Id convention.** Id 0 is reserved for padding / out-of-vocabulary in every id and categorical
field: user ids, item ids and every feature value. Real ids run 1..n, so a vocabulary of n ids has
size n + 1 and row 0 of every embedding table is the padding row. Readers of real logs remap raw ids
onto this convention.

The same record is described three ways, all derived here: `tfds_features` (what TFDS builders
declare and write), `parsing_spec` (what the tf.data readers parse, batched) and the numpy dict the
validator checks. Example:

    schema = LogSchema(num_users=1001, num_items=2001,
                       user_features={"age": 8, "gender": 3, "region": 21},
                       item_features={"category": 11, "author": 201, "pop_bucket": 11})
    features = tfds_features(schema)          # in a GeneratorBasedBuilder._info
    requests = parse_requests(serialized, schema)   # in a tf.data map over batches
"""
from __future__ import annotations

import dataclasses
import io
import json
import os
from typing import Mapping

import numpy as np

from uma2_tf import atomic_files

PAD_ID = 0

REQUEST_ID = "request_id"
DAY = "day"
USER_ID = "user_id"
HISTORY = "history"
EXPOSED = "exposed"
CLICKED = "clicked"
RECALLED = "recalled"
RECALLED_STAGE = "recalled_stage"

SCALAR_FIELDS = (REQUEST_ID, DAY, USER_ID)
ITEM_LIST_FIELDS = (HISTORY, EXPOSED, RECALLED)
LIST_FIELDS = (HISTORY, EXPOSED, CLICKED, RECALLED)

SCHEMA_FILE = "schema.json"
CATALOG_FILE = "catalog.npz"


@dataclasses.dataclass(frozen=True)
class LogSchema:
  """The id spaces and categorical fields of one dataset.

  Attributes:
    num_users: size of the user-id vocabulary, padding row included (valid ids 1..num_users-1).
    num_items: size of the item-id vocabulary, padding row included (valid ids 1..num_items-1).
    user_features: categorical user field name -> vocabulary size (padding value 0 included).
    item_features: categorical item field name -> vocabulary size (in the catalog, not the record).
    stages: names of the pipeline stages a recalled item can reach, in pipeline order; when given,
      records carry `recalled_stage` (1-based index into `stages`, 0 = unknown).
    has_recall_log: False for exposure-only logs, where `recalled` is `exposed` (no space B).
  """

  num_users: int
  num_items: int
  user_features: Mapping[str, int]
  item_features: Mapping[str, int]
  stages: tuple[str, ...] = ()
  has_recall_log: bool = True

  def __post_init__(self):
    object.__setattr__(self, "stages", tuple(self.stages))
    if len(set(self.stages)) != len(self.stages) or not all(self.stages):
      raise ValueError(f"LogSchema.stages must be distinct non-empty names, got {self.stages}")
    if self.stages and not self.has_recall_log:
      raise ValueError("LogSchema.stages needs a recall log (has_recall_log=True)")
    reserved = set(SCALAR_FIELDS) | set(LIST_FIELDS) | {RECALLED_STAGE}
    clash = reserved.intersection(self.user_features)
    if clash:
      raise ValueError(f"user feature names {sorted(clash)} clash with record fields "
                       f"{sorted(reserved)}")
    for name, size in [("num_users", self.num_users), ("num_items", self.num_items),
                       *self.user_features.items(), *self.item_features.items()]:
      if int(size) < 2:
        raise ValueError(f"LogSchema.{name}: vocabulary size must be >= 2 (padding + one id), "
                         f"got {size}")

  @property
  def user_feature_names(self) -> tuple[str, ...]:
    return tuple(self.user_features)

  def to_json(self) -> str:
    return json.dumps(dataclasses.asdict(self), indent=2, sort_keys=False, default=dict)

  @classmethod
  def from_json(cls, text: str) -> "LogSchema":
    raw = json.loads(text)
    return cls(num_users=int(raw["num_users"]), num_items=int(raw["num_items"]),
               user_features=dict(raw["user_features"]), item_features=dict(raw["item_features"]),
               stages=tuple(raw.get("stages", ())),
               has_recall_log=bool(raw.get("has_recall_log", True)))

  @property
  def list_fields(self) -> tuple[str, ...]:
    """The record's list fields: `LIST_FIELDS`, plus `recalled_stage` when the schema has stages."""
    return (*LIST_FIELDS, RECALLED_STAGE) if self.stages else LIST_FIELDS

  def save(self, directory: str) -> None:
    atomic_files.atomic_write_text(os.path.join(directory, SCHEMA_FILE), self.to_json())

  @classmethod
  def load(cls, directory: str) -> "LogSchema":
    import tensorflow as tf

    path = os.path.join(directory, SCHEMA_FILE)
    if not tf.io.gfile.exists(path):
      raise FileNotFoundError(f"{path}: no {SCHEMA_FILE}; is {directory} a built uma2_tf dataset?")
    with tf.io.gfile.GFile(path) as f:
      return cls.from_json(f.read())


def record_fields(schema: LogSchema) -> tuple[str, ...]:
  """Every field of a request record, in a fixed order."""
  return (*SCALAR_FIELDS, *schema.user_feature_names, *schema.list_fields)


def tfds_features(schema: LogSchema):
  """The record as a `tfds.features.FeaturesDict` (what a builder's `_info` declares)."""
  import tensorflow_datasets as tfds  # Heavy import, only needed by builders.

  scalar = lambda: tfds.features.Scalar(dtype=np.int64)  # noqa: E731
  items = lambda: tfds.features.Tensor(shape=(None,), dtype=np.int64)  # noqa: E731
  return tfds.features.FeaturesDict({
      **{name: scalar() for name in SCALAR_FIELDS},
      **{name: scalar() for name in schema.user_feature_names},
      **{name: items() for name in schema.list_fields},
  })


def parsing_spec(schema: LogSchema):
  """`tf.io.parse_example` spec for serialized records; lists parse as `tf.RaggedTensor`s."""
  import tensorflow as tf

  spec = {name: tf.io.FixedLenFeature([], tf.int64) for name in SCALAR_FIELDS}
  spec.update({name: tf.io.FixedLenFeature([], tf.int64) for name in schema.user_feature_names})
  spec.update({name: tf.io.RaggedFeature(tf.int64, row_splits_dtype=tf.int64)
               for name in schema.list_fields})
  return spec


def parse_requests(serialized, schema: LogSchema):
  """Parses a batch (vector) of serialized records into dense scalars and ragged lists."""
  import tensorflow as tf

  return tf.io.parse_example(serialized, parsing_spec(schema))


@dataclasses.dataclass(frozen=True)
class ItemCatalog:
  """Every item of the corpus with its features and its popularity in the training days.

  Arrays are indexed by item id and have `num_items` rows; row 0 is the padding item.

  Attributes:
    features: item feature name -> int64[num_items] (e.g. category, author, pop_bucket).
    click_count: int64[num_items], clicks on the item over the training days.
    exposure_count: int64[num_items], exposures of the item over the training days.
  """

  features: Mapping[str, np.ndarray]
  click_count: np.ndarray
  exposure_count: np.ndarray

  def __post_init__(self):
    for name, column in {**self.features, "click_count": self.click_count,
                         "exposure_count": self.exposure_count}.items():
      if column.shape != (self.num_items,):
        raise ValueError(f"ItemCatalog.{name}: expected shape ({self.num_items},), "
                         f"got {column.shape}")

  @property
  def num_items(self) -> int:
    return int(self.click_count.shape[0])

  def save(self, directory: str) -> None:
    atomic_files.atomic_savez(os.path.join(directory, CATALOG_FILE), click_count=self.click_count,
                 exposure_count=self.exposure_count,
                 **{f"feature/{k}": v for k, v in self.features.items()})

  @classmethod
  def load(cls, directory: str) -> "ItemCatalog":
    import tensorflow as tf

    path = os.path.join(directory, CATALOG_FILE)
    if not tf.io.gfile.exists(path):
      raise FileNotFoundError(f"{path}: no {CATALOG_FILE}; is {directory} a built uma2_tf dataset?")
    with tf.io.gfile.GFile(path, "rb") as f, np.load(io.BytesIO(f.read())) as z:
      features = {k.split("/", 1)[1]: z[k] for k in z.files if k.startswith("feature/")}
      return cls(features=features, click_count=z["click_count"],
                 exposure_count=z["exposure_count"])

"""The logs' own ids in the exported models: raw user ids, features and items in, raw items out.

    vocabulary = raw_ids.IdVocabulary.of_dataset(dataset.directory, dataset.schema)
    lookup = raw_ids.IdLookup(vocabulary)        # a tf.Module, saved with the models
    dense, oov_ids = lookup.to_dense(features)   # unknown ids -> 0, counted per user
    item_ids = lookup.to_raw_items(dense_item_ids)

A dataset built from logs (`request_logs`, RecFlow, KuaiRand: `ids.npz`; MovieLens:
`movielens_ids.npz`) keeps the raw value of every dense id and user feature value; its exports
speak those, each input as int64 when every one of its raw values is an int64 literal, else as
strings. A simulated world has no other ids than the dense ones: its exports speak those, through
the same lookup.

An unknown user maps to the dense id 0, a row the trainer never reads (dense ids start at 1) and
the export zeroes (`zero_unknown_user_rows`), so an unseen user is answered from its features and
history. An unknown history item maps to 0, the padding id the towers ignore; an unknown feature
value to 0, the value of a missing one. None is refused: unknown ids come back counted as
`oov_ids` per user.
"""
from __future__ import annotations

import dataclasses
import io
import os

import numpy as np
import tensorflow as tf

from uma2_tf.data import schema as schema_lib

DENSE, RAW = "dense", "raw"
# Where a built dataset keeps the raw value of each dense id: {user,item}_raw_id, index = dense id.
ID_FILES = ("ids.npz", "movielens_ids.npz")
_INT64 = np.iinfo(np.int64)


def _as_int64(values: np.ndarray) -> np.ndarray | None:
  """`values` as int64 if every one is the text of an int64 as the builders write ints (`7`,
  `-1`; not `007` or ` 7`, which only a string column keeps), else None."""
  if values.dtype.kind in "iu":
    return values.astype(np.int64)
  out = np.empty(len(values), np.int64)
  for i, value in enumerate(values):
    text = str(value)
    try:
      number = int(text)
    except ValueError:
      return None
    if str(number) != text or not _INT64.min <= number <= _INT64.max:
      return None
    out[i] = number
  return out


@dataclasses.dataclass(frozen=True)
class IdVocabulary:
  """The ids an export takes and returns.

  Attributes:
    space: `raw` (the logs' ids) or `dense` (the dataset's 1..n-1).
    users: the id of dense users 1..n-1, in order (int64 or str array).
    items: the id of dense items 1..n-1, in order (the same type as `users`).
    padding: the value that pads `history` to its length (never an item id).
    features: per user feature, the value of its dense values 1..n-1 (int64 or str array) and
      the value that stands for a missing one (never one of them).
  """

  space: str
  users: np.ndarray
  items: np.ndarray
  padding: int | str
  features: dict[str, tuple[np.ndarray, int | str]] = dataclasses.field(default_factory=dict)

  @property
  def dtype(self) -> str:
    return _dtype_name(self.items)

  @classmethod
  def dense(cls, schema: schema_lib.LogSchema) -> "IdVocabulary":
    return cls(DENSE, np.arange(1, schema.num_users, dtype=np.int64),
               np.arange(1, schema.num_items, dtype=np.int64), schema_lib.PAD_ID,
               {name: (np.arange(1, size, dtype=np.int64), 0)
                for name, size in schema.user_features.items()})

  @classmethod
  def of_dataset(cls, directory: str, schema: schema_lib.LogSchema) -> "IdVocabulary":
    """The raw ids kept in the built dataset `directory`, or the dense ones if it keeps none."""
    path = next((os.path.join(directory, f) for f in ID_FILES
                 if tf.io.gfile.exists(os.path.join(directory, f))), None)
    if path is None:
      return cls.dense(schema)
    with tf.io.gfile.GFile(path, "rb") as f, np.load(io.BytesIO(f.read())) as z:
      users, items = z["user_raw_id"][1:], z["item_raw_id"][1:]  # Row 0: the padding id.
      features = {name: _typed(z[f"user_feature/{name}"][1:]) if f"user_feature/{name}" in z.files
                  else (np.arange(1, size, dtype=np.int64), 0)
                  for name, size in schema.user_features.items()}
    if len(users) != schema.num_users - 1 or len(items) != schema.num_items - 1:
      raise ValueError(f"{path}: {len(users)} users and {len(items)} items, but the schema has "
                       f"{schema.num_users - 1} and {schema.num_items - 1}")
    int_users, int_items = _as_int64(users), _as_int64(items)
    if int_users is not None and int_items is not None:
      return cls(RAW, int_users, int_items, _unused_int(int_items), features)
    return cls(RAW, users.astype(str), items.astype(str), "", features)

  def metadata(self) -> dict:
    """metadata.json's `ids`: which ids the export speaks, their type and the history padding."""
    return {"space": self.space, "dtype": self.dtype, "history_padding": self.padding,
            "num_users": len(self.users), "num_items": len(self.items)}

  @property
  def tf_dtype(self) -> tf.DType:
    return _tf_dtype(self.items)


def _dtype_name(values: np.ndarray) -> str:
  return "int64" if values.dtype.kind == "i" else "string"


def _tf_dtype(values: np.ndarray) -> tf.DType:
  return tf.int64 if values.dtype.kind == "i" else tf.string


def _unused_int(values: np.ndarray) -> int:
  """The first of 0, -1 and the smallest int64 that is none of `values`: a padding value."""
  taken = set(values.tolist())
  return next(p for p in (0, -1, int(_INT64.min)) if p not in taken)


def _typed(values: np.ndarray) -> tuple[np.ndarray, int | str]:
  """A feature's raw values as int64 if they all are int64 literals, else as str; and the value
  that stands for a missing one."""
  as_int = _as_int64(values)
  if as_int is not None:
    return as_int, _unused_int(as_int)
  return values.astype(str), ""


def _table(keys: np.ndarray, dtype: tf.DType) -> tf.lookup.StaticHashTable:
  """id -> dense id 1..len(keys); any other id -> 0."""
  return tf.lookup.StaticHashTable(
      tf.lookup.KeyValueTensorInitializer(tf.constant(keys, dtype),
                                          tf.range(1, len(keys) + 1, dtype=tf.int64)),
      default_value=0)


class IdLookup(tf.Module):
  """Lookup tables between an `IdVocabulary`'s ids and the dense ones, saved in the SavedModels."""

  def __init__(self, vocabulary: IdVocabulary):
    super().__init__()
    self.dtype = vocabulary.tf_dtype
    self.padding = tf.constant(vocabulary.padding, self.dtype)
    self.users = _table(vocabulary.users, self.dtype)
    self.items = _table(vocabulary.items, self.dtype)
    self.features = {name: _table(values, _tf_dtype(values))
                     for name, (values, _) in vocabulary.features.items()}
    # Dense item id -> its id; dense 0 (the padding item, never returned) -> the padding value.
    self.item_ids = tf.constant(np.concatenate([[vocabulary.padding], vocabulary.items])
                                .astype(vocabulary.items.dtype), self.dtype)

  def to_dense(self, features: dict) -> tuple[dict, tf.Tensor]:
    """(features with dense `user_id` and `history`, oov_ids int32 [B]: the user's unknown ids)."""
    users = self.users.lookup(features[schema_lib.USER_ID])
    history = features[schema_lib.HISTORY]
    items = self.items.lookup(history)
    unknown_items = tf.logical_and(tf.equal(items, 0), tf.not_equal(history, self.padding))
    oov_ids = (tf.cast(tf.equal(users, 0), tf.int32)
               + tf.reduce_sum(tf.cast(unknown_items, tf.int32), axis=-1))
    dense = {name: table.lookup(features[name]) for name, table in self.features.items()}
    return {**dense, schema_lib.USER_ID: users, schema_lib.HISTORY: items}, oov_ids

  def to_raw_items(self, dense_ids: tf.Tensor) -> tf.Tensor:
    return tf.gather(self.item_ids, dense_ids)


def zero_unknown_user_rows(model) -> int:
  """Zeroes row 0 (the unknown user's) of every user-id embedding table of `model`; returns how
  many tables. Training never reads that row: left random, it would add noise to every unseen
  user's score."""
  from uma2_tf.models.features import FeatureEmbeddings

  tables = {id(layer.user_id.embeddings): layer.user_id.embeddings
            for layer in model.submodules if isinstance(layer, FeatureEmbeddings)}
  for table in tables.values():
    table[0].assign(tf.zeros_like(table[0]))
  return len(tables)

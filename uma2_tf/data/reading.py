"""Opening a built dataset and reading its request records as batched tf.data.

A built dataset is a TFDS dataset directory (TFRecord shards per split) plus side files written by
its builder: `schema.json` (`LogSchema`), `catalog.npz` (`ItemCatalog`) and `stats.json`.

    dataset = registry.load("uma2_simulated/default", data_dir)     # uma2_tf.sources.registry
    requests = reading.read_requests(dataset.split_files["train"], dataset.schema,
                                     requests_per_batch=256, seed=0)

A shard that cannot be read to its end fails with TensorFlow's DataLossError, which names a byte
offset but not the file; `naming_corrupt_shards` turns it into a `CorruptShardError` that names it:

    with reading.naming_corrupt_shards(dataset):
      model.fit(...)

Records are read straight from the shards and parsed a batch at a time with the schema's parsing
spec (`schema.parsing_spec`): vectorised parsing is several times faster than TFDS's per-example
decoding, and it is the same spec for every dataset.
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import re
from typing import Iterable, Mapping, Sequence

from uma2_tf.data import schema as schema_lib

STATS_FILE = "stats.json"


class DatasetNotBuiltError(FileNotFoundError):
  """The dataset asked for has not been prepared in the data dir."""


class CorruptShardError(ValueError):
  """A shard of a built dataset is corrupt or truncated (a ValueError: the pipelines print it as
  their one error line)."""


class CorruptDatasetError(ValueError):
  """A side file of a built dataset (its info, schema or catalog) cannot be read."""


@dataclasses.dataclass(frozen=True)
class BuiltDataset:
  """A prepared dataset on disk.

  Attributes:
    name: TFDS name with config, e.g. `uma2_simulated/default`.
    directory: the versioned dataset dir holding the shards and the side files.
    schema: id spaces and user features of the records.
    catalog: item features and training-day popularity.
    split_files: split name -> its TFRecord shard paths, in order.
  """

  name: str
  directory: str
  schema: schema_lib.LogSchema
  catalog: schema_lib.ItemCatalog
  split_files: Mapping[str, tuple[str, ...]]

  def stats(self) -> dict:
    path = os.path.join(self.directory, STATS_FILE)
    import tensorflow as tf

    with tf.io.gfile.GFile(path) as f:
      return json.load(f)

  def num_records(self, split: str) -> int:
    return int(self._builder_info().splits[split].num_examples)

  def _builder_info(self):
    import tensorflow_datasets as tfds
    return tfds.builder_from_directory(self.directory).info


def count_records(path: str) -> tuple[int, str | None]:
  """(records read, None) if the TFRecord file `path` reads to its end, else (records before the
  bad one unknown: -1, TensorFlow's reason: `corrupted record at N` or `truncated record at N`)."""
  import tensorflow as tf

  try:
    return int(tf.data.TFRecordDataset(path).reduce(tf.constant(0, tf.int64),
                                                     lambda n, _: n + 1)), None
  except tf.errors.DataLossError as e:
    found = re.search(r"(corrupted|truncated) record at \d+", e.message)
    return -1, found.group(0) if found else e.message.strip().splitlines()[0]


def find_corrupt_shard(files: Iterable[str]) -> tuple[str, str] | None:
  """(path, TensorFlow's reason) of the first of `files` that cannot be read to its end (a record
  whose length or checksum is wrong, or a file cut short), or None if every one reads.

  Reads every record of every file: it is for naming the file once a read has failed, not for
  every run.
  """
  for path in files:
    _, reason = count_records(path)
    if reason is not None:
      return path, reason
  return None


# Bytes a TFRecord adds around each record: its length (8) and two CRCs (4 + 4).
_RECORD_FRAMING = 16


def check_split_files(name: str, directory: str, split: str, files: Sequence[str],
                      shard_lengths: Sequence[int], num_bytes: int) -> None:
  """CorruptShardError naming the shard if a split's shards are not what its builder wrote: one
  is missing, or their sizes do not add up to the records' bytes plus their framing (as TFDS
  records them in dataset_info.json). A shard cut at a record boundary reads without any error
  (TensorFlow takes it for the end of the file), so only its size tells.

  One `stat` per shard; the shards are read only when the sizes disagree, to name the one.
  """
  import tensorflow as tf

  for path in files:
    if not tf.io.gfile.exists(path):
      raise CorruptShardError(f"{path}: missing shard of {name} (split {split}); remove "
                              f"{directory} and build the dataset again")
  if not num_bytes or len(shard_lengths) != len(files):
    return  # Nothing recorded to compare with.
  size = sum(tf.io.gfile.stat(path).length for path in files)
  expected = num_bytes + _RECORD_FRAMING * sum(shard_lengths)
  if size == expected:
    return
  culprit, reason = files[0], f"the split's shards hold {size} bytes, {expected} were written"
  for path, length in zip(files, shard_lengths):
    count, unreadable = count_records(path)
    if unreadable is not None or count != length:
      culprit, reason = path, unreadable or f"{count} records, {length} were written"
      break
  raise CorruptShardError(f"{culprit}: corrupt or truncated TFRecord shard of {name} ({reason}); "
                          f"remove {directory} and build the dataset again")


@contextlib.contextmanager
def naming_corrupt_shards(dataset: BuiltDataset):
  """Runs the block; a DataLossError raised in it that a shard of `dataset` explains becomes a
  `CorruptShardError` naming that shard. One that none explains (a checkpoint's, say) is
  re-raised as it was."""
  import tensorflow as tf

  try:
    yield
  except tf.errors.DataLossError as e:
    found = find_corrupt_shard(path for files in dataset.split_files.values() for path in files)
    if found is None:
      raise
    path, reason = found
    raise CorruptShardError(
        f"{path}: corrupt or truncated TFRecord shard of {dataset.name} ({reason}); remove "
        f"{dataset.directory} and build the dataset again") from e


def read_requests(files: Sequence[str], schema: schema_lib.LogSchema, requests_per_batch: int, *,
                  shuffle_buffer: int = 0, seed: int = 0, input_context=None,
                  cycle_length: int = 4, keep=None):
  """Batches of parsed request records from TFRecord shards.

  Args:
    files: TFRecord shards of one split.
    schema: the records' schema; lists come back as `tf.RaggedTensor`s, scalars as dense vectors.
    requests_per_batch: records per parsed batch (the last batch may be smaller).
    shuffle_buffer: if > 0, shards and records are shuffled (deterministically from `seed`, and
      differently in each epoch).
    seed: seed of the shuffles.
    input_context: a `tf.distribute.InputContext`; each input pipeline then reads its own part:
      whole shards when there are at least as many shards as pipelines, else every n-th record.
    keep: a predicate on a parsed batch (bool per record, e.g. `splits.Holdout.keep_train`): only
      those records are read; batches left empty are dropped.
  Returns:
    A `tf.data.Dataset` of dicts as `schema.parse_requests` returns them.
  """
  import tensorflow as tf

  if not files:
    raise ValueError("read_requests: no files to read")
  missing = [f for f in files if not tf.io.gfile.exists(f)]
  if missing:
    raise FileNotFoundError(f"request shard {missing[0]} does not exist")
  ds = tf.data.Dataset.from_tensor_slices(list(files))
  shard_records = False
  if input_context is not None and input_context.num_input_pipelines > 1:
    if len(files) >= input_context.num_input_pipelines:
      ds = ds.shard(input_context.num_input_pipelines, input_context.input_pipeline_id)
    else:
      shard_records = True
  if shuffle_buffer > 0:
    ds = ds.shuffle(len(files), seed=seed, reshuffle_each_iteration=True)
  ds = ds.interleave(tf.data.TFRecordDataset, cycle_length=cycle_length,
                     num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
  if shard_records:
    ds = ds.shard(input_context.num_input_pipelines, input_context.input_pipeline_id)
  if shuffle_buffer > 0:
    ds = ds.shuffle(shuffle_buffer, seed=seed + 1, reshuffle_each_iteration=True)
  ds = ds.batch(requests_per_batch)
  ds = ds.map(lambda serialized: schema_lib.parse_requests(serialized, schema),
              num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
  if keep is not None:
    ds = ds.map(lambda requests: select_requests(requests, keep(requests)),
                num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    ds = ds.filter(lambda requests: tf.size(requests[schema_lib.REQUEST_ID]) > 0)
  return ds


def select_requests(requests, mask):
  """The records of a parsed batch where `mask` (bool[n]) is true, every field alike."""
  import tensorflow as tf

  return {name: (tf.ragged.boolean_mask(value, mask) if isinstance(value, tf.RaggedTensor)
                 else tf.boolean_mask(value, mask))
          for name, value in requests.items()}

"""Opening a built dataset and reading its request records as batched tf.data.

A built dataset is a TFDS dataset directory (TFRecord shards per split) plus side files written by
its builder: `schema.json` (`LogSchema`), `catalog.npz` (`ItemCatalog`) and `stats.json`.

    dataset = datasets.load("uma2_simulated/default", data_dir)
    requests = datasets.read_requests(dataset.split_files["train"], dataset.schema,
                                      requests_per_batch=256, seed=0)

Records are read straight from the shards and parsed a batch at a time with the schema's parsing
spec (`schema.parsing_spec`): vectorised parsing is several times faster than TFDS's per-example
decoding, and it is the same spec for every dataset.
"""
from __future__ import annotations

import dataclasses
import json
import os
from typing import Mapping, Sequence

from uma2_tf.data import schema as schema_lib

STATS_FILE = "stats.json"


class DatasetNotBuiltError(FileNotFoundError):
  """The dataset asked for has not been prepared in the data dir."""


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


REAL_LOG_BUILDERS = ("recflow", "kuairand", "request_logs")


def _register_builders() -> None:
  # Importing a builder module registers it with TFDS under its snake_case name.
  import importlib.util

  from uma2_tf.data import movielens_builder, simulated  # noqa: F401
  for module in REAL_LOG_BUILDERS:
    if importlib.util.find_spec(f"uma2_tf.data.{module}") is not None:
      importlib.import_module(f"uma2_tf.data.{module}")


def builder(name: str, data_dir: str):
  """The TFDS builder for `name` (e.g. `uma2_simulated/tiny`) rooted at `data_dir`.

  A config made for one user's files (`request_logs/<name>`, see `pipelines/prepare.py`, or a
  `recflow` config with other dates) is not registered: once built, its builder is read back from
  its directory.
  """
  import tensorflow_datasets as tfds

  _register_builders()
  try:
    return tfds.builder(name, data_dir=data_dir)
  except tfds.core.registered.DatasetNotFoundError as e:
    raise ValueError(f"unknown dataset {name!r}: {e}") from None
  except ValueError as e:  # Unknown builder config.
    prepared = _prepared_directory(name, data_dir)
    if prepared is not None:
      return tfds.builder_from_directory(prepared)
    if name.split("/")[0] == "request_logs":
      raise DatasetNotBuiltError(
          f"dataset {name} is not built under {data_dir}; build it with `python -m pipelines.prepare "
          f"--dataset={name} --manual_dir=<directory holding the log files> --data_dir={data_dir}`") from None
    raise ValueError(f"dataset {name!r}: {e}") from None


def manual_dir(dl_manager) -> str:
  """The TFDS manual dir a builder was given, or "" when none was.

  TFDS's own `dl_manager.manual_dir` raises an AssertionError holding the builder's whole download
  instructions when the dir is missing; builders name the files they expect instead.
  """
  manual = getattr(dl_manager, "_manual_dir", None)
  try:
    manual = dl_manager.manual_dir
  except AssertionError:
    pass
  return str(manual) if manual else ""


def _prepared_directory(name: str, data_dir: str) -> str | None:
  """`data_dir/<builder>/<config>/<newest version>` if it holds a prepared dataset, else None."""
  if "/" not in name:
    return None
  base = os.path.join(os.path.expanduser(data_dir), *name.split("/")[:2])
  if not os.path.isdir(base):
    return None
  versions = sorted((v for v in os.listdir(base) if os.path.exists(os.path.join(base, v, "dataset_info.json"))),
                    key=lambda v: tuple(int(x) for x in v.split(".") if x.isdigit()))
  return os.path.join(base, versions[-1]) if versions else None


def load(name: str, data_dir: str, prepare: bool = False) -> BuiltDataset:
  """Opens a built dataset; builds it first when `prepare` is set, else fails naming `make data`."""
  b = builder(name, data_dir)
  if not b.is_prepared():
    if not prepare:
      config = name.split('/')[-1]
      if name.startswith("uma2_movielens"):
        how = (f"`python -m pipelines.simulate --movielens_dir=<directory holding the ratings file> "
               f"--movielens_config={config} --data_dir={data_dir}`")
      elif name.split("/")[0] in REAL_LOG_BUILDERS:
        how = (f"`python -m pipelines.prepare --dataset={name} --manual_dir=<directory holding the "
               f"log files> --data_dir={data_dir}`")
      else:
        how = f"`make data` or `python -m pipelines.simulate --config={config} --data_dir={data_dir}`"
      raise DatasetNotBuiltError(f"dataset {name} is not built under {data_dir}; build it with {how}")
    b.download_and_prepare()
  directory = str(b.data_dir)
  return BuiltDataset(
      name=name,
      directory=directory,
      schema=schema_lib.LogSchema.load(directory),
      catalog=schema_lib.ItemCatalog.load(directory),
      split_files={split: tuple(str(p) for p in info.filepaths)
                   for split, info in b.info.splits.items()},
  )


def read_requests(files: Sequence[str], schema: schema_lib.LogSchema, requests_per_batch: int, *,
                  shuffle_buffer: int = 0, seed: int = 0, input_context=None, cycle_length: int = 4):
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
  return ds.map(lambda serialized: schema_lib.parse_requests(serialized, schema),
                num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)

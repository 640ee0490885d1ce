"""The registry of dataset builders: a TFDS name with its config to a prepared dataset on disk.

    dataset = registry.load("uma2_simulated/default", data_dir)       # a `reading.BuiltDataset`
    builder = registry.builder("recflow/tiny", data_dir)               # the TFDS builder

Importing this module registers every builder of `uma2_tf.sources` with TFDS (a builder registers
under its snake_case class name when its module is imported). The builders themselves never import
this module, so registration needs no cycle.
"""
from __future__ import annotations

import os

from google.protobuf import json_format
import tensorflow_datasets as tfds

from uma2_tf.data import reading
from uma2_tf.data import schema as schema_lib
# Imported for their registration with TFDS.
from uma2_tf.sources import kuairand, movielens_builder, recflow, request_logs, simulated  # noqa: F401
from uma2_tf.sources import sequence_builders

# Builders of real logs, prepared from a user's files with `pipelines.prepare`.
REAL_LOG_BUILDERS = ("recflow", "kuairand", "request_logs", *sequence_builders.BUILDER_NAMES)


def builder(name: str, data_dir: str):
  """The TFDS builder for `name` (e.g. `uma2_simulated/tiny`) rooted at `data_dir`.

  A config made for one user's files (`request_logs/<name>`, see `pipelines/prepare.py`, or a
  `recflow` config with other dates) is not registered: once built, its builder is read back from
  its directory.
  """
  try:
    return tfds.builder(name, data_dir=data_dir)
  except json_format.ParseError as e:  # TFDS read a prepared dataset's info file and failed.
    info = os.path.join(prepared_directory(name, data_dir) or data_dir, "dataset_info.json")
    reason = str(e).split("Failed to load JSON: ")[-1]
    raise reading.CorruptDatasetError(f"{info}: unreadable ({reason}); remove "
                                      f"{os.path.dirname(info)} and build {name} again") from None
  except tfds.core.registered.DatasetNotFoundError as e:
    raise ValueError(f"unknown dataset {name!r}: {e}") from None
  except ValueError as e:  # Unknown builder config.
    prepared = prepared_directory(name, data_dir)
    if prepared is not None:
      return tfds.builder_from_directory(prepared)
    if name.split("/")[0] == "request_logs":
      raise reading.DatasetNotBuiltError(
          f"dataset {name} is not built under {data_dir}; build it with "
          f"`python -m pipelines.prepare --dataset={name} "
          f"--manual_dir=<directory holding the log files> --data_dir={data_dir}`") from None
    raise ValueError(f"dataset {name!r}: {e}") from None


def prepared_directory(name: str, data_dir: str) -> str | None:
  """`data_dir/<builder>/<config>/<newest version>` if it holds a prepared dataset, else None."""
  if "/" not in name:
    return None
  base = os.path.join(os.path.expanduser(data_dir), *name.split("/")[:2])
  if not os.path.isdir(base):
    return None
  versions = sorted((v for v in os.listdir(base)
                     if os.path.exists(os.path.join(base, v, "dataset_info.json"))),
                    key=lambda v: tuple(int(x) for x in v.split(".") if x.isdigit()))
  return os.path.join(base, versions[-1]) if versions else None


def load(name: str, data_dir: str, prepare: bool = False) -> reading.BuiltDataset:
  """Opens a built dataset; builds it first when `prepare` is set, else fails naming `make data`."""
  b = builder(name, data_dir)
  if not b.is_prepared():
    if not prepare:
      config = name.split('/')[-1]
      if name.startswith("uma2_movielens"):
        how = (f"`python -m pipelines.simulate "
               f"--movielens_dir=<directory holding the ratings file> "
               f"--movielens_config={config} --data_dir={data_dir}`")
      elif name.split("/")[0] in REAL_LOG_BUILDERS:
        how = (f"`python -m pipelines.prepare --dataset={name} --manual_dir=<directory holding the "
               f"log files> --data_dir={data_dir}`")
      else:
        how = (f"`make data` or `python -m pipelines.simulate --config={config} "
               f"--data_dir={data_dir}`")
      raise reading.DatasetNotBuiltError(f"dataset {name} is not built under {data_dir}; "
                                         f"build it with {how}")
    b.download_and_prepare()
  directory = str(b.data_dir)
  side_files = {}
  for file, load_side_file in ((schema_lib.SCHEMA_FILE, schema_lib.LogSchema.load),
                               (schema_lib.CATALOG_FILE, schema_lib.ItemCatalog.load)):
    try:
      side_files[file] = load_side_file(directory)
    except FileNotFoundError:
      raise
    except Exception as e:  # noqa: BLE001  JSON, zip, numpy and key errors alike: the file is bad.
      raise reading.CorruptDatasetError(
          f"{os.path.join(directory, file)}: unreadable ({type(e).__name__}: {e}); remove "
          f"{directory} and build {name} again") from None
  split_files = {split: tuple(str(p) for p in info.filepaths)
                 for split, info in b.info.splits.items()}
  for split, info in b.info.splits.items():
    reading.check_split_files(name, directory, split, split_files[split], info.shard_lengths,
                              info.num_bytes)
  return reading.BuiltDataset(
      name=name,
      directory=directory,
      schema=side_files[schema_lib.SCHEMA_FILE],
      catalog=side_files[schema_lib.CATALOG_FILE],
      split_files=split_files,
  )

"""TFDS builders of the interaction-sequence datasets (ComiRec / REMI protocol): `amazon_books`,
`gowalla`, `retailrocket`, `taobao`, each read from TFDS's manual dir in its public layout.

    python -m pipelines.prepare --dataset=gowalla/default --manual_dir=/data/gowalla
    dataset = registry.load("gowalla/default", data_dir)
    evaluator = sequential_evaluation.SequentialEvaluator(dataset, splits=("test",))  # test users

The files are read by `sequence_files` (its docstring: the layouts, what each dataset keeps), the
filters, ids and split are `sequences`' (its docstring: where that follows the reference code).
Configs of each builder:
  - `default`: the public file, the reference's rules: 5-core in one pass, the user permutation of
    seed 0, `history` capped at the reference's sequence length (Books 20, Gowalla 40,
    RetailRocket 20, Taobao 50).
  - `tiny`: the same rules on small files in the same layout (the fixtures `data/sequences/<name>/`
    are big enough for the 5-core), `history` capped at 4 so the cap shows on short sequences.
Another seed, k or fixed-point filtering: `<Builder>(config=SequenceConfig(name=..., seed=1230,
...), data_dir=...)` (seed 1230 with one-pass filtering is the reference's user permutation).

**Records.** One per interaction, in the request record of `uma2_tf.data.schema`:
`request_id` numbers the interactions 1..N by user id, then time (a user's are consecutive and in
order: the evaluator sorts by it), `day` is the calendar day since the dataset's first kept
interaction (1-based; informational; Taobao's days are Beijing days), `user_id` the dense user,
`history` the user's previous items in the sequence, newest last, at most `max_history`,
`exposed` = `recalled` = [item], `clicked` = [1]. No user feature; `LogSchema.has_recall_log` is
False. The catalog's click and exposure counts are the train split's interactions per item; its
only item feature is Taobao's `category`.

**Splits** `train`, `validation`, `test` hold disjoint users (80/10/10 by the seeded permutation,
floors as the reference): every record of a user is in the user's split. Train users are ids
1..floor(0.8 n), then validation, then test, so a split is a range of user ids and of request ids.

**Side files** beside the shards: schema.json, catalog.npz, ids.npz (`user_raw_id`,
`item_raw_id`, `item_feature/category`: the file's id of each dense id), stats.json (what every
dataset has; `pipelines.prepare` prints it) and `sequences.json`: the file, lines and rows per
behaviour read, users / items / interactions read and after the filter, the filter's figures,
repeated interactions, time span, per split its users, user-id range and interactions, the split
rule and the record layout. Every record passes `validation.RecordValidator` as it is written;
TFDS writes into a temporary directory renamed when the build completes, so a failed build leaves
no dataset.

A malformed file stops the build with one `logs.LogFormatError` naming the file, line, column or
field and what was expected; a missing file is a FileNotFoundError naming it and the manual dir.
"""
from __future__ import annotations

import uma2_tf  # noqa: F401

import json
import os

import numpy as np
import tensorflow_datasets as tfds

from uma2_tf import atomic_files
from uma2_tf.data import schema as schema_lib
from uma2_tf.data import validation
from uma2_tf.sources import logs
from uma2_tf.sources import manual_files
from uma2_tf.sources import sequence_files
from uma2_tf.sources import sequences

SEQUENCES_FILE = "sequences.json"
TINY_MAX_HISTORY = 4
SPLIT_RULE = (
    "users left after the k-core filter, in order of first appearance in the file, are shuffled "
    "with random.Random(seed).shuffle; user ids are positions in that order + 1; the first "
    "int(n * 0.8) users are train, up to int(n * 0.9) validation, the rest test; every "
    "interaction of a user is in the user's split")
RECORD_LAYOUT = (
    "one record per interaction; request_id runs 1..N by user id, then time (ties in file "
    "order); history = the user's previous items, newest last, at most max_history; exposed = "
    "recalled = [item], clicked = [1]; day = calendar day since the first kept interaction, "
    "1-based")


class SequenceConfig(tfds.core.BuilderConfig):
  """How the file becomes sequences.

  Attributes:
    min_count: k of the k-core filter.
    kcore: `sequences.ONE_PASS` (the reference) or `sequences.FIXED_POINT`.
    seed: seed of the user permutation that makes the split.
    max_history: the newest items kept in a record's `history` (None: the dataset's reference
      sequence length, `sequence_files.Dataset.max_history`).
  """

  def __init__(self, *, min_count: int = 5, kcore: str = sequences.ONE_PASS, seed: int = 0,
               max_history: int | None = None, **kwargs):
    super().__init__(**kwargs)
    if min_count < 1:
      raise ValueError(f"min_count must be >= 1, got {min_count}")
    if kcore not in sequences.KCORE_MODES:
      raise ValueError(f"kcore must be one of {sequences.KCORE_MODES}, got {kcore!r}")
    if max_history is not None and max_history < 1:
      raise ValueError(f"max_history must be >= 1, got {max_history}")
    self.min_count = min_count
    self.kcore = kcore
    self.seed = seed
    self.max_history = max_history


def _configs(dataset: sequence_files.Dataset) -> list[SequenceConfig]:
  return [
      SequenceConfig(name="default", description=f"{dataset.title} from "
                     f"{' or '.join(dataset.files)}: 5-core in one pass, users split 80/10/10 "
                     f"(seed 0), history capped at {dataset.max_history}."),
      SequenceConfig(name="tiny", max_history=TINY_MAX_HISTORY,
                     description=f"For tests: small files in the layout of {dataset.files[0]} "
                     f"(such as data/sequences/{dataset.name}/), the default's rules, history "
                     f"capped at {TINY_MAX_HISTORY}."),
  ]


class _SequenceBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
  """One interaction-sequence dataset (`DATASET`, a key of `sequence_files.DATASETS`)."""

  DATASET = ""
  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "First release."}

  @property
  def dataset(self) -> sequence_files.Dataset:
    return sequence_files.DATASETS[self.DATASET]

  @property
  def max_history(self) -> int:
    return self.builder_config.max_history or self.dataset.max_history

  def _info(self) -> tfds.core.DatasetInfo:
    # Field names only: the vocabulary sizes go to schema.json at build time.
    return tfds.core.DatasetInfo(
        builder=self, description=__doc__.split("\n", 1)[0],
        features=schema_lib.tfds_features(logs.declared_schema((), has_recall_log=False)),
        homepage=self.dataset.homepage, citation=self.dataset.citation)

  def _split_generators(self, dl_manager):
    config, dataset = self.builder_config, self.dataset
    path = sequence_files.find_file(dataset, manual_files.manual_dir(dl_manager))
    prepared = sequences.prepare(dataset.read(path), min_count=config.min_count,
                                 kcore_mode=config.kcore, seed=config.seed)
    source = f"{self.name}/{config.name}"
    schema = write_side_files(str(self.data_dir), prepared, source=source,
                              max_history=self.max_history)
    validator = validation.RecordValidator(schema, policy="error", source=source)
    return {split: self._generate_examples(prepared, split, validator)
            for split in sequences.SPLITS}

  def _generate_examples(self, prepared, split, validator):
    for record in records(prepared, split, self.max_history):
      validator.check(record)
      yield int(record[schema_lib.REQUEST_ID]), record


class AmazonBooks(_SequenceBuilder):
  """Amazon Books 5-core reviews as interaction sequences."""

  DATASET = "books"
  BUILDER_CONFIGS = _configs(sequence_files.DATASETS["books"])
  MANUAL_DOWNLOAD_INSTRUCTIONS = """\
  Download reviews_Books_5.json.gz (Books, 5-core) from https://jmcauley.ucsd.edu/data/amazon/
  and put it (or it unpacked, reviews_Books_5.json) in the manual dir.
  """


class Gowalla(_SequenceBuilder):
  """Gowalla check-ins as interaction sequences."""

  DATASET = "gowalla"
  BUILDER_CONFIGS = _configs(sequence_files.DATASETS["gowalla"])
  MANUAL_DOWNLOAD_INSTRUCTIONS = """\
  Download loc-gowalla_totalCheckins.txt.gz from https://snap.stanford.edu/data/loc-gowalla.html
  and put it (or it unpacked, loc-gowalla_totalCheckins.txt) in the manual dir.
  """


class Retailrocket(_SequenceBuilder):
  """RetailRocket view events as interaction sequences."""

  DATASET = "retailrocket"
  BUILDER_CONFIGS = _configs(sequence_files.DATASETS["retailrocket"])
  MANUAL_DOWNLOAD_INSTRUCTIONS = """\
  Download the archive of https://www.kaggle.com/datasets/retailrocket/ecommerce-dataset, unpack
  it and put events.csv in the manual dir.
  """


class Taobao(_SequenceBuilder):
  """Taobao UserBehavior page views as interaction sequences."""

  DATASET = "taobao"
  BUILDER_CONFIGS = _configs(sequence_files.DATASETS["taobao"])
  MANUAL_DOWNLOAD_INSTRUCTIONS = """\
  Download UserBehavior.csv.zip from https://tianchi.aliyun.com/dataset/dataDetail?dataId=649,
  unpack it and put UserBehavior.csv in the manual dir.
  """


BUILDERS = (AmazonBooks, Gowalla, Retailrocket, Taobao)
# The TFDS names (snake_case class names); `registry.REAL_LOG_BUILDERS` lists them for
# `pipelines.prepare`.
BUILDER_NAMES = ("amazon_books", "gowalla", "retailrocket", "taobao")


def schema_of(prepared: sequences.Prepared) -> schema_lib.LogSchema:
  features = {}
  if prepared.category_raw is not None:
    features["category"] = max(2, len(prepared.category_raw) + 1)
  return schema_lib.LogSchema(num_users=prepared.num_users + 1,
                              num_items=prepared.num_items + 1, user_features={},
                              item_features=features, has_recall_log=False)


def catalog_of(prepared: sequences.Prepared) -> schema_lib.ItemCatalog:
  """Item features and the train split's interactions per item (clicks = exposures)."""
  counts = np.bincount(prepared.items[prepared.split_rows("train")],
                       minlength=prepared.num_items + 1).astype(np.int64)
  features = {}
  if prepared.item_category is not None:
    features["category"] = prepared.item_category
  return schema_lib.ItemCatalog(features=features, click_count=counts, exposure_count=counts.copy())


def write_side_files(directory: str, prepared: sequences.Prepared, *, source: str,
                     max_history: int) -> schema_lib.LogSchema:
  """schema.json, catalog.npz, ids.npz, stats.json and sequences.json into `directory`."""
  schema = schema_of(prepared)
  summary = {"source": source, "num_users": prepared.num_users, "num_items": prepared.num_items,
             "num_days": prepared.stats["time"]["days"], "has_recall_log": False, "stages": []}
  for split in sequences.SPLITS:
    interactions = prepared.stats["splits"][split]["interactions"]
    summary.update({f"{split}_{key}": interactions for key in logs.COUNT_KEYS})
  details = {"source": source, **prepared.stats, "max_history": max_history,
             "split_rule": SPLIT_RULE, "records": RECORD_LAYOUT}
  summary["sequences"] = details
  categories = ({"category": prepared.category_raw} if prepared.category_raw is not None else {})
  logs.save_side_files(directory, schema, catalog_of(prepared),
                       raw_ids=logs.raw_id_arrays(prepared.user_raw, prepared.item_raw, {},
                                                  categories),
                       stats=summary)
  atomic_files.atomic_write_text(os.path.join(directory, SEQUENCES_FILE),
                                 json.dumps(details, indent=2))
  return schema


_ONE = np.ones(1, np.int64)


def records(prepared: sequences.Prepared, split: str, max_history: int):
  """The split's records (module docstring), by request id."""
  first, last = prepared.split_users[split]
  items, days, offsets = prepared.items, prepared.days, prepared.offsets
  for user in range(first, last + 1):
    start = int(offsets[user - 1])
    sequence = items[start:offsets[user]]
    for j in range(len(sequence)):
      item = sequence[j:j + 1]
      yield {
          schema_lib.REQUEST_ID: np.int64(start + j + 1),
          schema_lib.DAY: np.int64(days[start + j]),
          schema_lib.USER_ID: np.int64(user),
          schema_lib.HISTORY: sequence[max(0, j - max_history):j],
          schema_lib.EXPOSED: item, schema_lib.CLICKED: _ONE, schema_lib.RECALLED: item,
      }

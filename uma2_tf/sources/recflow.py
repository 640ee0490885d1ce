"""`recflow`: RecFlow (Kuaishou, ICLR 2025, CC BY-SA 4.0) read from its released files.

    python -m pipelines.prepare --dataset=recflow/default --manual_dir=/data/RecFlow
    python -m pipelines.train --dataset=recflow/default --b_stages=rank_neg

The TFDS builder `Recflow` and its configs (which days, which label, which user fields). RecFlow
cannot be downloaded from here: the user downloads it (see `MANUAL_DOWNLOAD_INSTRUCTIONS`) and
passes the directory holding `realshow/`, `all_stage/`, ... as TFDS's manual dir. The release's
layout, and how its rows become request records, are `recflow_files`' (which reads them).

Every count (rows read, dropped, missing) and the files read go to `recflow_source.json` beside the
dataset's `stats.json`; the records, side files and validation are `uma2_tf.sources.logs`'.

**Scale.** `Recflow` holds the whole log in memory (`logs.write`): the 1.9B stage samples of the 37
days are several tens of GB of item and stage arrays before the records are built.
`recflow_beam.RecflowBeam` (the `[beam]` extra; `pipelines.prepare --beam_pipeline_options=...`)
prepares the same dataset as an Apache Beam pipeline instead: one worker per day reads it
(`recflow_files.read_day`), and `logs_beam.write` builds the vocabularies, the histories (per user)
and the side files, so no machine holds the whole log. Or build fewer days:
`Recflow(config=RecflowConfig(name=..., train_dates=..., test_dates=...), data_dir=...)`.
"""
from __future__ import annotations

import datetime
import json
import os
from typing import Sequence

import tensorflow_datasets as tfds

from uma2_tf import atomic_files
from uma2_tf.data import schema as schema_lib
from uma2_tf.sources import logs
from uma2_tf.sources import manual_files
from uma2_tf.sources import recflow_files

SOURCE_FILE = "recflow_source.json"


def date_range(first: str, last: str) -> tuple[str, ...]:
  start = datetime.date.fromisoformat(first)
  days = (datetime.date.fromisoformat(last) - start).days
  return tuple((start + datetime.timedelta(days=d)).isoformat() for d in range(days + 1))


# The release's split (retrieval/file.txt and the evaluation scripts).
DEFAULT_TRAIN_DATES = date_range("2024-01-13", "2024-02-17")
DEFAULT_TEST_DATES = ("2024-02-18",)
# The fixture's (data/recflow/RecFlow).
TINY_TRAIN_DATES = ("2024-01-13", "2024-01-14")
TINY_TEST_DATES = ("2024-01-15",)


class RecflowConfig(tfds.core.BuilderConfig):
  """Which days, which label and which user fields; everything else is RecFlow's layout.

  Args:
    train_dates, test_dates: YYYY-MM-DD days of each split.
    label: the positive: `effective_view`, `long_view` or `like`.
    user_features: request columns kept as categorical user features (of age, gender, province,
      device_id).
    stage_source: where the stage samples come from: `all_stage` feather files, `request_id_dict`
      pickles, or `auto` (all_stage when the day's file exists, else request_id_dict).
  """

  def __init__(self, *, train_dates: Sequence[str], test_dates: Sequence[str],
               label: str = "effective_view",
               user_features: Sequence[str] = recflow_files.USER_FEATURES,
               stage_source: str = "auto", **kwargs):
    super().__init__(**kwargs)
    if label not in recflow_files.LABELS:
      raise ValueError(f"recflow: label must be one of {recflow_files.LABELS}, "
                       f"got {label!r}")
    known = (*recflow_files.USER_FEATURES, *recflow_files.OPTIONAL_USER_FEATURES)
    unknown = [f for f in user_features if f not in known]
    if unknown:
      raise ValueError(f"recflow: unknown user feature(s) {unknown}; RecFlow has {known}")
    if stage_source not in recflow_files.STAGE_SOURCES:
      raise ValueError(f"recflow: stage_source must be one of {recflow_files.STAGE_SOURCES}, "
                       f"got {stage_source!r}")
    overlap = sorted(set(train_dates) & set(test_dates))
    if overlap or not train_dates or not test_dates:
      raise ValueError(f"recflow: train and test dates must be non-empty and disjoint "
                       f"(both: {overlap})")
    for d in (*train_dates, *test_dates):
      datetime.date.fromisoformat(d)  # ValueError on a bad date.
    self.train_dates = tuple(train_dates)
    self.test_dates = tuple(test_dates)
    self.label = label
    self.user_features = tuple(user_features)
    self.stage_source = stage_source

  @property
  def splits(self) -> dict:
    return {"train": list(self.train_dates), "test": list(self.test_dates)}


def _configs():
  out = []
  for base, (train, test), what in (
      ("default", (DEFAULT_TRAIN_DATES, DEFAULT_TEST_DATES),
       "RecFlow's own split: train 2024-01-13..2024-02-17, test 2024-02-18"),
      ("tiny", (TINY_TRAIN_DATES, TINY_TEST_DATES),
       "the fixture data/recflow/RecFlow (train 2024-01-13..14, test 2024-01-15)")):
    for label in recflow_files.LABELS:
      name = (base if label == "effective_view"
              else (label if base == "default" else f"{base}_{label}"))
      out.append(RecflowConfig(name=name, description=f"{what}; positives: {label} == 1.",
                               train_dates=train, test_dates=test, label=label))
  return out


class Recflow(tfds.core.GeneratorBasedBuilder):
  """RecFlow request records: exposure, clicks and the recall set with each video's stage."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "First release."}
  BUILDER_CONFIGS = _configs()
  MANUAL_DOWNLOAD_INSTRUCTIONS = """\
  RecFlow (CC BY-SA 4.0) is downloaded by hand: follow "Download the data" in
  https://github.com/RecFlow-ICLR/RecFlow (USTC Drive link; a Hugging Face copy exists too, whose
  all_stage/ lacks 2024-01-13: that day is then read from request_id_dict/). Pass the directory that
  holds realshow/, all_stage/ (and/or request_id_dict/) and others/ as the manual dir:
  `python -m pipelines.prepare --dataset=recflow/default --manual_dir=<RecFlow dir>`. Only the days
  of the config are read (default: 2024-01-13 .. 2024-02-18); seq_effective_50_dict/,
  ubm_seq_request_id_dict/ and the test files in others/ are not needed.
  """

  def _info(self) -> tfds.core.DatasetInfo:
    config = self.builder_config
    return tfds.core.DatasetInfo(
        builder=self, description=__doc__.split("\n", 1)[0],
        features=schema_lib.tfds_features(
            logs.declared_schema(config.user_features, recflow_files.STAGES)),
        homepage="https://github.com/RecFlow-ICLR/RecFlow",
        citation="Liu et al., RecFlow: An Industrial Full Flow Recommendation Dataset, ICLR 2025.")

  def _split_generators(self, dl_manager):
    config = self.builder_config
    manual_dir = checked_manual_dir(dl_manager)
    dates = sorted({*config.train_dates, *config.test_dates})
    tables, source = recflow_files.read_tables(manual_dir, dates, label=config.label,
                                               user_features=config.user_features,
                                               stage_source=config.stage_source)
    name = f"recflow/{config.name}"
    directory = str(self.data_dir)
    generators = logs.write(directory, tables, config.splits, source=name)
    write_source_file(source["days"], directory=directory, manual_dir=manual_dir, name=name,
                      label=config.label, splits=config.splits)
    return {split: self._generate_examples(examples) for split, examples in generators.items()}

  def _generate_examples(self, examples):
    yield from examples


def checked_manual_dir(dl_manager) -> str:
  """TFDS's manual dir, which must exist (on any file system tf.io.gfile reads: gs://, hdfs://)."""
  import tensorflow as tf

  manual = manual_files.manual_dir(dl_manager)
  if not manual or not tf.io.gfile.isdir(manual):
    raise FileNotFoundError(
        f"recflow: the manual dir {manual or '(none given)'} does not exist; download "
        "RecFlow (https://github.com/RecFlow-ICLR/RecFlow, 'Download the data') and pass the "
        "directory holding realshow/ and all_stage/: python -m pipelines.prepare "
        "--dataset=recflow/<config> --manual_dir=<dir>")
  return manual


def write_source_file(days, *, directory: str, manual_dir: str, name: str, label: str,
                      splits) -> None:
  """Writes `SOURCE_FILE` into the dataset's directory: what `days` read, and how it was
  labelled."""
  source = recflow_files.source_description(manual_dir, days)
  source.update(name=name, label=label, splits=splits,
                history="computed from the label's clicks in earlier requests of the days read "
                        "(seq_effective_50_dict not read)")
  atomic_files.atomic_write_text(os.path.join(directory, SOURCE_FILE), json.dumps(source, indent=2))

"""The interface every negative sampler implements, and the tf.data pipeline that runs one.

A sampler is built from its config for one dataset and called, inside the tf.data graph, on a batch
of parsed request records with a stateless seed; it returns per-positive training examples keyed by
`batch_keys` (one row per clicked item: the user's fields, `pos_item`, and whatever negatives the
sampler draws). A config says how to build its sampler:

    class MyConfig:                       # a frozen dataclass
      seed: int = 0
      requests_per_batch: int = 256
      def check_for_schema(self, schema, dataset_name): ...   # ValueError on what the logs lack
      def build(self, dataset) -> Sampler: ...

    ds = make_training_dataset(dataset, MyConfig(), batch_size=512)
"""
from __future__ import annotations

import abc
from typing import Mapping, Protocol

import numpy as np

from uma2_tf.data import reading
from uma2_tf.data import schema as schema_lib
from uma2_tf.data.batch_keys import FILL_EVENTS, FILL_EVENTS_KEY, POS_ITEM


class Sampler(abc.ABC):
  """Turns a batch of parsed request records into per-positive training examples.

  A sampler that adds something per training batch (not per positive: e.g. candidates shared by
  the batch) sets `adds_per_batch` and implements `per_batch`, applied after rebatching.
  """

  adds_per_batch = False

  @abc.abstractmethod
  def __call__(self, requests: Mapping, seed) -> dict:
    """`requests`: the dict `schema.parse_requests` returns; `seed`: a stateless seed, int64[2]."""

  def per_batch(self, batch: dict, seed) -> dict:
    """The training batch with what the sampler adds to it as a whole (`adds_per_batch`)."""
    return batch


def positive_examples(requests: Mapping, user_features, max_history: int, positives=None):
  """(row, example): one example per clicked item with the user's fields, and its request's row.

  `positives`: the requests' clicked items (ragged), when the caller has them already.

  The example holds `request_id`, `day`, `user_id`, the user features, `history` (the newest
  `max_history` clicks, right-padded with 0) and `pos_item`; a sampler adds its negatives.
  """
  import tensorflow as tf

  if positives is None:
    is_click = tf.equal(requests[schema_lib.CLICKED], 1)
    positives = tf.ragged.boolean_mask(requests[schema_lib.EXPOSED], is_click)
  row = positives.value_rowids()  # Request of each positive.
  history = requests[schema_lib.HISTORY]
  history = history[:, -max_history:].to_tensor(shape=[None, max_history])
  example = {
      schema_lib.REQUEST_ID: tf.gather(requests[schema_lib.REQUEST_ID], row),
      schema_lib.DAY: tf.gather(requests[schema_lib.DAY], row),
      schema_lib.USER_ID: tf.gather(requests[schema_lib.USER_ID], row),
      **{name: tf.gather(requests[name], row) for name in user_features},
      schema_lib.HISTORY: tf.gather(history, row),
      POS_ITEM: positives.flat_values,
  }
  return row, example


class SamplerConfig(Protocol):
  """What `make_training_dataset` needs of a sampler's config."""

  seed: int
  requests_per_batch: int

  def check_for_schema(self, schema, dataset_name: str) -> None:
    ...

  def build(self, dataset: reading.BuiltDataset) -> Sampler:
    ...


def make_training_dataset(dataset: reading.BuiltDataset, config: SamplerConfig, batch_size: int, *,
                          split: str = "train", input_context=None, shuffle: bool = True,
                          shuffle_buffer: int = 8192, drop_remainder: bool = False, keep=None):
  """The training input: batches of `batch_size` positives, each with its negatives.

  Args:
    dataset: a `reading.BuiltDataset`.
    config: how negatives are drawn.
    batch_size: positives per batch (per replica when `input_context` is given: pass the per-replica
      size, e.g. `input_context.get_per_replica_batch_size(global_batch)`).
    split: which split's requests to sample.
    input_context: a `tf.distribute.InputContext`; each input pipeline reads its own part of the
      records and draws with its own seed.
    shuffle: shuffle shards and records (deterministically from `config.seed`, anew each epoch).
    keep: a predicate on parsed requests: only those are sampled (`splits.Holdout.keep_train`
      leaves the validation records out).
  """
  if split not in dataset.split_files:
    raise ValueError(f"{dataset.name} has no split {split!r}; it has {sorted(dataset.split_files)}")
  config.check_for_schema(dataset.schema, dataset.name)
  pipeline_id = input_context.input_pipeline_id if input_context is not None else 0
  sampler = config.build(dataset)
  requests = reading.read_requests(
      dataset.split_files[split], dataset.schema, config.requests_per_batch,
      shuffle_buffer=shuffle_buffer if shuffle else 0, seed=config.seed + 1000 * pipeline_id,
      input_context=input_context, keep=keep)
  return sample_dataset(requests, sampler, batch_size, seed=config.seed + 1000 * pipeline_id,
                        drop_remainder=drop_remainder)


def sample_dataset(requests, sampler: Sampler, batch_size: int, *, seed: int = 0,
                   drop_remainder: bool = False):
  """Applies `sampler` to a dataset of parsed request batches and rebatches into `batch_size`."""
  import tensorflow as tf

  # One int64 per request batch, the same sequence for the same seed but a new one each epoch.
  batch_seeds = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True)
  ds = tf.data.Dataset.zip(requests, batch_seeds)
  ds = ds.map(lambda r, s: sampler(r, tf.stack([s, tf.constant(seed, tf.int64)])),
              num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
  ds = ds.rebatch(batch_size, drop_remainder=drop_remainder)
  if sampler.adds_per_batch:
    batch_seeds = tf.data.Dataset.random(seed=seed + 1, rerandomize_each_iteration=True)
    ds = tf.data.Dataset.zip(ds, batch_seeds).map(
        lambda b, s: sampler.per_batch(b, tf.stack([s, tf.constant(seed + 1, tf.int64)])),
        num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
  return ds.prefetch(tf.data.AUTOTUNE)


def count_fill_events(examples) -> dict:
  """Sums `fill_events` over a dataset of examples: {"positives": n, "a_padded": k, ...}."""
  totals = np.zeros(len(FILL_EVENTS), np.int64)
  positives = 0
  for batch in examples:
    events = batch[FILL_EVENTS_KEY].numpy()
    totals += events.sum(axis=0)
    positives += events.shape[0]
  return {"positives": positives, **{name: int(v) for name, v in zip(FILL_EVENTS, totals)}}

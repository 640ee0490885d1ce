"""In-batch negatives: every clicked item is one example, and the batch's other positives are its
negatives (the softmax of `tasks.retrieval`), so the sampler draws nothing.

    config = SamplingConfig(strategy="in_batch")
    ds = samplers.make_training_dataset(dataset, config, batch_size=512)
    batch["pos_item"]      # int64[512]: the positives, which are also each other's negatives

A batch is a random mix of positives from many requests (shuffled records, rebatched), so a
popular item is a negative about as often as it is a positive: the popularity bias the task's logQ
correction removes. `fill_events` is all zeros (no pool can run short); it is there so the
trainer counts positives the same way for every sampler.
"""
from __future__ import annotations

from typing import Mapping, Sequence

from uma2_tf.data.batch_keys import FILL_EVENTS, FILL_EVENTS_KEY, POS_ITEM
from uma2_tf.data.samplers import base


class InBatchSampler(base.Sampler):
  """Per-positive examples without negatives (`config`: a `SamplingConfig`)."""

  def __init__(self, config, user_features: Sequence[str] = ()):
    self.config = config
    self.user_features = tuple(user_features)

  def __call__(self, requests: Mapping, seed) -> dict:
    import tensorflow as tf

    del seed  # Nothing is drawn.
    _, example = base.positive_examples(requests, self.user_features, self.config.max_history)
    example[FILL_EVENTS_KEY] = tf.zeros([tf.shape(example[POS_ITEM])[0], len(FILL_EVENTS)],
                                        tf.int32)
    return example

"""Negative Samples Debias Network: the two propensity heads of UMA².

    nsdn = NSDN(tower.embeddings)                   # shares the tower's embedding tables
    p1_logits, p2_logits = nsdn(user_vector, item_vectors)   # [B, M] each

- `p1 = P(recalled | u, i)`, task Entire→Recall (ER): 1 for recalled items (positives, A, B), 0 for C.
- `p2 = P(exposed | recalled, u, i)`, task Recall→Exposure (RE): 1 for exposed (positives, A), 0 for B.

Both heads share a first layer over the concatenated (user, item) vector and have their own
second layer and logit. The first layer is applied as `W_u·u + W_i·i` — the same as a dense layer
on the concatenation — so the user half is computed once per positive instead of once per
candidate, which keeps UMA²'s cost over the plain GMM small.
"""
from __future__ import annotations

import uma2_tf  # noqa: F401

from typing import Sequence

import tensorflow as tf
import tf_keras as keras

from uma2_tf.models.features import FeatureEmbeddings


class NSDN(keras.layers.Layer):
  """Propensity heads over embedded (user, item) features.

  Args:
    embeddings: the `FeatureEmbeddings` whose vectors the heads read (the tower's own, to share
      tables, or a separate instance to give the heads their own).
    shared_units: width of the shared first layer.
    head_units: widths of each head's own hidden layers.
  """

  def __init__(self, embeddings: FeatureEmbeddings, shared_units: int = 64,
               head_units: Sequence[int] = (32,), **kwargs):
    super().__init__(**kwargs)
    self.embeddings = embeddings
    self.user_part = keras.layers.Dense(shared_units, use_bias=True, name="shared_user")
    self.item_part = keras.layers.Dense(shared_units, use_bias=False, name="shared_item")
    self.er_head = keras.Sequential(
        [keras.layers.Dense(u, activation="relu") for u in head_units] + [keras.layers.Dense(1)],
        name="er_head")
    self.re_head = keras.Sequential(
        [keras.layers.Dense(u, activation="relu") for u in head_units] + [keras.layers.Dense(1)],
        name="re_head")

  def call(self, user_vector, item_vectors):
    """user_vector [B, Du], item_vectors [B, M, Di] -> (p1 logits [B, M], p2 logits [B, M])."""
    hidden = tf.nn.relu(self.user_part(user_vector)[:, tf.newaxis, :] + self.item_part(item_vectors))
    return self.er_head(hidden)[..., 0], self.re_head(hidden)[..., 0]

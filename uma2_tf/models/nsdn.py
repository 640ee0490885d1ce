"""Negative Samples Debias Network: the two propensity heads of UMA².

    nsdn = NSDN(tower.embeddings)                   # shares the tower's embedding tables
    p1_logits, p2_logits = nsdn(user_vector, item_vectors)   # [B, M] each

- `p1 = P(recalled | u, i)`, task Entire→Recall (ER): 1 for recalled items (positives, A, B), 0
  for C.
- `p2 = P(exposed | recalled, u, i)`, task Recall→Exposure (RE): 1 for exposed (positives, A), 0
  for B.

Both heads share a first layer over the concatenated (user, item) vector and have their own
second layer and logit (computed side by side as one masked stack, see `NSDN.__init__`). The
first layer is applied as `W_u·u + W_i·i` — the same as a dense layer on the concatenation — so
the user half is computed once per positive instead of once per candidate, which keeps UMA²'s
cost over the plain GMM small.
"""
from __future__ import annotations

import uma2_tf  # noqa: F401

from typing import Sequence

import numpy as np
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
    # The two heads run side by side as one stack: layer j holds both heads' units, and its kernel
    # is masked block-diagonal (beyond the first layer, which both read from the shared layer), so
    # each head sees only its own units — the same function as two separate heads, in half as
    # many small matmuls (which is what UMA²'s extra time over the GMM goes to).
    self.head_layers = []
    previous = None
    for i, units in enumerate((*head_units, 1)):
      layer = keras.layers.Dense(2 * units, activation="relu" if i < len(head_units) else None,
                                 name=f"heads_{i}")
      mask = None
      if previous is not None:
        mask = tf.constant(_block_diagonal(previous, units), tf.float32)
      self.head_layers.append((layer, mask))
      previous = units

  def call(self, user_vector, item_vectors, item_index=None):
    """user_vector [B, Du], item_vectors [B, M, Di] -> (p1 logits [B, M], p2 logits [B, M]).

    With `item_index` [B, M], `item_vectors` [U, Di] holds each distinct item once and slot
    (b, m) is item `item_index[b, m]`: the item half of the first layer then runs once per
    distinct item, like the tower's item side (`UMA2Model.dedup_items`).
    """
    item_part = self.item_part(item_vectors)
    if item_index is not None:
      item_part = tf.gather(item_part, item_index)
    x = tf.nn.relu(self.user_part(user_vector)[:, tf.newaxis, :] + item_part)
    for layer, mask in self.head_layers:
      if mask is None:
        x = layer(x)
      else:
        if not layer.built:
          layer.build(x.shape)
        # The kernel reads in the compute dtype (16 bits under mixed precision): so must the mask.
        x = tf.tensordot(x, layer.kernel * tf.cast(mask, x.dtype), axes=1) + layer.bias
        if layer.activation is not None:
          x = layer.activation(x)
    return x[..., 0], x[..., 1]


def _block_diagonal(inputs_per_head: int, units_per_head: int) -> np.ndarray:
  """Mask of a layer of both heads: head 1's units read head 1's inputs, head 2's read head 2's."""
  mask = np.zeros((2 * inputs_per_head, 2 * units_per_head), np.float32)
  mask[:inputs_per_head, :units_per_head] = 1
  mask[inputs_per_head:, units_per_head:] = 1
  return mask

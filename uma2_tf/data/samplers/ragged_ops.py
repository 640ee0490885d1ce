"""In-graph set operations on the ragged rows of a batch of requests, shared by samplers.

    in_row = isin_rows(row, items, pools, num_items)      # items[p, j] in pools[row[p]]?
    items, mask, replaced, padded = draw_from_pools(pools, row, n, seed)
    kept, ok = first_valid(draws, draws_ok, n)

Item ids are int64 in [0, num_items); rows are request indices of the batch. Everything is
vectorised over the batch (sorted keys and binary search, stateless random ops).
"""
from __future__ import annotations

import tensorflow as tf


def row_isin(values, sets, num_items: int):
  """values[r, j] in sets[r], both RaggedTensors over the same rows; ragged bool like `values`."""
  flat = isin_rows(values.value_rowids(), values.flat_values[:, tf.newaxis], sets, num_items)
  return values.with_flat_values(flat[:, 0])


def isin_rows(row, values, sets, num_items: int):
  """values[p, j] in sets[row[p]] for dense values [P, M] and a ragged `sets` [R, None]."""
  # One sorted key per (row, item) of the sets; a 1-D binary search then answers every query.
  keys = tf.sort(sets.value_rowids() * num_items + sets.flat_values)
  keys = tf.concat([keys, tf.constant([-1], tf.int64)], axis=0)  # Never empty; -1 matches nothing.
  query = row[:, tf.newaxis] * num_items + values
  flat_query = tf.reshape(query, [-1])
  pos = tf.searchsorted(keys[:-1], flat_query, out_type=tf.int64)
  found = tf.equal(tf.gather(keys, pos), flat_query)
  return tf.reshape(found, tf.shape(values))


def draw_from_pools(pool, row, n: int, seed):
  """Draws n items per positive from its request's pool.

  Without replacement when the pool holds at least n items; with replacement when it is smaller
  but not empty; padded and masked when it is empty.

  Returns:
    items int64[P, n], mask bool[P, n], with_replacement bool[P], padded bool[P].
  """
  sizes = tf.gather(pool.row_lengths(), row)
  width = tf.maximum(tf.reduce_max(pool.row_lengths()), n)
  dense = tf.gather(pool.to_tensor(shape=tf.stack([pool.nrows(), width])), row)
  num_pos = tf.shape(row, out_type=tf.int64)[0]
  s_wor, s_wr = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
  # Without replacement: the n smallest of one uniform score per pool slot (slots past the pool's
  # end score 2, so they are never among the n smallest when the pool is big enough).
  scores = tf.random.stateless_uniform(tf.stack([num_pos, width]), s_wor)
  scores = tf.where(tf.range(width, dtype=tf.int64)[tf.newaxis, :] < sizes[:, tf.newaxis], scores,
                    2.0)
  _, idx_wor = tf.math.top_k(-scores, k=n, sorted=False)
  idx_wr = tf.random.stateless_uniform(tf.stack([num_pos, n]), s_wr, minval=0,
                                       maxval=tf.int64.max, dtype=tf.int64)
  idx_wr = idx_wr % tf.maximum(sizes, 1)[:, tf.newaxis]
  enough = sizes >= n
  idx = tf.where(enough[:, tf.newaxis], tf.cast(idx_wor, tf.int64), idx_wr)
  items = tf.gather(dense, idx, batch_dims=1)
  nonempty = sizes > 0
  mask = tf.broadcast_to(nonempty[:, tf.newaxis], tf.shape(items))
  return items, mask, tf.logical_and(nonempty, tf.logical_not(enough)), tf.logical_not(nonempty)


def first_valid(draws, ok, n: int):
  """The first n draws per row that are `ok`, in draw order; mask False where fewer than n were."""
  m = tf.shape(draws, out_type=tf.int64)[1]
  rank = tf.range(m)[tf.newaxis, :] + tf.where(ok, tf.zeros_like(draws), m)
  order = tf.argsort(rank, axis=1, stable=True)[:, :n]
  return tf.gather(draws, order, batch_dims=1), tf.gather(ok, order, batch_dims=1)

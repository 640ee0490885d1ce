"""The optimisers: fused Adam is Keras's Adam; lazy Adam leaves untouched rows alone; by hand."""
import numpy as np
import pytest
import tensorflow as tf
import tf_keras as keras

from uma2_tf import optimizers, training

LR, B1, B2, EPS = 0.01, 0.9, 0.999, 1e-7


def _train(optimizer, batches):
  """An embedding table [6, 2] and a dense [2, 1] trained on `batches` of row ids."""
  table = tf.Variable(np.arange(12, dtype=np.float32).reshape(6, 2) / 12)
  dense = tf.Variable(np.array([[1.0], [-0.5]], np.float32))
  for ids in batches:
    with tf.GradientTape() as tape:
      loss = tf.reduce_sum(tf.matmul(tf.nn.embedding_lookup(table, tf.constant(ids)), dense) ** 2)
    grads = tape.gradient(loss, [table, dense])
    assert isinstance(grads[0], tf.IndexedSlices)  # The sparse path is the one tested.
    optimizer.apply_gradients(zip(grads, [table, dense]))
  return table.numpy(), dense.numpy(), optimizer


BATCHES = [[1, 3, 3], [2, 5, 1], [1, 1, 4]]


def test_fused_adam_is_keras_adam_with_sparse_and_dense_gradients():
  table, dense, adam = _train(keras.optimizers.Adam(LR), BATCHES)
  fused_table, fused_dense, fused = _train(optimizers.make("adam", LR), BATCHES)
  np.testing.assert_allclose(fused_table, table, atol=1e-6)
  np.testing.assert_allclose(fused_dense, dense, atol=1e-6)
  # Row 3, only in the first batch, still moved after it: Adam applies every row's momentum.
  assert not np.allclose(_train(optimizers.make("adam", LR), BATCHES[:1])[0][3], fused_table[3])
  # The same slots as Keras's Adam, so checkpoints are interchangeable.
  assert [v.name for v in fused.variables] == [v.name for v in adam.variables]
  for mine, theirs in zip(fused.variables, adam.variables):
    np.testing.assert_allclose(mine.numpy(), theirs.numpy(), atol=1e-6)


def test_one_step_by_hand():
  """First step on a row with gradient g: m = (1-β1) g, v = (1-β2) g², w -= α m / (√v + ε) with
  α = lr √(1-β2) / (1-β1); a duplicated id's gradients are summed first."""
  table0 = np.arange(12, dtype=np.float32).reshape(6, 2) / 12
  dense = np.array([1.0, -0.5], np.float32)
  grad = np.zeros_like(table0)
  for i in (1, 3, 3):  # loss = Σ (e_i · dense)²  ->  d/de_i = 2 (e_i · dense) dense
    grad[i] += 2 * (table0[i] @ dense) * dense
  m, v = (1 - B1) * grad, (1 - B2) * grad ** 2
  expected = table0 - LR * np.sqrt(1 - B2) / (1 - B1) * m / (np.sqrt(v) + EPS)
  for name in optimizers.OPTIMIZERS:
    table, _, _ = _train(optimizers.make(name, LR), BATCHES[:1])
    np.testing.assert_allclose(table, expected, atol=1e-6, err_msg=name)


def test_lazy_adam_leaves_the_rows_a_batch_does_not_touch():
  """Step 1 touches rows 1, 3; step 2 rows 2, 5, 1. Under lazy Adam row 3 keeps its step-1 weights
  and moments through step 2, rows 0 and 4 never move; row 1's step 2 is Adam's second step from
  its own moments (by hand)."""
  lazy_table, lazy_dense, lazy = _train(optimizers.make("lazy_adam", LR), BATCHES[:2])
  one_step, _, _ = _train(optimizers.make("lazy_adam", LR), BATCHES[:1])
  adam_table, adam_dense, _ = _train(keras.optimizers.Adam(LR), BATCHES[:2])
  table0 = np.arange(12, dtype=np.float32).reshape(6, 2) / 12
  np.testing.assert_array_equal(lazy_table[[0, 4]], table0[[0, 4]])
  np.testing.assert_array_equal(lazy_table[3], one_step[3])
  assert not np.allclose(adam_table[3], one_step[3])  # Adam moved it on momentum alone.
  np.testing.assert_allclose(lazy_dense, adam_dense, atol=1e-6)  # Dense variables: Adam.
  # Row 1 by hand: its gradients at step 1 (from table0) and step 2 (from its step-1 weights, and
  # the dense weights after step 1, which are Adam's).
  d0 = np.array([1.0, -0.5], np.float32)
  _, d1, _ = _train(keras.optimizers.Adam(LR), BATCHES[:1])
  g1 = 2 * (table0[1] @ d0) * d0
  g2 = 2 * (one_step[1] @ d1[:, 0]) * d1[:, 0]
  m = (1 - B1) * g1
  v = (1 - B2) * g1 ** 2
  m = m + (g2 - m) * (1 - B1)
  v = v + (g2 ** 2 - v) * (1 - B2)
  alpha = LR * np.sqrt(1 - B2 ** 2) / (1 - B1 ** 2)
  np.testing.assert_allclose(lazy_table[1], one_step[1] - alpha * m / (np.sqrt(v) + EPS),
                             atol=1e-6)
  m_slot = lazy._momentums[0].numpy()
  np.testing.assert_array_equal(m_slot[[0, 4]], 0)
  np.testing.assert_allclose(m_slot[1], m, atol=1e-6)


def test_an_unknown_optimizer_is_one_clear_error():
  with pytest.raises(ValueError, match="optimizer must be one of .*adam.*lazy_adam.*'sgd'"):
    training.TrainConfig(optimizer="sgd")
  with pytest.raises(ValueError, match="optimizer must be one of"):
    optimizers.make("sgd", LR)

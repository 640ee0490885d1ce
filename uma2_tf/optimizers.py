"""The training optimisers: Adam in one fused pass per variable, and lazy Adam for large tables.

    optimizer = optimizers.make("adam", learning_rate=1e-3)       # Keras's Adam, fused update
    optimizer = optimizers.make("lazy_adam", learning_rate=1e-3)  # only the rows a batch touches

`adam` is Keras's Adam (same slots, same checkpoints, same maths: m += (g - m)(1 - β1),
v += (g² - v)(1 - β2), w -= lr·√(1 - β2ᵗ)/(1 - β1ᵗ)·m / (√v + ε)), applied by TensorFlow's
`ResourceApplyAdam` kernel in one pass over the variable and its two slots. Keras applies a sparse
(embedding) gradient in about five passes over the whole table, each with a temporary of its size;
at the `paper` scale (1.63M users) that was 0.41 s of every step against 0.10 s fused
(docs/DESIGN.md, "Paper scale"). The results are Adam's to float rounding.

`lazy_adam` updates the moments and the weights of an embedding table's rows only where the batch
has a gradient (TF Addons' LazyAdam; dense variables get Adam). A row nobody in the batch touched
keeps its moments instead of decaying them and keeps drifting with its old momentum under Adam:
not the same optimiser, so its results differ from Adam's and are measured, not assumed.
"""
from __future__ import annotations

import uma2_tf  # noqa: F401

import tensorflow as tf
import tf_keras as keras

OPTIMIZERS = ("adam", "lazy_adam")


def make(name: str, learning_rate: float) -> keras.optimizers.Optimizer:
  """The optimiser called `name` (one of `OPTIMIZERS`)."""
  if name == "adam":
    return FusedAdam(learning_rate)
  if name == "lazy_adam":
    return LazyAdam(learning_rate)
  raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {name!r}")


class FusedAdam(keras.optimizers.Adam):
  """Keras's Adam with its update in TensorFlow's fused kernel (sparse gradients made dense)."""

  def _powers_and_lr(self, variable):
    step = tf.cast(self.iterations + 1, variable.dtype)
    beta_1 = tf.cast(self.beta_1, variable.dtype)
    beta_2 = tf.cast(self.beta_2, variable.dtype)
    return tf.pow(beta_1, step), tf.pow(beta_2, step), tf.cast(self.learning_rate, variable.dtype)

  def _slots(self, variable):
    index = self._index_dict[self._var_key(variable)]
    return self._momentums[index], self._velocities[index]

  def update_step(self, gradient, variable):
    if self.amsgrad or self.adaptive_epsilon:  # Not the kernel's maths: Keras's own update.
      return super().update_step(gradient, variable)
    if isinstance(gradient, tf.IndexedSlices):
      # Keras has summed duplicate indices already (`_deduplicate_sparse_grad`); a row without a
      # gradient gets a zero one, as Adam's maths for a sparse gradient says.
      rows = tf.shape(variable, out_type=gradient.indices.dtype)[0]
      gradient = tf.math.unsorted_segment_sum(gradient.values, gradient.indices, rows)
    m, v = self._slots(variable)
    beta_1_power, beta_2_power, lr = self._powers_and_lr(variable)
    return tf.raw_ops.ResourceApplyAdam(
        var=variable.handle, m=m.handle, v=v.handle, beta1_power=beta_1_power,
        beta2_power=beta_2_power, lr=lr, beta1=tf.cast(self.beta_1, variable.dtype),
        beta2=tf.cast(self.beta_2, variable.dtype), epsilon=tf.cast(self.epsilon, variable.dtype),
        grad=gradient)


class LazyAdam(FusedAdam):
  """Adam whose sparse updates touch only the rows in the gradient (their moments and weights)."""

  def update_step(self, gradient, variable):
    if not isinstance(gradient, tf.IndexedSlices) or self.amsgrad or self.adaptive_epsilon:
      return super().update_step(gradient, variable)
    m, v = self._slots(variable)
    beta_1_power, beta_2_power, lr = self._powers_and_lr(variable)
    beta_1 = tf.cast(self.beta_1, variable.dtype)
    beta_2 = tf.cast(self.beta_2, variable.dtype)
    alpha = lr * tf.sqrt(1 - beta_2_power) / (1 - beta_1_power)
    rows = gradient.indices  # Unique: Keras deduplicated them.
    m_rows, v_rows = tf.gather(m, rows), tf.gather(v, rows)
    m_rows += (gradient.values - m_rows) * (1 - beta_1)
    v_rows += (tf.square(gradient.values) - v_rows) * (1 - beta_2)
    m.scatter_update(tf.IndexedSlices(m_rows, rows))
    v.scatter_update(tf.IndexedSlices(v_rows, rows))
    return variable.scatter_sub(tf.IndexedSlices(
        alpha * m_rows / (tf.sqrt(v_rows) + tf.cast(self.epsilon, variable.dtype)), rows))

"""Keras mixed precision (mixed_float16, mixed_bfloat16) on every tower: 16-bit compute on float32
variables, a float32 loss and float32 outputs, loss scaling under float16 that gives the float32
gradient, training and evaluation on `tiny`."""
import uma2_tf  # noqa: F401

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_recommenders as tfrs
import tf_keras as keras

from uma2_tf import evaluation
from uma2_tf.data import samplers
from uma2_tf.models import towers
from uma2_tf.tasks import LossConfig, UMA2Task
from uma2_tf.models.uma2 import UMA2Model

POLICIES = {"mixed_float16": tf.float16, "mixed_bfloat16": tf.bfloat16}
# (use_nsdn, share_embeddings): each tower runs one per policy, so every tower meets both policies
# and, over the towers, every head configuration meets both policies too.
HEADS = [(True, True), (True, False), (False, True)]
TOWER_CASES = [(tower, policy, *HEADS[(i + j) % len(HEADS)])
               for i, tower in enumerate(towers.TOWERS) for j, policy in enumerate(POLICIES)]


@pytest.fixture
def set_policy():
  """`keras.mixed_precision.set_global_policy`, put back to float32 after the test: the policy is
  process-global and would otherwise leak into every later test."""
  try:
    yield keras.mixed_precision.set_global_policy
  finally:
    keras.mixed_precision.set_global_policy("float32")


@pytest.fixture(scope="module")
def batches(tiny_dataset):
  """Three small training batches of `tiny`, the same ones every time."""
  ds = samplers.make_training_dataset(tiny_dataset, samplers.SamplingConfig(), 32, shuffle=False)
  return list(ds.take(3))


def build(dataset, tower="youtube_dnn", use_nsdn=True, share_embeddings=True,
          model_class=UMA2Model):
  # Small MLPs: the dtypes are what is tested, not the widths.
  sizes = dict(hidden=(32,), output_dim=8)
  if tower == "fm":
    sizes = dict(factor_dim=8)
  elif tower.startswith("comirec"):  # No user MLP: its interests are mixes of history items.
    sizes = dict(output_dim=8)
  tw = towers.build_tower(tower, dataset.schema, dataset.catalog, **sizes)
  return model_class(tw, UMA2Task(LossConfig(use_nsdn=use_nsdn)),
                     share_embeddings=share_embeddings)


def as_dataset(batches, repeat=1):
  return tf.data.Dataset.from_generator(
      lambda: iter(batches * repeat),
      output_signature=tf.nest.map_structure(tf.TensorSpec.from_tensor, batches[0]))


def gradients(model, batch):
  with tf.GradientTape() as tape:
    loss = model.compute_loss(batch, training=True)
  return [tf.convert_to_tensor(g).numpy() for g in tape.gradient(loss, model.trainable_variables)]


@pytest.mark.parametrize("tower,policy,use_nsdn,share", TOWER_CASES)
def test_every_tower_computes_in_16_bits_and_trains_with_a_float32_loss(
    set_policy, tiny_dataset, batches, tower, policy, use_nsdn, share):
  set_policy(policy)
  compute = POLICIES[policy]
  model = build(tiny_dataset, tower, use_nsdn, share)
  model.compile(optimizer=keras.optimizers.Adam(1e-3), run_eagerly=True)  # No tracing: fast.
  history = model.fit(as_dataset(batches[:2]), epochs=1, verbose=0).history
  assert np.isfinite(history["loss"][-1])

  loss = model.compute_loss(batches[2], training=True)
  assert loss.dtype == tf.float32 and np.isfinite(float(loss))
  floats = [v for v in model.variables if v.dtype.is_floating]
  assert floats and all(v.dtype == tf.float32 for v in floats)
  layers = [layer for layer in model.submodules
            if isinstance(layer, (keras.layers.Dense, keras.layers.Embedding))]
  assert layers and all(layer.compute_dtype == compute.name for layer in layers)
  assert model.task.compute_dtype == "float32"
  assert isinstance(model.optimizer, keras.mixed_precision.LossScaleOptimizer) == (
      policy == "mixed_float16")

  # The layers ran in 16 bits; what evaluation and export read comes back as float32.
  inner = model._forward(batches[2], training=False)
  if use_nsdn:
    assert inner["er_logits"].dtype == compute
  assert all(out.dtype == tf.float32 for out in model(batches[2]).values())
  assert model.tower.user_embedding(batches[2]).dtype == tf.float32
  assert model.tower.item_embedding(tf.range(5, dtype=tf.int64)).dtype == tf.float32


class ScaledLossModel(UMA2Model):
  """UMA² with its loss times `factor`: small enough, a float16 backward pass underflows."""

  factor = 1.0

  def compute_loss(self, features, training=False):
    return self.factor * super().compute_loss(features, training)


@pytest.mark.parametrize("factor", [1.0, 1e-5])
def test_float16_train_step_gives_the_float32_gradient(set_policy, tiny_dataset, batches, factor):
  """One mixed_float16 `train_step` with SGD(lr=1/factor) moves each weight by minus its gradient
  over factor: it must be the float32 model's gradient of the same weights and batch. Gradients
  left scaled would be off by the loss scale (2^13..2^15); with the loss times 1e-5, the float16
  backward pass of an unscaled loss (TFRS's step) flushes the gradients to zero or to a few bits
  (off by 100% and more), so only a scaled-then-unscaled step matches there."""
  keras.utils.set_random_seed(0)
  batch = batches[0]
  reference = build(tiny_dataset, model_class=ScaledLossModel)
  reference.factor = factor
  reference(batch)
  weights = reference.get_weights()
  expected = gradients(reference, batch)

  set_policy("mixed_float16")
  model = build(tiny_dataset, model_class=ScaledLossModel)
  model.factor = factor
  model(batch)
  model.set_weights(weights)
  model.compile(optimizer=keras.optimizers.SGD(1.0 / factor), run_eagerly=True)
  assert isinstance(model.optimizer, keras.mixed_precision.LossScaleOptimizer)
  # A dynamic loss scale starts high (2^15); a step that overflows is skipped and the scale halved,
  # the weights untouched, so step until one is applied.
  before = [v.numpy() for v in model.trainable_variables]
  for _ in range(8):
    model.train_step(batch)
    after = [v.numpy() for v in model.trainable_variables]
    if any(np.any(a != b) for a, b in zip(after, before)):
      break
  assert float(model.optimizer.loss_scale) > 1.0
  for var, b, a, grad in zip(model.trainable_variables, before, after, expected):
    got = (b - a) * factor
    assert np.all(np.isfinite(got)), var.name
    # The float16 forward and backward passes alone move the gradient: by up to ~5% of a
    # variable's largest entry and ~3% in norm on the shared embedding tables, where the towers'
    # and the heads' contributions add up (well under 1% on the MLPs).
    np.testing.assert_allclose(got, grad, rtol=0, atol=0.1 * np.max(np.abs(grad)),
                               err_msg=var.name)
    assert np.linalg.norm(got - grad) <= 0.05 * np.linalg.norm(grad), var.name


def test_float32_train_step_is_tfrs_step(tiny_dataset, batches):
  """Without a loss scale the override is TFRS's step: same weights after two steps, bit for bit."""
  ours, theirs = build(tiny_dataset), build(tiny_dataset)
  for model in (ours, theirs):
    model(batches[0])
    model.compile(optimizer=keras.optimizers.Adam(1e-2), run_eagerly=True)
  theirs.set_weights(ours.get_weights())
  for batch in batches[:2]:
    got = ours.train_step(batch)
    expected = tfrs.models.Model.train_step(theirs, batch)
    assert set(got) == set(expected)
    assert float(got["loss"]) == float(expected["loss"])
  for a, b in zip(ours.get_weights(), theirs.get_weights()):
    np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("policy", sorted(POLICIES))
def test_mixed_precision_training_lowers_the_loss_and_evaluates(set_policy, tiny_dataset, batches,
                                                                policy):
  set_policy(policy)
  model = build(tiny_dataset)
  model.compile(optimizer=keras.optimizers.Adam(1e-2))  # Graph mode, as the trainer runs.
  before = float(model.compute_loss(batches[0], training=False))
  history = model.fit(as_dataset(batches, repeat=4), epochs=1, verbose=0).history
  after = float(model.compute_loss(batches[0], training=False))
  assert np.isfinite(history["loss"][-1]) and np.isfinite(after)
  assert after < before

  results = evaluation.Evaluator(tiny_dataset, ks=(10, 50), auc_positives=256).evaluate(model)
  values = [v for k, v in results["model"].items() if not k.startswith("avg_popularity@")]
  values += list(results["propensity_auc"].values())
  assert values and all(isinstance(v, float) and np.isfinite(v) for v in values)
  assert all(0.0 <= v <= 1.0 for v in values)


def test_a_mixed_precision_run_trains_through_the_trainer_and_exports_float32(
  set_policy, tiny_data_dir, tmp_path
):
  """`--precision` end to end: the trainer sets the policy for the run and puts the old one back;
  the export is float32 even when the exporting process has a mixed policy set."""
  from uma2_tf import export, training

  results = training.train(training.TrainConfig(
      dataset="uma2_simulated/tiny", data_dir=tiny_data_dir, output_dir=str(tmp_path / "run"),
      precision="mixed_bfloat16", epochs=1, batch_size=256, early_stopping_patience=0,
      evaluate_each_epoch=False), verbose=0)
  assert results["run"]["precision"] == "mixed_bfloat16"
  assert np.isfinite(results["model"]["recall@100"])
  assert keras.mixed_precision.global_policy().name == "float32"

  set_policy("mixed_float16")
  version = export.export_run(export.ExportConfig(run_dir=str(tmp_path / "run"),
                                                  export_dir=str(tmp_path / "export")))
  assert keras.mixed_precision.global_policy().name == "mixed_float16"
  exported = np.load(f"{version}/{export.ITEM_EMBEDDINGS}")["embeddings"]
  assert exported.dtype == np.float32 and np.isfinite(exported).all()

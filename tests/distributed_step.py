"""Run by test_distributed.py in its own process: TensorFlow's devices are fixed at start-up, and
this splits the CPU into two logical devices so MirroredStrategy has two replicas without a GPU.

    python tests/distributed_step.py DATA_DIR OUTPUT_DIR   -> prints one JSON line
"""
import uma2_tf  # noqa: F401

import dataclasses
import json
import sys

import tensorflow as tf

cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)

import numpy as np  # noqa: E402
import tf_keras as keras  # noqa: E402

from uma2_tf import distribute, training  # noqa: E402
from uma2_tf.data import batch_keys, samplers  # noqa: E402
from uma2_tf.sources import registry  # noqa: E402
from uma2_tf.tasks import LossConfig, SoftmaxConfig  # noqa: E402


def one_sgd_step(strategy, config, dataset, batch, weights):
  """Weight change of one SGD(lr=1) step on `batch` (the global batch) under `strategy`."""
  with strategy.scope():
    model = training.build_model(config, dataset)
    model(batch)
    model.set_weights(weights)
    optimizer = keras.optimizers.SGD(1.0)

  def step(replica_batch):
    with tf.GradientTape() as tape:
      loss = model.compute_loss(replica_batch, training=True)
    grads = tape.gradient(loss, model.trainable_variables)
    optimizer.apply_gradients(zip(grads, model.trainable_variables))

  before = [v.numpy() for v in model.trainable_variables]
  size = int(batch[batch_keys.POS_ITEM].shape[0])
  global_batch = tf.data.Dataset.from_tensor_slices(batch).batch(size)
  for replica_batch in strategy.experimental_distribute_dataset(global_batch):
    strategy.run(tf.function(step), args=(replica_batch,))
  return [v.numpy() - b for v, b in zip(model.trainable_variables, before)]


def main(data_dir, output_dir):
  dataset = registry.load("uma2_simulated/tiny", data_dir)
  report = {}
  mirrored = distribute.build_strategy("mirrored")
  report["replicas"] = mirrored.num_replicas_in_sync
  for name, use_nsdn in (("gmm", False), ("uma2", True)):
    config = training.TrainConfig(dataset="uma2_simulated/tiny", data_dir=data_dir,
                                  loss=LossConfig(use_nsdn=use_nsdn))
    batch = next(iter(samplers.make_training_dataset(dataset, config.sampling, 64, shuffle=False)))
    keras.utils.set_random_seed(0)
    reference = training.build_model(config, dataset)
    reference(batch)
    weights = reference.get_weights()
    one = one_sgd_step(tf.distribute.get_strategy(), config, dataset, batch, weights)
    two = one_sgd_step(mirrored, config, dataset, batch, weights)
    scale = max(float(np.abs(d).max()) for d in one)
    report[f"{name}_max_abs_update"] = scale
    report[f"{name}_max_rel_diff"] = (
      max(float(np.abs(a - b).max()) for a, b in zip(one, two)) / scale
    )
  config = training.TrainConfig(
    dataset="uma2_simulated/tiny",
    data_dir=data_dir,
    output_dir=output_dir,
    strategy="mirrored",
    epochs=1,
    batch_size=256,
  )
  report["fit_recall@100"] = training.train(config, verbose=0)["model"]["recall@100"]
  # The in-batch softmax with the streaming estimator: each replica softmaxes over its own share,
  # and the estimator counts global steps, its copies equal on both replicas.
  config = dataclasses.replace(
      config, output_dir=output_dir + "_in_batch", loss=LossConfig(use_nsdn=False),
      sampling=samplers.SamplingConfig(strategy="in_batch"),
      softmax=SoftmaxConfig(logq="streaming"))
  results = training.train(config, verbose=0)
  report["in_batch_recall@100"] = results["model"]["recall@100"]
  report["in_batch_steps"] = results["run"]["steps_per_epoch"]
  with mirrored.scope():
    model = training.build_model(config, dataset)
    model(batch)
    model.load_weights(output_dir + "_in_batch/checkpoints/final").expect_partial()
  estimator = model.task.estimator
  report["estimator_steps"] = [int(v.numpy()) for v in
                               mirrored.experimental_local_results(estimator.step)]
  gaps = [v.numpy() for v in mirrored.experimental_local_results(estimator.gap)]
  report["estimator_replicas_equal"] = bool((gaps[0] == gaps[1]).all())
  report["estimator_items_seen"] = int((gaps[0] != config.softmax.estimator_initial_gap).sum())
  print(json.dumps(report))


if __name__ == "__main__":
  main(*sys.argv[1:])

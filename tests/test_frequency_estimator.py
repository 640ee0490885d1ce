"""Streaming frequency estimation (Yi et al. 2019, Algorithm 2): the paper's arithmetic by hand,
checkpoints, convergence on a synthetic stream, and two replicas matching one device fed the global
batch.

The replicas run this file as a script in their own process (TensorFlow's devices and collectives
are fixed at start-up): Mirrored on two logical CPUs in the test; MultiWorkerMirrored only by hand,
as two local workers on two free ports (two more TensorFlow start-ups, ~30 s on 2 cores):

    python tests/test_frequency_estimator.py mirrored                   -> one JSON line
    python tests/test_frequency_estimator.py multi_worker INDEX PORT0 PORT1
"""
import uma2_tf  # noqa: F401

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
import tf_keras as keras

from uma2_tf.tasks.frequency_estimator import StreamingFrequencyEstimator

HASH, ALPHA, GAP0 = 32, 0.1, 10.0  # the small estimator of the stream tests (ids collide mod 32)


def _stream(seed, steps=30, max_id=100, max_size=12):
  """Global batches of ids: sizes 0..max_size, repeats and hash collisions included."""
  rng = np.random.default_rng(seed)
  return [rng.integers(0, max_id, size=rng.integers(0, max_size + 1)) for _ in range(steps)]


def _ids(values):
  return tf.constant(np.asarray(values, np.int64), tf.int64)


def _state(layer):
  return {"gap": layer.gap.numpy(), "last_step": layer.last_step.numpy(),
          "step": layer.step.numpy()}


def test_the_worked_example_step_by_step_and_a_repeated_id_counts_once():
  layer = StreamingFrequencyEstimator(hash_size=8, alpha=0.5, initial_gap=10.0)
  unseen = layer.probability(_ids([3, 11])).numpy()
  np.testing.assert_array_equal(unseen, np.float32([0.1, 0.1]))  # 1 / initial_gap
  gaps = []
  for t in range(1, 12):
    if t % 2:
      # Four copies of 3 update once: an update per copy would give 0.6875 at t=1, not 5.5.
      p = layer(_ids([[3, 3], [3, 3]]), training=True)
      assert p.shape == (2, 2) and np.all(p.numpy() == np.float32(1.0) / layer.gap.numpy()[3])
      gaps.append(float(layer.gap.numpy()[3]))
    else:
      layer.update(_ids([5] if t % 4 == 2 else []))  # another item, or an empty step
  assert gaps == [5.5, 3.75, 2.875, 2.4375, 2.21875, 2.109375]
  np.testing.assert_allclose(layer.probability(_ids([3])).numpy(), [1 / 2.109375], rtol=1e-7)
  assert int(layer.step.numpy()) == 11 and int(layer.last_step.numpy()[3]) == 11
  # Item 5 was hit at t = 2, 6, 10: gaps 0.5·10 + 0.5·2 = 6, 0.5·6 + 0.5·4 = 5, then 4.5. Item 13
  # shares its bucket (13 mod 8 = 5), so its estimate too.
  assert layer.gap.numpy()[5] == 4.5 and int(layer.last_step.numpy()[5]) == 10
  assert layer.probability(_ids([13])).numpy()[0] == np.float32(1 / 4.5)
  assert layer(_ids([3]), training=False).numpy()[0] == np.float32(1 / 2.109375)
  assert int(layer.step.numpy()) == 11  # inference does not count a step


def test_config_round_trips_and_bad_arguments_are_refused():
  layer = StreamingFrequencyEstimator(hash_size=64, alpha=0.2, initial_gap=5.0, name="freq")
  copy = StreamingFrequencyEstimator.from_config(layer.get_config())
  assert (copy.hash_size, copy.alpha, copy.initial_gap, copy.name) == (64, 0.2, 5.0, "freq")
  assert copy.gap.shape == (64,) and float(copy.gap.numpy().max()) == 5.0
  assert [w.trainable for w in copy.weights] == [False] * 3
  defaults = StreamingFrequencyEstimator()
  assert (defaults.hash_size, defaults.alpha, defaults.initial_gap) == (2**20, 0.01, 100.0)
  for bad in ({"hash_size": 0}, {"alpha": 0.0}, {"alpha": 1.5}, {"initial_gap": 0.0}):
    with pytest.raises(ValueError, match=next(iter(bad))):
      StreamingFrequencyEstimator(**bad)


@pytest.mark.parametrize("how", ["checkpoint", "keras_save_weights"])
def test_a_restored_estimator_continues_like_an_uninterrupted_one(how, tmp_path):
  stream, k = _stream(seed=1), 18
  whole = StreamingFrequencyEstimator(hash_size=HASH, alpha=ALPHA, initial_gap=GAP0)
  for batch in stream:
    whole.update(_ids(batch))

  def model():
    inputs = keras.Input(shape=(None,), dtype=tf.int64)
    layer = StreamingFrequencyEstimator(hash_size=HASH, alpha=ALPHA, initial_gap=GAP0)
    return keras.Model(inputs, layer(inputs)), layer

  first_model, first = model()
  for batch in stream[:k]:
    first.update(_ids(batch))
  path = str(tmp_path / "estimator")
  if how == "checkpoint":
    path = tf.train.Checkpoint(estimator=first).write(path)
  else:
    first_model.save_weights(path)
  restored_model, restored = model()
  if how == "checkpoint":
    tf.train.Checkpoint(estimator=restored).read(path).assert_consumed()
  else:
    restored_model.load_weights(path)
  assert int(restored.step.numpy()) == k
  np.testing.assert_array_equal(restored.gap.numpy(), first.gap.numpy())
  for batch in stream[k:]:
    restored.update(_ids(batch))
  for name, value in _state(whole).items():
    np.testing.assert_array_equal(_state(restored)[name], value, err_msg=name)
  assert int(restored.step.numpy()) == len(stream)
  assert np.count_nonzero(restored.gap.numpy() != GAP0) > HASH // 2  # the stream moved most buckets


def test_the_time_averaged_estimate_converges_to_each_items_batch_probability():
  """50 items, item j in each batch independently with probability p_j (0.05 .. 0.6), 300 000
  steps at the paper's alpha 0.01: every item (each seen far more than 100 times) has its
  time-averaged p̂ over the second half within 5 % of p_j.

  The window bounds what any estimate can do: its relative standard error is that of the item's
  own count, sqrt((1 - p) / (p · 150 000)) = 1.1 % at p = 0.05, so 5 % is over 4 standard errors
  for every item (with 1 / EMA's Jensen bias, about +alpha/2 = +0.5 %, on top). The final p̂, one
  EMA value with ~7 % spread at alpha 0.01, is reported, not asserted.
  """
  steps, n = 300_000, 50
  p = np.geomspace(0.05, 0.6, n)
  present = np.random.default_rng(7).random((steps, n)) < p
  layer = StreamingFrequencyEstimator(hash_size=64, alpha=0.01)

  @tf.function
  def run(present):
    items = tf.range(n, dtype=tf.int64)
    total = tf.zeros([n])
    for t in tf.range(steps):
      layer.update(tf.boolean_mask(items, present[t]))
      total += tf.cast(t >= steps // 2, tf.float32) * layer.probability(items)
    return total / (steps - steps // 2), layer.probability(items)

  average, final = (x.numpy() for x in run(tf.constant(present)))
  error, final_error = average / p - 1, final / p - 1
  seen = present.sum(axis=0)
  report = "\n".join(f"p={q:.3f} seen={c} time-averaged {e:+.4f} final {f:+.3f}"
                     for q, c, e, f in zip(p, seen, error, final_error))
  assert int(layer.step.numpy()) == steps and (seen >= 100).all(), report
  assert np.all(np.abs(error) <= 0.05), report
  # Nearly unbiased: the signed errors average out but for the Jensen bias.
  assert abs(error.mean()) < 0.01 and np.abs(error).mean() < 0.02, report


def _run_script(*args):
  return subprocess.Popen([sys.executable, os.path.abspath(__file__), *map(str, args)],
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _report(process, timeout=300):
  out, err = process.communicate(timeout=timeout)
  assert process.returncode == 0, err[-3000:]
  return json.loads(out.strip().splitlines()[-1])


def test_two_mirrored_replicas_update_exactly_like_one_device_fed_the_global_batch():
  report = _report(_run_script("mirrored"))
  assert report["replicas"] == 2
  # Every copy of every variable equals the single-device run, bit for bit.
  assert report["max_abs_diff"] == {"gap": 0.0, "last_step": 0, "step": 0}, report
  # The returned p̂ too, but for the last bit of 1 / gap (a tf.function against eager ops).
  assert report["max_rel_diff_probability"] < 1e-6, report
  assert report["step"] == 30 and report["buckets_moved"] > HASH // 2, report


def _replica_run(strategy):
  """Feeds `_stream(2)` split unevenly over the replicas (an empty share, both empty at times)."""
  stream = _stream(seed=2)
  with strategy.scope():
    layer = StreamingFrequencyEstimator(hash_size=HASH, alpha=ALPHA, initial_gap=GAP0)
  reference = StreamingFrequencyEstimator(hash_size=HASH, alpha=ALPHA, initial_gap=GAP0)

  @tf.function(reduce_retracing=True)
  def step(ids):
    return strategy.run(lambda ids: layer(ids, training=True), args=(ids,))

  rng = np.random.default_rng(3)
  diff, probability_diff = {"gap": 0.0, "last_step": 0, "step": 0}, 0.0
  for batch in stream:
    cut = rng.integers(0, len(batch) + 1)
    shares = [batch[:cut], batch[cut:]]
    ids = strategy.experimental_distribute_values_from_function(
      lambda context: _ids(shares[context.replica_id_in_sync_group]))
    local = strategy.experimental_local_results(step(ids))
    expected = reference(_ids(batch), training=True).numpy()
    if strategy.num_replicas_in_sync == 2 and len(local) == 1:  # one replica of this worker
      expected = expected[:cut] if strategy.cluster_resolver.task_id == 0 else expected[cut:]
    got = np.concatenate([x.numpy() for x in local])
    rel = np.abs(got - expected) / expected
    probability_diff = max(probability_diff, float(rel.max(initial=0)))
  for name in ("gap", "last_step", "step"):
    for copy in getattr(layer, name).values:
      d = np.abs(copy.numpy() - getattr(reference, name).numpy()).max()
      diff[name] = max(diff[name], d.item())
  return {"replicas": strategy.num_replicas_in_sync, "max_abs_diff": diff,
          "max_rel_diff_probability": probability_diff, "step": int(layer.step.numpy()),
          "buckets_moved": int(np.count_nonzero(layer.gap.numpy() != GAP0))}


def _main(mode, *args):
  if mode == "mirrored":
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    from uma2_tf import distribute

    strategy = distribute.build_strategy("mirrored")
  else:
    index, ports = int(args[0]), args[1:]
    os.environ["TF_CONFIG"] = json.dumps({
      "cluster": {"worker": [f"127.0.0.1:{port}" for port in ports]},
      "task": {"type": "worker", "index": index}})
    strategy = tf.distribute.MultiWorkerMirroredStrategy()
  print(json.dumps(_replica_run(strategy)))


if __name__ == "__main__":
  _main(*sys.argv[1:])

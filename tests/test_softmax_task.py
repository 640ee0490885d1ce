"""The in-batch / mixed softmax task against SAMPLERS §2-3's worked numbers, computed three ways:
by hand in numpy, by `tfrs.tasks.Retrieval`, and by `InBatchSoftmaxTask`; and trained end to end."""
import uma2_tf  # noqa: F401

import dataclasses
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_recommenders as tfrs
import tf_keras as keras

from uma2_tf import training
from uma2_tf.data import samplers
from uma2_tf.tasks import InBatchSoftmaxTask, LossConfig, SoftmaxConfig

QUERIES = np.array([[1, 0], [0, 1], [1, 1]], np.float32)
CANDIDATES = np.array([[1, 0], [0, 1], [1, 0]], np.float32)
IDS = np.array([1, 2, 1], np.int64)  # (a, b, a)
P = np.array([0.5, 0.1, 0.5], np.float32)


def hand_loss(queries, candidates, ids, p=None, accidental=False, temperature=1.0):
  """Σ_i −log softmax(s_i)_i with s = q·cᵀ / τ − log p, other columns of i's item masked."""
  scores = queries @ candidates.T / temperature
  if p is not None:
    scores = scores - np.log(p)
  total = 0.0
  for i, row in enumerate(scores):
    row = row.copy()
    if accidental:
      row[(ids == ids[i]) & (np.arange(len(ids)) != i)] = -np.inf
    total -= row[i] - np.log(np.exp(row[np.isfinite(row)]).sum())
  return total


@pytest.mark.parametrize("kwargs,call,expected", [
    (dict(), dict(), 2.512052),
    (dict(), dict(candidate_sampling_probability=P), 3.428508),
    (dict(remove_accidental_hits=True), dict(candidate_sampling_probability=P, candidate_ids=IDS),
     2.972633),
    (dict(temperature=0.5), dict(candidate_sampling_probability=P), 2.983206),
    (dict(num_hard_negatives=1), dict(), 1.699556),
])
def test_tfrs_retrieval_reproduces_the_worked_losses(kwargs, call, expected):
  loss = keras.losses.CategoricalCrossentropy(from_logits=True,
                                              reduction=keras.losses.Reduction.SUM)
  task = tfrs.tasks.Retrieval(loss=loss, **kwargs)
  got = float(task(QUERIES, CANDIDATES, compute_metrics=False, **call))
  assert got == pytest.approx(expected, abs=1e-5)
  if "num_hard_negatives" not in kwargs:  # Hard-negative mining is TFRS's alone.
    by_hand = hand_loss(QUERIES, CANDIDATES, IDS, call.get("candidate_sampling_probability"),
                        kwargs.get("remove_accidental_hits", False),
                        kwargs.get("temperature", 1.0))
    assert by_hand == pytest.approx(expected, abs=1e-5)


def counts_for(probabilities):
  """Training click counts whose frequencies are `probabilities` (id 0, padding, never clicked)."""
  return np.concatenate([[0], np.round(np.asarray(probabilities) * 1000)]).astype(np.int64)


@pytest.mark.parametrize("logq,remove,expected", [
    ("none", False, 2.512052), ("counts", False, 3.428508), ("counts", True, 2.972633),
])
def test_task_is_tfrs_loss_averaged_over_the_batch(logq, remove, expected):
  # Counts a:b = 5:1 give q = (5/6, 1/6): p (0.5, 0.1) times 5/3, a constant shift of the logits
  # that the softmax cancels.
  task = InBatchSoftmaxTask(SoftmaxConfig(logq=logq, remove_accidental_hits=remove), 3,
                            np.array([0, 5, 1]))
  loss = task(tf.constant(QUERIES), tf.constant(CANDIDATES), tf.constant(IDS))
  assert float(loss) * 3 == pytest.approx(expected, abs=1e-5)
  assert float(task.loss_metric.result()) == pytest.approx(expected / 3, abs=1e-6)


def test_mixed_negatives_use_the_mixed_probability():
  # SAMPLERS §3: p = (a .5, b .3, c .15, d .05), B = B' = 2, N = 4 -> Q* = (.375, .275, .2, .15);
  # queries (1,0) -> a, (0,1) -> b; candidates a, b, then the corpus items c (.5,.5) and a.
  task = InBatchSoftmaxTask(SoftmaxConfig(logq="counts"), 5, counts_for([0.5, 0.3, 0.15, 0.05]))
  queries = np.array([[1, 0], [0, 1]], np.float32)
  candidates = np.array([[1, 0], [0, 1], [0.5, 0.5], [1, 0]], np.float32)
  ids = np.array([1, 2, 3, 1], np.int64)
  q_star = task.slot_probabilities(tf.constant(ids), 2).numpy()
  np.testing.assert_allclose(q_star, [0.375, 0.275, 0.2, 0.375], atol=1e-6)
  loss = float(task(tf.constant(queries), tf.constant(candidates), tf.constant(ids))) * 2
  assert loss == pytest.approx(1.834743, abs=1e-5)
  assert hand_loss(queries, candidates, ids, q_star, accidental=True) == pytest.approx(1.834743,
                                                                                      abs=1e-5)
  plain = InBatchSoftmaxTask(SoftmaxConfig(logq="none"), 5)
  loss = float(plain(tf.constant(queries), tf.constant(candidates), tf.constant(ids))) * 2
  assert loss == pytest.approx(1.531399, abs=1e-5)


def test_streaming_logq_turns_batch_frequencies_into_slot_probabilities():
  task = InBatchSoftmaxTask(SoftmaxConfig(logq="streaming", estimator_alpha=0.5,
                                          estimator_initial_gap=10.0), 5)
  ids = tf.constant([1, 1, 2], tf.int64)
  # One training step at t = 1: items 1 and 2 each hit once: gap 0.5·10 + 0.5·1 = 5.5, p̂ = 1/5.5;
  # item 3 unseen: p̂ = 1/10. A slot holds item j with q = 1 − (1 − p̂)^(1/B), B = 3.
  q = task.slot_probabilities(tf.constant([1, 1, 2, 3], tf.int64), 3, training=True).numpy()
  expected = 1 - (1 - np.array([1 / 5.5, 1 / 5.5, 1 / 5.5, 1 / 10])) ** (1 / 3)
  # The extra slot (item 3) mixes in the uniform corpus: (3·q + 1·(1/4)) / 4.
  expected = (3 * expected + 1 / 4) / 4
  np.testing.assert_allclose(q, expected, rtol=1e-6)
  # Outside training the estimates are read, not updated; no extra slot, so no uniform mix.
  np.testing.assert_allclose(task.slot_probabilities(ids, 3).numpy(),
                             1 - (1 - np.full(3, 1 / 5.5)) ** (1 / 3), rtol=1e-6)


def test_softmax_config_is_validated():
  for kwargs, message in ((dict(logq="pop"), "logq"), (dict(temperature=0), "temperature"),
                          (dict(estimator_alpha=0), "estimator_alpha")):
    with pytest.raises(ValueError, match=message):
      SoftmaxConfig(**kwargs)


def test_samplers_without_spaces_refuse_nsdn_and_esam():
  in_batch = samplers.SamplingConfig(strategy="in_batch")
  with pytest.raises(ValueError, match="--nsdn=false"):
    training.TrainConfig(sampling=in_batch)
  with pytest.raises(ValueError, match="domain adaptation"):
    training.TrainConfig(sampling=in_batch, loss=LossConfig(use_nsdn=False),
                         tower="esam_youtube_dnn")
  # Popularity and hybrid draws carry their spaces: NSDN may re-weight them.
  training.TrainConfig(sampling=samplers.SamplingConfig(strategy="popularity"))


def test_cli_names_the_flag_for_nsdn_without_spaces(tiny_data_dir, tmp_path):
  result = subprocess.run(
      [sys.executable, "-m", "pipelines.train", "--dataset=uma2_simulated/tiny",
       f"--data_dir={tiny_data_dir}", f"--output_dir={tmp_path}", "--negatives=mixed"],
      capture_output=True, text=True)
  assert result.returncode == 2
  last = result.stderr.strip().splitlines()[-1]
  assert last.startswith("error: ") and "--negatives=mixed has no spaces" in last
  assert "Traceback" not in result.stderr


@pytest.mark.parametrize("tower,strategy,logq", [
    ("youtube_dnn", "in_batch", "counts"), ("dat", "mixed", "streaming"),
    ("fm", "in_batch", "none"), ("mind", "mixed", "counts"),
])
def test_every_tower_trains_on_shared_candidates(tiny_data_dir, tmp_path, tower, strategy, logq):
  config = training.TrainConfig(
      dataset="uma2_simulated/tiny", data_dir=tiny_data_dir, output_dir=str(tmp_path), tower=tower,
      epochs=2, batch_size=128, early_stopping_patience=0, evaluate_each_epoch=False,
      validation="none", eval_ks=(10, 50), loss=LossConfig(use_nsdn=False),
      sampling=samplers.SamplingConfig(strategy=strategy, corpus_negatives=64),
      softmax=SoftmaxConfig(logq=logq))
  results = training.train(config, verbose=0)
  history = np.genfromtxt(tmp_path / "history.csv", delimiter=",", names=True)
  assert history["loss_softmax"][1] < history["loss_softmax"][0]
  assert results["model"]["recall@50"] > 0
  fill = (tmp_path / "sampling.json").read_text()
  assert '"positives": ' + str(results["run"]["train_positives"] * 2) in fill


def test_streaming_estimates_are_saved_restored_and_the_run_exports(tiny_data_dir, tmp_path):
  config = training.TrainConfig(
      dataset="uma2_simulated/tiny", data_dir=tiny_data_dir, output_dir=str(tmp_path), epochs=1,
      batch_size=128, early_stopping_patience=0, evaluate_each_epoch=False, validation="none",
      eval_ks=(10,), loss=LossConfig(use_nsdn=False),
      sampling=samplers.SamplingConfig(strategy="in_batch"),
      softmax=SoftmaxConfig(logq="streaming"))
  results = training.train(config, verbose=0)
  # The run exports like any other: the tower is what is served.
  from uma2_tf import export

  version_dir = export.export_run(export.ExportConfig(run_dir=str(tmp_path),
                                                      export_dir=str(tmp_path / "exports")))
  assert os.path.exists(os.path.join(version_dir, export.RETRIEVAL_MODEL, "saved_model.pb"))
  assert export.read_metadata(version_dir)["metrics"]["model"] == results["model"]
  from uma2_tf.sources import registry

  dataset = registry.load(config.dataset, config.data_dir)
  model = training.build_model(config, dataset)
  estimator = model.task.estimator
  before = estimator.probability(tf.range(1, 50, dtype=tf.int64)).numpy()
  model.load_weights(str(tmp_path / "checkpoints" / "final")).expect_partial()
  after = estimator.probability(tf.range(1, 50, dtype=tf.int64)).numpy()
  assert (before == 1 / 100).all()  # A new estimator: the initial gap.
  assert (after != before).any() and int(estimator.step.numpy()) == \
      dataclasses.replace(config).epochs * int(np.ceil(
          training.count_positives(dataset) / config.batch_size))

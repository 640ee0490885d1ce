"""REMI's terms against SAMPLERS §5's worked numbers and numpy by hand: IHN (its weights, β = 0 as
the plain sampled softmax, its gradient with and without stop-gradient, accidental hits), RR (the
worked value, uniform rows, padding), the `sampled` sampler, the config checks, and training."""
import uma2_tf  # noqa: F401

import numpy as np
import pytest
import tensorflow as tf

from uma2_tf import training
from uma2_tf.data import samplers
from uma2_tf.tasks import LossConfig
from uma2_tf.tasks.remi import (RemiConfig, RoutingRegularizer, SampledSoftmaxTask,
                                ihn_log_weights, ihn_loss, routing_regularization)

S_POS = np.array([2.0], np.float32)
S_NEG = np.array([[1.0, 0.0, -1.0]], np.float32)


def hand_ihn(s_pos, s_neg, beta):
  """−log(e^{s⁺} / (e^{s⁺} + Σ_j w_j e^{s_j})), w_j = e^{βs_j} / mean_k e^{βs_k}, in float64."""
  s_neg = np.asarray(s_neg, np.float64)
  w = np.exp(beta * s_neg) / np.exp(beta * s_neg).mean(-1, keepdims=True)
  return -np.log(np.exp(s_pos) / (np.exp(s_pos) + (w * np.exp(s_neg)).sum(-1)))


@pytest.mark.parametrize("beta,expected", [(0.0, 0.440190), (1.0, 0.613559), (10.0, 0.743653)])
def test_ihn_reproduces_the_worked_losses(beta, expected):
  loss = ihn_loss(S_POS, S_NEG, beta).numpy()
  np.testing.assert_allclose(loss, [expected], atol=2e-6)
  np.testing.assert_allclose(loss, hand_ihn(S_POS, S_NEG, beta), rtol=1e-6)


def test_ihn_weights_are_the_worked_weights():
  weights = np.exp(ihn_log_weights(S_NEG, 1.0).numpy())
  np.testing.assert_allclose(weights, [[1.995723, 0.734185, 0.270092]], atol=2e-6)
  assert weights.mean() == pytest.approx(1.0)  # w is e^{βs} over its mean


def test_beta_zero_is_the_plain_sampled_softmax():
  rng = np.random.default_rng(0)
  s_pos, s_neg = rng.normal(size=8).astype(np.float32), rng.normal(size=(8, 20)).astype(np.float32)
  logits = np.concatenate([s_pos[:, None], s_neg], axis=1)
  plain = tf.nn.softmax_cross_entropy_with_logits(
      labels=np.eye(21, dtype=np.float32)[np.zeros(8, int)], logits=logits).numpy()
  np.testing.assert_allclose(ihn_loss(s_pos, s_neg, 0.0).numpy(), plain, rtol=1e-5)


def test_large_beta_stays_finite_and_matches_float64():
  s_neg = np.array([[30.0, 29.0, -5.0]], np.float32)
  loss = ihn_loss(S_POS, s_neg, 50.0).numpy()
  assert np.isfinite(loss).all()
  # e^{50·30} overflows float64 too; the log-space form by hand: log w_j = βs_j − logmeanexp(βs).
  scaled = 50.0 * s_neg.astype(np.float64)
  log_w = scaled - (scaled.max() + np.log(np.exp(scaled - scaled.max()).mean()))
  expected = np.logaddexp.reduce(np.concatenate([[2.0], (s_neg[0] + log_w[0])])) - 2.0
  np.testing.assert_allclose(loss, [expected], rtol=1e-5)


def test_left_out_negatives_count_in_neither_the_sum_nor_the_mean():
  s_neg = np.array([[1.0, 0.0, 7.0, -1.0]], np.float32)
  mask = np.array([[1, 1, 0, 1]], bool)
  for beta in (0.0, 1.0, 10.0):
    np.testing.assert_allclose(ihn_loss(S_POS, s_neg, beta, mask).numpy(),
                               hand_ihn(S_POS, S_NEG, beta), rtol=1e-5)
  # Every negative left out: only the positive remains, and the loss is 0, not NaN.
  assert ihn_loss(S_POS, s_neg, 1.0, np.zeros_like(mask)).numpy()[0] == pytest.approx(0.0, abs=1e-6)


@pytest.mark.parametrize("stop_gradient", [False, True])
def test_ihn_gradient_follows_the_weights_unless_stopped(stop_gradient):
  beta = 1.0
  s_neg = tf.Variable(S_NEG)
  with tf.GradientTape() as tape:
    loss = ihn_loss(S_POS, s_neg, beta, stop_gradient=stop_gradient)[0]
  grad = tape.gradient(loss, s_neg).numpy()[0]
  s = S_NEG[0].astype(np.float64)
  if stop_gradient:
    # The weights are constants: dL/ds_j = w_j e^{s_j} / Z (Z the softmax denominator).
    w = np.exp(beta * s) / np.exp(beta * s).mean()
    expected = w * np.exp(s) / (np.exp(2.0) + (w * np.exp(s)).sum())
  else:  # Through the weights too, as the reference code: central differences of the hand loss.
    eps = 1e-5
    expected = np.array([(hand_ihn(2.0, s + eps * e, beta) - hand_ihn(2.0, s - eps * e, beta))
                         / (2 * eps) for e in np.eye(3)])
  np.testing.assert_allclose(grad, expected, rtol=1e-4, atol=1e-6)


def test_stop_gradient_changes_the_gradient_but_not_the_loss():
  grads = []
  for stop in (False, True):
    s_neg = tf.Variable(S_NEG)
    with tf.GradientTape() as tape:
      loss = ihn_loss(S_POS, s_neg, 1.0, stop_gradient=stop)[0]
    grads.append(tape.gradient(loss, s_neg).numpy())
    assert loss.numpy() == pytest.approx(0.613559, abs=2e-6)
  assert np.abs(grads[0] - grads[1]).max() > 0.05


def test_task_scores_positives_against_the_shared_negatives_only():
  query = np.array([[1.0, 0.0], [0.0, 1.0]], np.float32)
  # Rows 0-1 the positives (ids 5, 6), then 3 shared negatives; id 6 is query 1's own item.
  candidates = np.array([[2.0, 0.0], [0.5, 1.0], [1.0, 0.0], [0.0, 1.0], [0.5, 0.5]], np.float32)
  ids = np.array([5, 6, 7, 6, 8], np.int64)
  task = SampledSoftmaxTask(RemiConfig(ihn_beta=1.0))
  loss = task(query, candidates, ids).numpy()
  negatives = query @ candidates[2:].T
  first = hand_ihn(2.0, negatives[:1], 1.0)[0]
  second = hand_ihn(1.0, negatives[1:, [0, 2]], 1.0)[0]  # id 6 (column 1) is an accidental hit
  assert loss == pytest.approx((first + second) / 2, rel=1e-5)
  kept = SampledSoftmaxTask(RemiConfig(ihn_beta=1.0, remove_accidental_hits=False))
  second_all = hand_ihn(1.0, negatives[1:], 1.0)[0]
  assert kept(query, candidates, ids).numpy() == pytest.approx((first + second_all) / 2, rel=1e-5)


def test_rr_reproduces_the_worked_value():
  routing = np.array([[[0.7, 0.2, 0.1], [1.0, 0.0, 0.0]]], np.float32)
  value = routing_regularization(routing, np.ones([1, 3]), width=4).numpy()
  np.testing.assert_allclose(value, [0.030447], atol=2e-6)
  # diag(C) by hand: each row's squared deviations from its mean, over d.
  diagonal = ((routing - routing.mean(-1, keepdims=True)) ** 2).sum(-1) / 4
  np.testing.assert_allclose(diagonal, [[0.051667, 0.166667]], atol=2e-6)


def test_rr_is_zero_for_uniform_rows_and_ignores_padding():
  uniform = np.full([2, 4, 5], 0.2, np.float32)
  assert routing_regularization(uniform, np.ones([2, 5]), 8).numpy().tolist() == [0.0, 0.0]
  # The worked rows with two padded positions (A is 0 there, as a tower gives it): same value.
  padded = np.array([[[0.7, 0.2, 0.1, 0.0, 0.0], [1.0, 0.0, 0.0, 0.0, 0.0]]], np.float32)
  value = routing_regularization(padded, np.array([[1, 1, 1, 0, 0]]), width=4).numpy()
  np.testing.assert_allclose(value, [0.030447], atol=2e-6)
  # Counted as the reference does (padding in the mean), the value would differ.
  assert abs(routing_regularization(padded, np.ones([1, 5]), 4).numpy()[0] - 0.030447) > 1e-3


def test_regularizer_is_lambda_times_the_mean_over_users():
  routing = np.array([[[0.7, 0.2, 0.1], [1.0, 0.0, 0.0]], [[1 / 3] * 3, [1 / 3] * 3]], np.float32)
  value = RoutingRegularizer(100.0)(routing, np.ones([2, 3]), width=4).numpy()
  assert value == pytest.approx(100.0 * 0.030447 / 2, rel=1e-4)


def test_sampled_strategy_draws_the_shared_negatives(tiny_dataset):
  config = samplers.SamplingConfig(strategy="sampled", sampled_negatives=37)
  batch = next(iter(samplers.make_training_dataset(tiny_dataset, config, 16)))
  assert batch["corpus_items"].shape == (37,)
  assert batch["pos_item"].shape == (16,)
  assert "neg_items" not in batch
  ids = batch["corpus_items"].numpy()
  assert ids.min() >= 1 and ids.max() < tiny_dataset.schema.num_items


def test_remi_flags_are_checked_against_the_sampler_and_tower():
  with pytest.raises(ValueError, match="--ihn_beta=1.0 .* add --negatives=sampled"):
    training.TrainConfig(remi=RemiConfig(ihn_beta=1.0), loss=LossConfig(use_nsdn=False),
                         sampling=samplers.SamplingConfig(strategy="in_batch"))
  with pytest.raises(ValueError, match="--rr_lambda=10.0 .* --tower=youtube_dnn has none"):
    training.TrainConfig(remi=RemiConfig(rr_lambda=10.0))
  with pytest.raises(ValueError, match="--hard_readout .* --tower=dat has one"):
    training.TrainConfig(hard_readout=True, tower="dat")
  with pytest.raises(ValueError, match="ihn_beta must be >= 0"):
    RemiConfig(ihn_beta=-1.0)
  with pytest.raises(ValueError, match="num_interests must be >= 1"):
    training.TrainConfig(num_interests=0)


def test_mind_trains_with_ihn_and_rr(tiny_data_dir, tmp_path):
  config = training.TrainConfig(
      dataset="uma2_simulated/tiny", data_dir=tiny_data_dir, output_dir=str(tmp_path),
      tower="mind", num_interests=3, epochs=2, batch_size=128, early_stopping_patience=0,
      evaluate_each_epoch=False, validation="none", eval_ks=(10, 50),
      loss=LossConfig(use_nsdn=False),
      sampling=samplers.SamplingConfig(strategy="sampled", sampled_negatives=64),
      remi=RemiConfig(ihn_beta=1.0, rr_lambda=100.0))
  results = training.train(config, verbose=0)
  history = np.genfromtxt(tmp_path / "history.csv", delimiter=",", names=True)
  assert history["loss_softmax"][1] < history["loss_softmax"][0]
  assert np.all(history["loss_rr"] > 0)
  assert results["model"]["recall@50"] > 0

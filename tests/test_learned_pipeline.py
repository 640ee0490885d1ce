"""The simulator's learned legacy pipeline (`learned_pipeline`) and how much the logs know: it
never reads the true affinity, its models are the textbook ones, and infinite noise means no
information."""

import uma2_tf  # noqa: F401

import dataclasses
import hashlib
import inspect

import numpy as np
import pytest

from uma2_tf.data import schema as schema_lib
from uma2_tf.sources import learned_pipeline, simulator

TINY = simulator.CONFIGS["tiny"]
LEARNED = dataclasses.replace(TINY, legacy_pipeline="learned")


def _world(config=LEARNED):
  return simulator.build_world(config, np.random.default_rng(0))


def _serve_two_rounds(world, replace_truth_after_clicks: bool):
  """Serves a round, refits, then serves the next users: (recalled, exposed) of the second round.
  With `replace_truth_after_clicks`, the world's latent arrays are overwritten with noise once the
  first round's clicks are drawn."""
  serving = simulator._LearnedServing(LEARNED, world, np.random.default_rng(1))
  users = np.arange(1, 301)
  history = np.zeros((len(users), TINY.history_length), np.int32)
  serving.serve(users, history, np.random.default_rng(2))
  if replace_truth_after_clicks:
    noise = np.random.default_rng(99)
    for array in (world.user_latent, world.item_latent, world.item_popularity):
      array[...] = noise.standard_normal(array.shape)
  serving.end_round()
  recalled, _, exposed, _ = serving.pipeline.serve(users[:100], history[:100],
                                                   np.random.default_rng(3))
  return recalled, exposed


def test_learned_pipeline_never_reads_the_true_affinity():
  # It is not given the world at all: only the item metadata a real system has.
  parameters = set(inspect.signature(learned_pipeline.LearnedPipeline).parameters)
  assert parameters == {"config", "item_category", "item_author", "rng"}
  # Replacing the latents after the clicks are drawn changes nothing the pipeline does next.
  recalled, exposed = _serve_two_rounds(_world(), replace_truth_after_clicks=False)
  recalled_after, exposed_after = _serve_two_rounds(_world(), replace_truth_after_clicks=True)
  np.testing.assert_array_equal(recalled, recalled_after)
  np.testing.assert_array_equal(exposed, exposed_after)


def test_learned_pipeline_learns_from_its_clicks():
  # Cold start (random ranking) on day 1; by the test day the click-through rate has risen far
  # above day 1's and above a pipeline with no information (random recall channel and ranking).
  _, log = simulator.simulate(LEARNED)
  blind = dataclasses.replace(TINY, old_model_noise=float("inf"), ranking_noise=float("inf"))
  _, blind_log = simulator.simulate(blind)

  def ctr(log, day):
    rows = np.flatnonzero(log.day == day)
    clicks = sum(int(log.list_of(schema_lib.CLICKED, r).sum()) for r in rows)
    return clicks / sum(len(log.list_of(schema_lib.EXPOSED, r)) for r in rows)

  last = TINY.num_days
  assert ctr(log, last) > 3 * ctr(log, 1)
  assert ctr(log, last) > 1.3 * ctr(blind_log, last)


def test_implicit_als_half_step_is_the_closed_form():
  # x_u = (YᵀC_uY + λI)⁻¹ YᵀC_u p_u, C_u = 1 + α·clicks, p_u = 1 where clicked (Hu et al. 2008),
  # over the real items (row 0, the padding id, excluded).
  config = dataclasses.replace(LEARNED, learned_mf_confidence=5.0, learned_mf_regularization=0.5)
  pipeline = learned_pipeline.LearnedPipeline(config, np.zeros(TINY.num_items + 1, np.int64),
                                              np.zeros(TINY.num_items + 1, np.int64),
                                              np.random.default_rng(0))
  items = np.random.default_rng(1).standard_normal((6, 3))
  items[0] = 0
  rows, cols = np.array([1, 1, 2, 1]), np.array([2, 4, 5, 2])  # User 1 clicked item 2 twice.
  factors = pipeline._als_half(items, rows, cols, num_rows=3)
  for user in (1, 2):
    clicks = np.bincount(cols[rows == user], minlength=6)[1:]
    y, c, p = items[1:], 1 + 5.0 * clicks, (clicks > 0).astype(float)
    expected = np.linalg.solve(y.T @ (c[:, None] * y) + 0.5 * np.eye(3), y.T @ (c * p))
    np.testing.assert_allclose(factors[user], expected, rtol=1e-10)
  np.testing.assert_array_equal(factors[0], 0)


def test_logistic_ranker_recovers_the_weights_of_a_logistic_world():
  rng = np.random.default_rng(0)
  pipeline = learned_pipeline.LearnedPipeline(dataclasses.replace(LEARNED, learned_ranker_l2=0.0),
                                              np.zeros(TINY.num_items + 1, np.int64),
                                              np.zeros(TINY.num_items + 1, np.int64), rng)
  raw = rng.standard_normal((200_000, len(learned_pipeline.FEATURES)))
  true_w = np.array([1.0, -0.5, 0.0, 2.0, 0.3, -1.0])
  labels = (rng.random(len(raw)) < 1 / (1 + np.exp(-(raw @ true_w - 1.0)))).astype(float)
  for _ in range(3):  # Warm-started refits converge like one longer fit.
    pipeline._fit_ranker(raw, labels)
  fitted = pipeline.ranker_weights
  np.testing.assert_allclose(fitted[:-1] / pipeline.feature_std, true_w, atol=0.05)
  # The score is the fitted logit of the raw features.
  expected = (raw[:3] - pipeline.feature_mean) / pipeline.feature_std @ fitted[:-1] + fitted[-1]
  np.testing.assert_allclose(pipeline.score(raw[:3]), expected)


def test_an_unfitted_ranker_exposes_in_random_order_not_by_id():
  pipeline = learned_pipeline.LearnedPipeline(LEARNED, np.ones(TINY.num_items + 1, np.int64),
                                              np.arange(TINY.num_items + 1),
                                              np.random.default_rng(0))
  users = np.arange(1, 201)
  history = np.zeros((200, TINY.history_length), np.int32)
  recalled, n_recalled, exposed, logged = pipeline.serve(users, history, np.random.default_rng(1))
  assert logged.shape == exposed.shape + (len(learned_pipeline.FEATURES),)
  assert (n_recalled >= TINY.exposure_size).all()
  # All scores tie before the first refit: sorted candidates would expose low ids first.
  assert abs(np.median(exposed) - TINY.num_items / 2) < TINY.num_items / 10


def _mean_exposed_affinity(config):
  world, log = simulator.simulate(config)
  rows = np.flatnonzero(log.day == config.num_days)[:300]
  exposed = [world.true_affinity(log.user_id[[r]], log.list_of(schema_lib.EXPOSED, r)).mean()
             for r in rows]
  recalled = [world.true_affinity(log.user_id[[r]], log.list_of(schema_lib.RECALLED, r)).mean()
              for r in rows]
  return float(np.mean(exposed)), float(np.mean(recalled))


def test_infinite_noise_carries_no_information():
  # No ranking noise: the exposed items are the recall's best. Infinite noise: a random subset of
  # the recall, as good on average as the recall itself.
  exposed, recalled = _mean_exposed_affinity(dataclasses.replace(TINY, ranking_noise=0.0))
  assert exposed > recalled + 1.0
  exposed, recalled = _mean_exposed_affinity(dataclasses.replace(TINY, ranking_noise=float("inf")))
  assert abs(exposed - recalled) < 0.15


def test_the_default_pipeline_writes_the_same_logs_as_before():
  # The learned pipeline was added beside it: `noisy_truth` worlds (every report so far) must not
  # change by a byte. The digest is of the tiny world's logs before that change.
  _, log = simulator.simulate(TINY)
  digest = hashlib.sha256()
  for field in schema_lib.LIST_FIELDS:
    for array in log.lists[field]:
      digest.update(np.ascontiguousarray(array).tobytes())
  digest.update(log.user_id.tobytes())
  assert digest.hexdigest() == TINY_LOG_SHA256


@pytest.mark.parametrize("change,message", [
    (dict(legacy_pipeline="oracle"), "legacy_pipeline"),
    (dict(ranking_noise=-1.0), "ranking_noise"),
    (dict(old_model_noise=float("nan")), "old_model_noise"),
    (dict(learned_mf_dim=0), "learned_mf_dim"),
])
def test_bad_pipeline_knobs_are_rejected(change, message):
  with pytest.raises(ValueError, match=message):
    dataclasses.replace(TINY, **change)


TINY_LOG_SHA256 = "ec4a6f087175951f48715940bf63f4d5b4d38852d9a83e0a195811eab4520742"


def test_cli_builds_a_world_that_knows_nothing(tmp_path):
  # "No information" is a world built from the command line like any other: `inf` parses, is
  # recorded, and the same knobs reopen it.
  import json
  import os
  import subprocess
  import sys

  cmd = [sys.executable, "-m", "pipelines.simulate", f"--data_dir={tmp_path}", "--base=tiny",
         "--simulator.num_days=2", "--config=blind", "--simulator.old_model_noise=inf",
         "--simulator.ranking_noise=inf"]
  out = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
  assert out.returncode == 0, out.stderr[-3000:]
  recorded = json.load(open(os.path.join(tmp_path, "uma2_simulated/blind/1.0.0",
                                         "simulator_config.json")))
  assert recorded["simulator_config"]["ranking_noise"] == float("inf")
  again = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
  assert again.returncode == 0 and "already built" in again.stdout, again.stderr[-3000:]
  bad = subprocess.run(cmd[:5] + ["--config=bad", "--simulator.legacy_pipeline=oracle"],
                       capture_output=True, text=True, timeout=600)
  assert bad.returncode == 2 and "legacy_pipeline" in bad.stderr and "Traceback" not in bad.stderr

"""ESAM's three losses and UMA²_SOS's static space weights, against numpy on hand examples; both
through the trainer and the train CLI."""
import uma2_tf  # noqa: F401

import dataclasses
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from uma2_tf.data.batch_keys import SPACE_A, SPACE_B, SPACE_C
from uma2_tf.models import towers
from uma2_tf.models.towers import esam
from uma2_tf import tasks
from uma2_tf.tasks import LossConfig, UMA2Task

A, B, C = SPACE_A, SPACE_B, SPACE_C

# Three examples of two requests (7 has two clicks); four negatives each; L = 3.
REQUEST = np.array([7, 7, 9], np.int64)
SPACE = np.array([[A, B, C, C], [A, A, B, C], [B, C, C, A]], np.int32)
MASK = np.array([[1, 1, 1, 0], [1, 1, 1, 1], [1, 1, 1, 0]], np.float32)  # Request 9's A is padding.
EMB = np.array([  # [B, 1+N, L], slot 0 the positive.
    [[2.0, -2.6, 0.4], [-0.6, -0.5, -0.2], [-2.0, -0.2, -0.9], [3.3, 0.2, -0.4],
     [-0.3, -0.7, -1.1]],
    [[-0.4, 0.5, -0.2], [1.0, -0.2, 0.1], [1.5, 0.5, -0.5], [-0.2, 0.5, 1.9], [-0.3, -0.2, 1.0]],
    [[-0.9, -0.3, 0.9], [0.6, 0.1, 0.7], [-2.8, 1.0, -1.0], [-1.7, 0.3, 0.7], [-0.4, -1.1, 0.1]],
], np.float32)
LOGITS = np.array([  # Target scores: σ < 0.2 (confident 0), in [0.2, 0.8] (left alone), > 0.8.
    [0.3, 1.0, -2.0, 0.5, 9.0],
    [2.0, -1.0, 0.4, 3.0, -0.1],
    [1.0, -3.0, 1.9, 0.2, -9.0],
], np.float32)
M1, M2, P1, P2 = 0.45, 2.5, 0.2, 0.8  # m1 sits between two shown items' distances.


def sigmoid(x):
  return 1 / (1 + np.exp(-x))


def numpy_esam(emb, space, mask, request, logits, m1=M1, m2=M2, p1=P1, p2=P2):
  """ESAM's terms by loops over the slots, straight from the formulas of the module docstring."""
  unit = emb / np.linalg.norm(emb, axis=-1, keepdims=True)
  num, dim = emb.shape[0], emb.shape[-1]
  source, target, clicked, shown = [], [], {}, {}
  for b in range(num):
    source.append(unit[b, 0])
    clicked.setdefault(request[b], []).append(unit[b, 0])
    shown.setdefault(request[b], [])
    for n in range(space.shape[1]):
      if mask[b, n] == 0:
        continue
      if space[b, n] == A:
        source.append(unit[b, n + 1])
        shown[request[b]].append(unit[b, n + 1])
      else:
        target.append((unit[b, n + 1], logits[b, n + 1]))
  da = 0.0
  if source and target:
    cov_s = sum(np.outer(v, v) for v in source) / len(source)
    cov_t = sum(np.outer(v, v) for v, _ in target) / len(target)
    da = ((cov_s - cov_t) ** 2).sum() / dim ** 2
  dc = 0.0
  for q in clicked:
    c_click = np.mean(clicked[q], axis=0)
    dc += sum(max(0.0, ((v - c_click) ** 2).sum() - m1) for v in clicked[q])
    if shown[q]:
      c_shown = np.mean(shown[q], axis=0)
      dc += sum(max(0.0, ((v - c_shown) ** 2).sum() - m1) for v in shown[q])
      dc += max(0.0, m2 - ((c_click - c_shown) ** 2).sum())
  dc /= num
  confident = [s for s in (sigmoid(logit) for _, logit in target) if s < p1 or s > p2]
  st = float(np.mean([-s * np.log(s) for s in confident])) if confident else 0.0
  return {"da": da, "dc": dc, "st": st}


def esam_batch(space=SPACE, mask=MASK, request=REQUEST):
  batch = {"neg_space": tf.constant(space), "neg_mask": tf.constant(mask)}
  if request is not None:
    batch["request_id"] = tf.constant(request)
  return batch


def tf_esam(emb=EMB, logits=LOGITS, **batch):
  terms = esam.esam_terms(esam_batch(**batch), tf.constant(emb), tf.constant(logits),
                          intra_margin=M1, inter_margin=M2, pseudo_low=P1, pseudo_high=P2)
  return {k: float(v) for k, v in terms.items()}


def test_esam_terms_match_numpy():
  expected = numpy_esam(EMB, SPACE, MASK, REQUEST, LOGITS)
  # The example exercises every part: both domains, an inter-class hinge, confident targets.
  assert expected["da"] > 0 and expected["dc"] > 0 and expected["st"] > 0
  got = tf_esam()
  for name in esam.TERMS:
    assert got[name] == pytest.approx(expected[name], rel=1e-5, abs=1e-6), name


def test_esam_without_request_ids_makes_each_example_its_query():
  request = np.arange(3)
  expected = numpy_esam(EMB, SPACE, MASK, request, LOGITS)
  got = tf_esam(request=None)
  for name in esam.TERMS:
    assert got[name] == pytest.approx(expected[name], rel=1e-5, abs=1e-6), name


def test_esam_ignores_padded_slots():
  emb, logits = EMB.copy(), LOGITS.copy()
  emb[0, 4], emb[2, 4] = [50.0, -3.0, 7.0], [-8.0, 8.0, 1.0]  # Padded slots (MASK 0).
  logits[0, 4], logits[2, 4] = -40.0, 40.0
  assert tf_esam(emb=emb, logits=logits) == pytest.approx(tf_esam(), rel=1e-6)
  emb_var, logits_var = tf.Variable(EMB), tf.Variable(LOGITS)
  with tf.GradientTape() as tape:
    terms = esam.esam_terms(esam_batch(), emb_var, logits_var, M1, M2, P1, P2)
    total = sum(terms.values())
  g_emb, g_logits = tape.gradient(total, [emb_var, logits_var])
  assert np.all(g_emb.numpy()[[0, 2], 4] == 0) and np.all(g_logits.numpy()[[0, 2], 4] == 0)
  assert np.any(g_emb.numpy() != 0) and np.any(g_logits.numpy() != 0)


@pytest.mark.parametrize("case", ["no_a", "no_target", "all_padded"])
def test_esam_empty_domains_give_zero_not_nan(case):
  if case == "no_a":  # No displayed negative: no shown class, no separation term.
    space, mask = np.full_like(SPACE, C), MASK
  elif case == "no_target":  # Only A negatives: nothing to align to, nothing to self-train.
    space, mask = np.full_like(SPACE, A), MASK
  else:
    space, mask = SPACE, np.zeros_like(MASK)
  request = np.arange(3)  # One click per query: a lone positive is its own centre.
  emb_var, logits_var = tf.Variable(EMB), tf.Variable(LOGITS)
  with tf.GradientTape() as tape:
    terms = esam.esam_terms(esam_batch(space, mask, request), emb_var, logits_var, M1, M2, P1, P2)
    total = sum(terms.values())
  got = {k: float(v) for k, v in terms.items()}
  expected = numpy_esam(EMB, space, mask, request, LOGITS)
  assert got == pytest.approx(expected, abs=1e-6)
  if case == "no_a":
    assert got["dc"] == 0 and got["da"] > 0 and got["st"] > 0
  elif case == "no_target":
    assert got["da"] == 0 and got["st"] == 0 and got["dc"] > 0
  else:
    assert got == {"da": 0.0, "dc": 0.0, "st": 0.0}
  for grad in tape.gradient(total, [emb_var, logits_var]):
    assert grad is None or np.all(np.isfinite(tf.convert_to_tensor(grad).numpy()))


def small_tower(name, **kwargs):
  from uma2_tf.data import schema as schema_lib

  schema = schema_lib.LogSchema(num_users=6, num_items=21, user_features={"age": 4},
                                item_features={"category": 5})
  catalog = schema_lib.ItemCatalog(features={"category": np.arange(21) % 5},
                                   click_count=np.zeros(21, np.int64),
                                   exposure_count=np.zeros(21, np.int64))
  return towers.build_tower(name, schema, catalog, hidden=(16,), output_dim=8, **kwargs)


@pytest.mark.parametrize("base", ["youtube_dnn", "dat"])
def test_esam_wraps_the_base_tower_and_adds_its_weighted_terms(base):
  tower = small_tower(f"esam_{base}", da_weight=3.0, dc_weight=0.5, st_weight=2.0)
  assert isinstance(tower, esam.ESAM) and type(tower.base) is type(small_tower(base))
  assert tower.embeddings is tower.base.embeddings
  batch = {"user_id": tf.constant([1, 2, 3], tf.int64), "age": tf.constant([1, 3, 0], tf.int64),
           "history": tf.constant([[3, 4, 0], [0, 0, 0], [5, 0, 0]], tf.int64),
           "request_id": tf.constant(REQUEST), "pos_item": tf.constant([5, 6, 7], tf.int64),
           "neg_items": tf.constant([[7, 8, 9, 0], [10, 11, 12, 13], [14, 15, 16, 0]], tf.int64),
           **esam_batch()}
  items = tf.concat([batch["pos_item"][:, None], batch["neg_items"]], axis=1)
  user, item = tower.user_embedding(batch), tower.item_embedding(items)
  np.testing.assert_array_equal(user.numpy(), tower.base.user_embedding(batch).numpy())
  np.testing.assert_array_equal(item.numpy(), tower.base.item_embedding(items).numpy())
  logits = tower.matching_logits(batch, user, item)
  terms = esam.esam_terms(batch, item, logits, 0.2, 0.9, 0.2, 0.8)
  expected = (float(tower.base.auxiliary_loss(batch, user, item)) + 3.0 * float(terms["da"])
              + 0.5 * float(terms["dc"]) + 2.0 * float(terms["st"]))
  if base == "dat":
    assert float(tower.base.auxiliary_loss(batch, user, item)) > 0  # DAT's mimic loss kept.
  assert float(tower.auxiliary_loss(batch, user, item)) == pytest.approx(expected, rel=1e-5)


def test_esam_youtube_dnn_trains_one_epoch_on_tiny(tiny_data_dir, tmp_path):
  import csv

  from uma2_tf import training

  config = training.TrainConfig(dataset="uma2_simulated/tiny", data_dir=tiny_data_dir,
                                output_dir=str(tmp_path), batch_size=256, epochs=1,
                                early_stopping_patience=0, tower="esam_youtube_dnn",
                                loss=LossConfig(use_nsdn=False))
  results = training.train(config, verbose=0)
  assert all(np.isfinite(v) and (k.startswith("avg_popularity@") or 0 <= v <= 1)
             for k, v in results["model"].items())
  assert results["model"]["recall@100"] > 0
  with open(os.path.join(str(tmp_path), "history.csv")) as f:
    row = next(csv.DictReader(f))
  for key in ("loss", "loss_esam_da", "loss_esam_dc", "loss_esam_st"):
    assert np.isfinite(float(row[key])), key
  assert float(row["loss_esam_da"]) > 0 and float(row["loss_esam_dc"]) > 0


# UMA²_SOS: static space weights instead of NSDN.
POS = np.array([1.2, -0.3], np.float32)
NEG = np.array([[0.5, -1.0, 2.0, 0.1], [1.5, 0.2, -0.7, 3.0]], np.float32)
SOS_SPACE = np.array([[A, B, C, C], [A, B, B, C]], np.int32)
SOS_MASK = np.array([[1, 1, 1, 0], [1, 1, 1, 1]], np.float32)  # Row 0's last C is padding.


def test_space_weights_loss_matches_numpy():
  lambdas, weights = (0.7, 1.3, 0.9, 0.5, 2.0), (0.5, 2.0, 0.25)
  task = UMA2Task(LossConfig(use_nsdn=False, lambdas=lambdas, space_weights=weights))
  args = dict(pos_logits=tf.constant(POS), neg_logits=tf.constant(NEG),
              neg_space=tf.constant(SOS_SPACE), neg_mask=tf.constant(SOS_MASK))
  softplus = lambda x: np.log1p(np.exp(x))  # noqa: E731  BCE(s, 0) = softplus(s)
  n = len(POS)
  expected_terms = {"positive": softplus(-POS).sum() / n}
  for name, space, w in zip(("space_a", "space_b", "space_c"), (A, B, C), weights):
    expected_terms[name] = w * softplus(NEG)[(SOS_SPACE == space) & (SOS_MASK > 0)].sum() / n
  got = {k: float(v) for k, v in task.terms(**args).items()}
  for name, value in expected_terms.items():
    assert got[name] == pytest.approx(value, rel=1e-5), name
  assert got["er"] == got["re"] == 0.0
  total = expected_terms["positive"] + sum(
      lam * expected_terms[t] for lam, t in zip(lambdas, ("space_a", "space_b", "space_c")))
  assert float(task(**args)) == pytest.approx(total, rel=1e-5)
  # Padding still counts for nothing, whatever the weight of its space.
  changed = NEG.copy()
  changed[0, 3] = 30.0
  padded_changed = float(task(**{**args, "neg_logits": tf.constant(changed)}))
  assert padded_changed == pytest.approx(total, rel=1e-6)


def test_sos_config_and_its_default_weight():
  config = tasks.sos_loss_config()
  assert config == LossConfig(use_nsdn=False, space_weights=(1.0, 1.0, tasks.SOS_RANDOM_WEIGHT))
  # C's 20 slots at 0.25 weigh as much as A's and B's 5 at 1 (the default 1:4:20 ratio).
  assert tasks.SOS_RANDOM_WEIGHT == tasks.sos_random_weight((1, 4, 20)) == 0.25
  assert 20 * tasks.SOS_RANDOM_WEIGHT == 1 + 4


@pytest.mark.parametrize("kwargs,message", [
    (dict(space_weights=(1.0, 1.0, 0.25)), "need use_nsdn=False"),
    (dict(use_nsdn=False, space_weights=(1.0, 1.0)), "three non-negative"),
    (dict(use_nsdn=False, space_weights=(1.0, -1.0, 0.5)), "three non-negative"),
])
def test_bad_space_weights_raise(kwargs, message):
  with pytest.raises(ValueError, match=message):
    LossConfig(**kwargs)


def test_config_json_keeps_space_weights():
  from uma2_tf import training

  config = training.TrainConfig(loss=tasks.sos_loss_config(0.4), tower="esam_dat")
  text = config.to_json()
  assert json.loads(text)["loss"]["space_weights"] == [1.0, 1.0, 0.4]
  again = training.TrainConfig.from_json(text)
  assert again == config and again.loss.space_weights == (1.0, 1.0, 0.4)
  # A config.json written before the field existed reads as the default weights.
  raw = json.loads(text)
  del raw["loss"]["space_weights"]
  raw["loss"]["use_nsdn"] = True
  assert training.TrainConfig.from_json(json.dumps(raw)).loss.space_weights == (1.0, 1.0, 1.0)


def test_train_flags_map_space_weights():
  from pipelines import train as train_cli

  train_cli.FLAGS(["train", "--space_weights=1,1,0.25", "--nsdn=false", "--tower=esam_youtube_dnn"])
  try:
    config = train_cli.config_from_flags()
  finally:
    train_cli.FLAGS.unparse_flags()
  assert config.loss == dataclasses.replace(tasks.sos_loss_config(), lambdas=(1.0,) * 5)
  assert config.tower == "esam_youtube_dnn"


@pytest.mark.parametrize("flags", [["--space_weights=1,1"], ["--space_weights=1,1,x"],
                                   ["--space_weights=1,1,0.25"]])  # The last: NSDN is on.
def test_train_cli_rejects_bad_space_weights(tmp_path, flags):
  result = subprocess.run([sys.executable, "-m", "pipelines.train", f"--output_dir={tmp_path}",
                           *flags], capture_output=True, text=True, timeout=300)
  assert result.returncode == 2, result.stderr[-2000:]
  assert "--space_weights" in result.stderr and "Traceback" not in result.stderr

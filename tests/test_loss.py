"""The UMA² loss, term by term against numpy, and its gradient and masking properties."""
import uma2_tf  # noqa: F401

import numpy as np
import pytest
import tensorflow as tf
import tf_keras as keras

from uma2_tf.data import schema as schema_lib
from uma2_tf.data.batch_keys import SPACE_A, SPACE_B, SPACE_C
from uma2_tf.models import towers
from uma2_tf.tasks import LossConfig, UMA2Task
from uma2_tf.models.uma2 import UMA2Model

A, B, C = SPACE_A, SPACE_B, SPACE_C
POS = np.array([1.2, -0.3], np.float32)
NEG = np.array([[0.5, -1.0, 2.0, 0.1], [1.5, 0.2, -0.7, 3.0]], np.float32)
SPACE = np.array([[A, B, C, C], [A, B, B, C]], np.int32)
MASK = np.array([[1, 1, 1, 0], [1, 1, 1, 1]], np.float32)  # Last slot of row 0 is padding.
ER = np.array(
  [[0.8, -0.2, 1.0, -3.0, 5.0], [2.0, 0.3, -4.0, 0.1, -1.0]], np.float32
)  # slot 0: positive
RE = np.array([[1.1, 0.4, -0.5, 0.0, 2.0], [0.5, -2.5, 0.7, -0.2, 0.3]], np.float32)
RECALLED = ((SPACE != C) * MASK).astype(np.float32)
EXPOSED = ((SPACE == A) * MASK).astype(np.float32)
LAMBDAS = (0.7, 1.3, 0.9, 0.5, 2.0)


def sigmoid(x):
  return 1 / (1 + np.exp(-x))


def bce(logit, label):
  p = sigmoid(logit)
  return -(label * np.log(p) + (1 - label) * np.log(1 - p))


def numpy_weights(floor=0.05, normalization="none"):
  """The propensity weights of every slot (1 for C and padding)."""
  p1 = np.clip(sigmoid(ER[:, 1:]), floor, 1)
  p2 = np.clip(sigmoid(RE[:, 1:]), floor, 1)
  w = np.ones_like(NEG)
  is_a, is_b = (SPACE == A) & (MASK > 0), (SPACE == B) & (MASK > 0)
  w_a, w_b = 1 / np.maximum(p1 * p2, floor), 1 / p1
  if normalization == "self_normalized":
    w_a, w_b = w_a / w_a[is_a].mean(), w_b / w_b[is_b].mean()
  w[is_a], w[is_b] = w_a[is_a], w_b[is_b]
  return w


def numpy_terms(floor=0.05, normalization="none", propensity_weights=True):
  # Without propensity weights every negative weighs 1 (the default static space weights).
  w = numpy_weights(floor, normalization) if propensity_weights else np.ones_like(NEG)
  n = len(POS)
  terms = {"positive": bce(POS, 1).sum() / n}
  for name, space in (("space_a", A), ("space_b", B), ("space_c", C)):
    sel = (SPACE == space) & (MASK > 0)
    terms[name] = (w * bce(NEG, 0))[sel].sum() / n
  mask_all = np.concatenate([np.ones((n, 1)), MASK], 1) > 0
  rec_all = np.concatenate([np.ones((n, 1)), RECALLED], 1)
  exp_all = np.concatenate([np.ones((n, 1)), EXPOSED], 1)
  terms["er"] = bce(ER, rec_all)[mask_all].sum() / n
  terms["re"] = bce(RE, exp_all)[mask_all & (rec_all > 0)].sum() / n
  return terms


def task_loss(config, **overrides):
  args = dict(pos_logits=POS, neg_logits=NEG, neg_space=SPACE, neg_mask=MASK, er_logits=ER,
              re_logits=RE, recalled=RECALLED, exposed=EXPOSED)
  args.update(overrides)
  task = UMA2Task(config)
  return task, {k: tf.constant(v) for k, v in args.items()}


@pytest.mark.parametrize(
  "floor,normalization", [(0.05, "none"), (0.3, "none"), (0.05, "self_normalized")]
)
def test_every_term_and_the_total_match_numpy(floor, normalization):
  config = LossConfig(lambdas=LAMBDAS, propensity_floor=floor, weight_normalization=normalization)
  task, args = task_loss(config)
  got = {k: float(v) for k, v in task.terms(**args).items()}
  expected = numpy_terms(floor, normalization)
  for name in expected:
    assert got[name] == pytest.approx(expected[name], rel=1e-5, abs=1e-6), name
  total = expected["positive"] + sum(lam * expected[t] for lam, t in zip(
      LAMBDAS, ("space_a", "space_b", "space_c", "er", "re")))
  assert float(task(**args)) == pytest.approx(total, rel=1e-5)


def test_floor_caps_the_weights():
  # ER logit -4 → p1 ≈ 0.018 < 0.3, so that B slot's weight is exactly 1/0.3.
  config = LossConfig(propensity_floor=0.3)
  task, args = task_loss(config)
  w = task.negative_weights(
    args["neg_space"], args["neg_mask"], args["er_logits"][:, 1:], args["re_logits"][:, 1:]
  ).numpy()
  assert w[1, 1] == pytest.approx(1 / 0.3, rel=1e-6)
  assert w.max() == pytest.approx(1 / 0.3, rel=1e-6)  # A's 1/(p1·p2) is capped at 1/floor too.
  assert w[0, 2] == w[0, 3] == w[1, 3] == 1.0  # C slots and padding: weight 1.


def test_without_nsdn_it_is_the_plain_gmm_loss():
  task, args = task_loss(LossConfig(use_nsdn=False, lambdas=LAMBDAS))
  loss = float(task(pos_logits=args["pos_logits"], neg_logits=args["neg_logits"],
                    neg_space=args["neg_space"], neg_mask=args["neg_mask"]))
  n = len(POS)
  expected = bce(POS, 1).sum() / n
  for lam, space in zip(LAMBDAS[:3], (A, B, C)):
    expected += lam * bce(NEG, 0)[(SPACE == space) & (MASK > 0)].sum() / n
  assert loss == pytest.approx(expected, rel=1e-5)


def test_multitask_only_is_the_gmm_loss_plus_the_propensity_tasks():
  # Heads and ER/RE terms as in UMA², every negative weighted 1: no inverse propensity weights.
  config = LossConfig(lambdas=LAMBDAS, propensity_weights=False)
  task, args = task_loss(config)
  got = {k: float(v) for k, v in task.terms(**args).items()}
  n = len(POS)
  expected = {"positive": bce(POS, 1).sum() / n}
  for name, space in (("space_a", A), ("space_b", B), ("space_c", C)):
    expected[name] = bce(NEG, 0)[(SPACE == space) & (MASK > 0)].sum() / n
  # ER: every valid slot, the positive (label 1) included; RE: the recalled ones only.
  expected["er"] = (bce(ER[:, 0], 1).sum()
                    + bce(ER[:, 1:], RECALLED)[MASK > 0].sum()) / n
  expected["re"] = (bce(RE[:, 0], 1).sum() + bce(RE[:, 1:], EXPOSED)[RECALLED > 0].sum()) / n
  for name in expected:
    assert got[name] == pytest.approx(expected[name], rel=1e-5, abs=1e-6), name
  assert {k: got[k] for k in ("er", "re")} == pytest.approx(
      {k: numpy_terms()[k] for k in ("er", "re")}, rel=1e-5)  # The same tasks as UMA²'s.
  gmm, gmm_args = task_loss(LossConfig(use_nsdn=False, lambdas=LAMBDAS))
  gmm_loss = float(gmm(**{k: gmm_args[k] for k in ("pos_logits", "neg_logits", "neg_space",
                                                    "neg_mask")}))
  l4, l5 = LAMBDAS[3:]
  assert float(task(**args)) == pytest.approx(
      gmm_loss + l4 * expected["er"] + l5 * expected["re"], rel=1e-5)
  # Its weight metrics read the weights it used (1), not the propensity weights it ignores.
  assert float(task.weight_metrics["a"].result()) == float(task.weight_metrics["b"].result()) == 1
  uma2, uma2_args = task_loss(LossConfig(lambdas=LAMBDAS))
  uma2(**uma2_args)
  w = numpy_weights()
  assert float(uma2.weight_metrics["a"].result()) == pytest.approx(
      w[(SPACE == A) & (MASK > 0)].mean(), rel=1e-5)
  assert float(uma2.weight_metrics["b"].result()) == pytest.approx(
      w[(SPACE == B) & (MASK > 0)].mean(), rel=1e-5)


def test_multitask_only_uses_the_static_space_weights():
  # Off, the propensity weights leave the static ones in charge: SOS's C weight applies too.
  config = LossConfig(lambdas=LAMBDAS, propensity_weights=False, space_weights=(1.0, 1.0, 0.25))
  task, args = task_loss(config)
  got = float(task.terms(**args)["space_c"])
  assert got == pytest.approx(0.25 * numpy_terms(propensity_weights=False)["space_c"], rel=1e-5)


@pytest.mark.parametrize("kwargs,message", [
    (dict(use_nsdn=False, propensity_weights=False), "propensity_weights=False needs use_nsdn"),
    (dict(propensity_weights=False, weight_normalization="self_normalized"),
     "weight_normalization='self_normalized'.*propensity_weights=False"),
    (dict(space_weights=(1.0, 1.0, 0.25)), "space_weights.*propensity_weights=False"),
])
def test_propensity_weights_config_errors(kwargs, message):
  with pytest.raises(ValueError, match=message):
    LossConfig(**kwargs)


def test_masked_slots_contribute_nothing():
  config = LossConfig(lambdas=LAMBDAS)
  task, args = task_loss(config)
  neg = tf.Variable(NEG)
  er, re = tf.Variable(ER), tf.Variable(RE)
  with tf.GradientTape() as tape:
    loss = task(**{**args, "neg_logits": neg, "er_logits": er, "re_logits": re})
  g_neg, g_er, g_re = tape.gradient(loss, [neg, er, re])
  assert g_neg[0, 3] == 0 and g_er[0, 4] == 0 and g_re[0, 4] == 0
  changed = NEG.copy()
  changed[0, 3] = 50.0
  er_changed, re_changed = ER.copy(), RE.copy()
  er_changed[0, 4], re_changed[0, 4] = -50.0, 50.0
  task2, args2 = task_loss(config, neg_logits=changed, er_logits=er_changed, re_logits=re_changed)
  assert float(task2(**args2)) == pytest.approx(float(loss), rel=1e-6)


def test_weights_pass_no_gradient_to_the_propensities():
  # λ4 = λ5 = 0: the propensities only enter through the weights, which must be stop-gradient.
  task, args = task_loss(LossConfig(lambdas=(1.0, 1.0, 1.0, 0.0, 0.0)))
  er, re = tf.Variable(ER), tf.Variable(RE)
  with tf.GradientTape() as tape:
    loss = task(**{**args, "er_logits": er, "re_logits": re})
  for g in tape.gradient(loss, [er, re]):
    assert g is None or np.all(g.numpy() == 0)


def small_model(use_nsdn=True, lambdas=(1.0,) * 5, share_embeddings=True, tower="youtube_dnn"):
  schema = schema_lib.LogSchema(num_users=6, num_items=21, user_features={"age": 4},
                                item_features={"category": 5})
  catalog = schema_lib.ItemCatalog(features={"category": np.arange(21) % 5},
                                   click_count=np.zeros(21, np.int64),
                                   exposure_count=np.zeros(21, np.int64))
  # FM has no MLP: its width is its embeddings'.
  sizes = dict(factor_dim=8) if tower == "fm" else dict(hidden=(16,), output_dim=8)
  tw = towers.build_tower(tower, schema, catalog, **sizes)
  model = UMA2Model(tw, UMA2Task(LossConfig(lambdas=lambdas, use_nsdn=use_nsdn)),
                    share_embeddings=share_embeddings)
  batch = {"user_id": tf.constant([1, 2], tf.int64), "age": tf.constant([1, 3], tf.int64),
           "history": tf.constant([[3, 4, 0], [0, 0, 0]], tf.int64),
           "pos_item": tf.constant([5, 6], tf.int64),
           "neg_items": tf.constant([[7, 8, 9, 0], [10, 11, 12, 13]], tf.int64),
           "neg_space": tf.constant(SPACE), "neg_mask": tf.constant(MASK),
           "neg_recalled": tf.constant(RECALLED), "neg_exposed": tf.constant(EXPOSED)}
  return model, batch


def test_model_heads_get_no_gradient_from_the_matching_loss():
  model, batch = small_model(lambdas=(1.0, 1.0, 1.0, 0.0, 0.0), share_embeddings=False)
  with tf.GradientTape() as tape:
    loss = model.compute_loss(batch, training=True)
  head_vars = model.nsdn.trainable_variables
  assert head_vars
  head_grads, tower_grads = tape.gradient(loss, [head_vars, model.tower.trainable_variables])
  for var, grad in zip(head_vars, head_grads):
    assert grad is None or np.all(tf.convert_to_tensor(grad).numpy() == 0), var.name
  assert any(g is not None and np.any(tf.convert_to_tensor(g).numpy() != 0) for g in tower_grads)


def test_model_outputs_and_plain_gmm_has_no_heads():
  model, batch = small_model()
  out = model(batch)
  assert set(out) == {"matching_logits", "p1", "p2"}
  assert out["matching_logits"].shape == (2, 5) and out["p1"].shape == (2, 5)
  gmm, _ = small_model(use_nsdn=False)
  assert set(gmm(batch)) == {"matching_logits"} and gmm.nsdn is None


@pytest.mark.parametrize("tower", ["youtube_dnn", "dat"])
def test_training_fits_the_matching_task_and_the_propensity_tasks(tower):
  # The weighted loss itself need not fall (weights move as the heads learn); its parts do.
  gmm, batch = small_model(tower=tower, use_nsdn=False)
  model, _ = small_model(tower=tower)
  ds = tf.data.Dataset.from_tensors(batch).repeat(60)
  for m in (gmm, model):
    m.compile(optimizer=keras.optimizers.Adam(0.01))
  matching = ("loss_positive", "loss_space_a", "loss_space_b", "loss_space_c")
  history = gmm.fit(ds, epochs=2, verbose=0).history
  assert sum(history[k][-1] for k in matching) < 0.5 * sum(history[k][0] for k in matching)
  history = model.fit(ds, epochs=3, verbose=0).history
  assert history["loss_er"][-1] < history["loss_er"][0]
  assert history["loss_re"][-1] < history["loss_re"][0]
  assert history["loss_positive"][-1] < history["loss_positive"][0]


@pytest.mark.parametrize(
  "tower,share",
  [
    ("youtube_dnn", True),
    ("youtube_dnn", False),
    ("dat", True),
    ("fm", True),
    ("mind", True),
    ("esam_dat", True),
  ],
)
def test_deduplicated_item_tower_matches_one_pass_per_slot(tower, share):
  # Slots repeat items (13 in both rows, padding 0 twice): the item tower running once per distinct
  # item must give the per-slot outputs, loss and gradients of running once per slot.
  model, batch = small_model(tower=tower, share_embeddings=share)
  batch = {**batch, "neg_items": tf.constant([[7, 13, 7, 0], [13, 11, 13, 0]], tf.int64),
           "request_id": tf.constant([1, 2], tf.int64)}
  model(batch)
  results = []
  for dedup in (True, False):
    model.dedup_items = dedup
    with tf.GradientTape() as tape:
      loss = model.compute_loss(batch, training=True)
    grads = tape.gradient(loss, model.trainable_variables)
    results.append((loss.numpy(), model(batch),
                    [tf.convert_to_tensor(g).numpy() if g is not None else None for g in grads]))
  (loss_d, out_d, grads_d), (loss_s, out_s, grads_s) = results
  np.testing.assert_allclose(loss_d, loss_s, rtol=1e-5)
  for key in out_s:
    np.testing.assert_allclose(out_d[key].numpy(), out_s[key].numpy(), rtol=1e-5, atol=1e-6)
  for var, gd, gs in zip(model.trainable_variables, grads_d, grads_s):
    assert (gd is None) == (gs is None), var.name
    if gs is not None:
      np.testing.assert_allclose(gd, gs, rtol=1e-4, atol=1e-6, err_msg=var.name)

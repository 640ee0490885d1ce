"""ComiRec-SA and ComiRec-DR against numpy on hand examples: the routing matrix A, the interests,
the padding, the hard readout and its gradient, the registry and one training step."""
import uma2_tf  # noqa: F401

import numpy as np
import pytest
import tensorflow as tf
import tf_keras as keras

from test_fm_mind import CATALOG, SCHEMA, features, numpy_squash, set_table, small_world
from uma2_tf.data import batch_keys
from uma2_tf.data import schema as schema_lib
from uma2_tf.models import towers
from uma2_tf.models.towers import comirec

# 2 users over a 6-long right-padded history: 3 real items, then 1.
HISTORY = np.array([[2, 3, 1, 0, 0, 0], [1, 0, 0, 0, 0, 0]], np.int64)
REAL = HISTORY != 0
K = 3


def numpy_softmax(x, axis):
  e = np.exp(x - x.max(axis=axis, keepdims=True))
  return e / e.sum(axis=axis, keepdims=True)


def numpy_self_attention(h, real, w1, w2, positions):
  """ComiRec-SA for one user: A = softmax over real positions of W2 tanh(W1 (H + P)), V = A H."""
  logits = (np.tanh((h + positions[:len(h)]) @ w1) @ w2).T  # [K, L]
  a = np.zeros_like(logits)
  a[:, real] = numpy_softmax(logits[:, real], axis=1)
  return a @ h, a


def numpy_dynamic_routing(h, real, bilinear, iterations):
  """ComiRec-DR for one user: b = 0, c = softmax_interests(b), v_j = squash(sum_i c_ij W_ij h_i)."""
  mapped = np.einsum("lkcd,ld->klc", bilinear[:len(h)], h)  # W_ij h_i: [K, L, d]
  b = np.zeros(mapped.shape[:2])
  for _ in range(iterations):
    c = numpy_softmax(b, axis=0) * real[None, :]
    v = np.stack([numpy_squash(z) for z in np.einsum("kl,klc->kc", c, mapped)])
    b = b + np.einsum("klc,kc->kl", mapped, v)
  return v, c


def randomised(tower, seed):
  """The tower built on HISTORY, with unit-scale embedding tables (so the attention and the routing
  are far from uniform); returns it."""
  tower.interest_routing(features(history=HISTORY))
  rng = np.random.default_rng(seed)
  e = tower.embeddings
  for table in (e.item_id, *e.item_features.values()):
    set_table(table, rng)
  return tower


@pytest.fixture(scope="module")
def sa_tower():
  tower = randomised(comirec.ComiRecSA(SCHEMA, CATALOG, num_interests=K, attention_dim=5,
                                       output_dim=4, embedding_dim=3), seed=1)
  rng = np.random.default_rng(2)
  layer = tower.extractor
  for weight in (layer.w1, layer.w2, layer.positions):
    weight.assign(rng.normal(size=weight.shape).astype(np.float32))
  return tower


@pytest.fixture(scope="module")
def dr_tower():
  return randomised(comirec.ComiRecDR(SCHEMA, CATALOG, num_interests=K, output_dim=4,
                                      embedding_dim=3), seed=3)


def history_embeddings(tower, history):
  """H through the tower's own item side: the space the interests must live in."""
  return tower.item_embedding(tf.constant(history)).numpy().astype(np.float64)


# --- ComiRec-SA ---------------------------------------------------------------------------------


def test_sa_attention_sums_to_one_over_real_positions(sa_tower):
  interests, a = sa_tower.interest_routing(features(history=HISTORY))
  assert interests.dtype == tf.float32 and a.dtype == tf.float32
  interests, a = interests.numpy(), a.numpy()
  assert interests.shape == (2, K, 4) and a.shape == (2, K, 6)
  np.testing.assert_allclose(a.sum(-1), 1.0, atol=1e-6)
  np.testing.assert_array_equal(a[np.broadcast_to(~REAL[:, None], a.shape)], 0.0)
  np.testing.assert_allclose(a[1, :, 0], 1.0, atol=1e-6)  # One real item takes all the weight...
  h = history_embeddings(sa_tower, HISTORY)
  np.testing.assert_allclose(interests[1], np.repeat(h[1, :1], K, 0), atol=1e-6)  # ... so V = h_1.
  assert np.abs(a[0, 0] - a[0, 1]).max() > 1e-2  # The heads attend differently.
  np.testing.assert_allclose(sa_tower.user_embedding(features(history=HISTORY)), interests)


def test_sa_interests_are_a_h_from_the_layers_own_weights(sa_tower):
  interests, a = (x.numpy() for x in sa_tower.interest_routing(features(history=HISTORY)))
  h = history_embeddings(sa_tower, HISTORY)
  w1, w2, positions = (w.numpy().astype(np.float64) for w in
                       (sa_tower.extractor.w1, sa_tower.extractor.w2, sa_tower.extractor.positions))
  for user in range(2):
    want_v, want_a = numpy_self_attention(h[user], REAL[user], w1, w2, positions)
    np.testing.assert_allclose(a[user], want_a, atol=1e-5)
    np.testing.assert_allclose(interests[user], want_v, atol=1e-5)


def test_sa_without_positions_ignores_the_order_of_the_history():
  tower = randomised(comirec.ComiRecSA(SCHEMA, CATALOG, num_interests=K, positional=False,
                                       output_dim=4, embedding_dim=3), seed=4)
  assert tower.extractor.positions is None
  shuffled = np.array([[1, 2, 3, 0, 0, 0], [1, 0, 0, 0, 0, 0]], np.int64)
  got = tower.user_embedding(features(history=shuffled)).numpy()
  np.testing.assert_allclose(got, tower.user_embedding(features(history=HISTORY)), atol=1e-6)


# --- ComiRec-DR ---------------------------------------------------------------------------------


def test_dr_routing_matches_numpy_and_is_zero_at_padding(dr_tower):
  interests, a = (x.numpy() for x in dr_tower.interest_routing(features(history=HISTORY)))
  assert interests.shape == (2, K, 4) and a.shape == (2, K, 6)
  np.testing.assert_array_equal(a[np.broadcast_to(~REAL[:, None], a.shape)], 0.0)
  # Each real behaviour is shared out over the interests.
  np.testing.assert_allclose(a.sum(1), REAL.astype(np.float32), atol=1e-6)
  h = history_embeddings(dr_tower, HISTORY)
  bilinear = dr_tower.extractor.bilinear.numpy().astype(np.float64)
  for user in range(2):
    want_v, want_a = numpy_dynamic_routing(h[user], REAL[user], bilinear, 3)
    np.testing.assert_allclose(a[user], want_a, atol=1e-5)
    np.testing.assert_allclose(interests[user], want_v, atol=1e-5)
  assert np.abs(a[0] - 1 / K).max() > 1e-2  # The routing moved away from its uniform start.
  assert (np.linalg.norm(interests, axis=-1) < 1).all()  # squash


def test_dr_is_deterministic_and_its_routing_has_no_gradient(dr_tower):
  f = features(history=HISTORY)
  first = [x.numpy() for x in dr_tower.interest_routing(f)]
  for training in (False, True):
    again = [x.numpy() for x in dr_tower.interest_routing(f, training=training)]
    np.testing.assert_array_equal(again[0], first[0])
    np.testing.assert_array_equal(again[1], first[1])
  with tf.GradientTape(persistent=True) as tape:
    interests, a = dr_tower.interest_routing(f, training=True)
  variables = [dr_tower.extractor.bilinear, dr_tower.embeddings.item_id.embeddings]
  assert all(g is None for g in tape.gradient(a, variables))  # c_ij read stopped gradients only.
  assert all(g is not None for g in tape.gradient(interests, variables))  # The last sum trains.


# --- Both ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("fixture", ["sa_tower", "dr_tower"])
def test_more_padding_gives_the_same_interests(fixture, request):
  tower = request.getfixturevalue(fixture)
  short_v, short_a = (x.numpy() for x in tower.interest_routing(features(history=HISTORY[:, :4])))
  long_v, long_a = (x.numpy() for x in tower.interest_routing(features(history=HISTORY)))
  np.testing.assert_allclose(short_v, long_v, atol=1e-6)
  np.testing.assert_allclose(short_a, long_a[..., :4], atol=1e-6)
  with pytest.raises(ValueError, match="longer than"):
    tower.user_embedding(features(history=np.ones((2, 7), np.int64)))


@pytest.mark.parametrize("fixture", ["sa_tower", "dr_tower"])
def test_an_empty_history_gives_zeros_not_nan(fixture, request):
  tower = request.getfixturevalue(fixture)
  history = np.array([[0] * 6, [3, 0, 0, 0, 0, 0]], np.int64)
  items = tf.constant([[1, 2, 3], [3, 1, 2]], tf.int64)
  with tf.GradientTape() as tape:
    interests, a = tower.interest_routing(features(history=history), training=True)
    logits = tower.matching_logits(features(history=history), interests,
                                   tower.item_embedding(items, training=True), training=True)
  np.testing.assert_array_equal(interests[0], 0.0)
  np.testing.assert_array_equal(a[0], 0.0)
  assert np.abs(interests[1].numpy()).max() > 0
  gradients = tape.gradient(logits, tower.trainable_variables)
  assert all(np.isfinite(tf.convert_to_tensor(g).numpy()).all() for g in gradients if g is not None)


# Hard readout on hand numbers: user 0's positive [1, 0.5] has inner products 1, 0.5, -1.75 with
# the interests (k* = 0), user 1's [1, -0.5] 0.25, 1.5, 0.15 (k* = 1).
INTERESTS = np.array([[[1.0, 0.0], [0.0, 1.0], [-2.0, 0.5]],
                      [[0.5, 0.5], [1.0, -1.0], [0.2, 0.1]]], np.float32)   # [B=2, K=3, d=2]
SLOTS = np.array([[[1.0, 0.5], [0.0, 1.0], [2.0, -1.0]],
                  [[1.0, -0.5], [1.0, 1.0], [-1.0, 0.0]]], np.float32)      # [B, 1+N=3, d]


@pytest.mark.parametrize("fixture", ["sa_tower", "dr_tower"])
def test_hard_readout_scores_with_the_closest_interest_only(fixture, request):
  tower = request.getfixturevalue(fixture)
  interests, slots = tf.constant(INTERESTS), tf.constant(SLOTS)
  with tf.GradientTape(persistent=True) as tape:
    tape.watch([interests, slots])
    logits = tower.matching_logits(features(), interests, slots)
  np.testing.assert_allclose(logits, [[1.0, 0.0, 2.0], [1.5, 0.0, -1.0]], atol=1e-6)
  query = tower.training_query(features(), interests, slots[:, 0])
  np.testing.assert_allclose(query, [[1.0, 0.0], [1.0, -1.0]])
  # d sum_n <v_k*, e_n> / d v_k = sum_n e_n for k*, 0 for the others.
  np.testing.assert_allclose(tape.gradient(logits, interests),
                             [[[3.0, 0.5], [0, 0], [0, 0]], [[0, 0], [1.0, 0.5], [0, 0]]])
  # The positive gets the query's gradient as a slot, none through the choice of k*.
  np.testing.assert_allclose(tape.gradient(logits, slots),
                             np.repeat([[[1.0, 0.0]], [[1.0, -1.0]]], 3, axis=1))


def test_comirec_towers_are_registered():
  for name, cls in (("comirec_sa", comirec.ComiRecSA), ("comirec_dr", comirec.ComiRecDR)):
    assert towers.TOWERS[name] is cls
    tower = towers.build_tower(name, SCHEMA, CATALOG, num_interests=2, output_dim=4,
                               embedding_dim=3)
    assert isinstance(tower, towers.Tower) and tower.num_interests == 2 and tower.name == name
    assert tower.user_embedding(features()).shape == (2, 2, 4)
  assert towers.build_tower("comirec_sa", SCHEMA, CATALOG).num_interests == 4


@pytest.mark.parametrize("name", ["comirec_sa", "comirec_dr"])
def test_one_training_step_of_the_uma2_model(name):
  from uma2_tf.models.uma2 import UMA2Model
  from uma2_tf.tasks import LossConfig, UMA2Task

  schema, catalog = small_world(num_users=6, num_items=21, ages=4, categories=5)
  tower = towers.build_tower(name, schema, catalog, num_interests=2, output_dim=8, embedding_dim=8)
  model = UMA2Model(tower, UMA2Task(LossConfig(use_nsdn=False)))
  # The batch of test_fm_mind's `uma2_model`: one positive and 4 sampled negatives per user.
  space = np.array([[0, 1, 2, 2], [0, 1, 1, 2]], np.int32)
  batch = {schema_lib.USER_ID: [1, 2], "age": [1, 3],
           schema_lib.HISTORY: [[3, 4, 5, 6, 0], [7, 0, 0, 0, 0]],
           batch_keys.POS_ITEM: [5, 6], batch_keys.NEG_ITEMS: [[7, 8, 9, 0], [10, 11, 12, 13]]}
  batch = {k: tf.constant(v, tf.int64) for k, v in batch.items()}
  batch.update({batch_keys.NEG_SPACE: tf.constant(space),
                batch_keys.NEG_MASK: tf.constant([[1, 1, 1, 0], [1, 1, 1, 1]], tf.float32),
                batch_keys.NEG_RECALLED: tf.constant(space < 2, tf.float32),
                batch_keys.NEG_EXPOSED: tf.constant(space == 0, tf.float32)})
  model.compile(optimizer=keras.optimizers.Adam(0.01))
  assert model(batch)["matching_logits"].shape == (2, 5)
  extractor = [w.numpy() for w in tower.extractor.trainable_weights]
  # Eager: tracing `fit`'s tf.function would take most of the test's time.
  assert np.isfinite(model.train_step(batch)["loss"].numpy())
  assert all(np.abs(w.numpy() - old).max() > 0
             for w, old in zip(tower.extractor.trainable_weights, extractor))

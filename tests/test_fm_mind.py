"""FM and MIND towers against numpy on hand examples, multi-interest retrieval, the real trainer on
`tiny`, and FM's export as a single-vector tower (MIND's: `test_export_multi_interest`)."""
import uma2_tf  # noqa: F401

import os

import numpy as np
import pytest
import tensorflow as tf

from uma2_tf import export, metrics
from uma2_tf.data import schema as schema_lib
from uma2_tf.models.towers import fm as fm_lib
from uma2_tf.models.towers import mind as mind_lib
from uma2_tf.models import towers

# 2 users, 3 items (id 0 is padding everywhere), one user feature, two item features.
SCHEMA = schema_lib.LogSchema(num_users=3, num_items=4, user_features={"age": 3},
                              item_features={"category": 3, "author": 4})
CATEGORY = np.array([0, 1, 2, 1], np.int64)
AUTHOR = np.array([0, 3, 1, 2], np.int64)
CATALOG = schema_lib.ItemCatalog(features={"category": CATEGORY, "author": AUTHOR},
                                 click_count=np.zeros(4, np.int64),
                                 exposure_count=np.zeros(4, np.int64))
USERS = {schema_lib.USER_ID: np.array([1, 2], np.int64), "age": np.array([2, 1], np.int64),
         schema_lib.HISTORY: np.array([[2, 3, 0], [1, 0, 0]], np.int64)}
ITEMS = np.arange(4, dtype=np.int64)


def features(**overrides):
  return {k: tf.constant(v) for k, v in {**USERS, **overrides}.items()}


def set_table(layer, rng):
  """Known numbers in an embedding table (fixed by the seed); returns them."""
  values = rng.normal(size=layer.embeddings.shape).astype(np.float32)
  layer.set_weights([values])
  return values.astype(np.float64)


# --- FM ----------------------------------------------------------------------------------------


def numpy_fm(tables, user, age, history, item, w0, user_weights):
  """The full FM score over the concatenated fields, and its user-only part."""
  real = [h for h in history if h != 0]
  user_fields = [tables["user_id"][user], tables["age"][age],
                 np.mean([tables["item_id"][h] for h in real], axis=0)]
  item_fields = [tables["item_id"][item], tables["category"][CATEGORY[item]],
                 tables["author"][AUTHOR[item]]]
  fields = user_fields + item_fields
  linear = (w0 + user_weights["user_id"][user] + user_weights["age"][age] + user_weights["history"]
            + tables["w_item_id"][item, 0] + tables["w_category"][CATEGORY[item], 0]
            + tables["w_author"][AUTHOR[item], 0])
  pairs = sum(fields[f] @ fields[g] for f in range(len(fields)) for g in range(f + 1, len(fields)))
  user_pairs = sum(user_fields[f] @ user_fields[g] for f in range(3) for g in range(f + 1, 3))
  user_only = (w0 + user_weights["user_id"][user] + user_weights["age"][age]
               + user_weights["history"] + user_pairs)
  return linear + pairs, user_only


@pytest.fixture(scope="module")
def fm_tower():
  tower = fm_lib.FM(SCHEMA, CATALOG, factor_dim=3)
  tower.user_embedding(features())
  tower.item_embedding(tf.constant(ITEMS))
  rng = np.random.default_rng(7)
  e = tower.embeddings
  tables = {"user_id": set_table(e.user_id, rng), "age": set_table(e.user_features["age"], rng),
            "item_id": set_table(e.item_id, rng),
            "category": set_table(e.item_features["category"], rng),
            "author": set_table(e.item_features["author"], rng),
            "w_item_id": set_table(tower.item_id_weight, rng),
            "w_category": set_table(tower.item_feature_weights["category"], rng),
            "w_author": set_table(tower.item_feature_weights["author"], rng)}
  return tower, tables


def test_fm_inner_product_is_the_fm_score_minus_the_user_only_terms(fm_tower):
  tower, tables = fm_tower
  u = tower.user_embedding(features()).numpy()
  v = tower.item_embedding(tf.constant(ITEMS)).numpy()
  assert u.shape == (2, 4) and v.shape == (4, 4)
  np.testing.assert_array_equal(u[:, -1], 1.0)
  got = u @ v[1:].T  # [user, item 1..3]
  # w0 and the user linear weights exist only in the full FM: they must cancel out.
  rng = np.random.default_rng(3)
  w0 = rng.normal()
  user_weights = {"user_id": rng.normal(size=3), "age": rng.normal(size=3), "history": rng.normal()}
  for row in range(2):
    args = (USERS[schema_lib.USER_ID][row], USERS["age"][row], USERS[schema_lib.HISTORY][row])
    full, user_only = zip(*[numpy_fm(tables, *args, item, w0, user_weights) for item in (1, 2, 3)])
    np.testing.assert_allclose(got[row], np.array(full) - np.array(user_only), atol=1e-5)
    assert len(set(np.round(full, 6))) == 3  # Distinct scores, so the ranking check bites.
    np.testing.assert_array_equal(np.argsort(-got[row]), np.argsort(-np.array(full)))


def test_fm_uses_shared_vectors_like_its_own_lookup(fm_tower):
  tower, _ = fm_tower
  f = features()
  items = tf.constant([[1, 2, 3], [3, 3, 1]], tf.int64)
  np.testing.assert_allclose(tower.user_embedding(f, user_vector=tower.embeddings.user_vector(f)),
                             tower.user_embedding(f), atol=1e-6)
  shared = tower.item_embedding(items, item_vector=tower.embeddings.item_vector(items))
  np.testing.assert_allclose(shared, tower.item_embedding(items), atol=1e-6)


# --- MIND: routing -----------------------------------------------------------------------------


def numpy_squash(z):
  norm2 = (z ** 2).sum(-1, keepdims=True)
  return norm2 / (1 + norm2) * z / np.sqrt(norm2) if norm2.all() else z * 0


def numpy_routing(behaviours, real, bilinear, logits, iterations, active=None):
  """MIND's Algorithm 1 for one user: softmax of b_ij over interests j for each behaviour i."""
  mapped = behaviours @ bilinear  # S e_i
  b = logits.copy()
  for _ in range(iterations):
    masked = b if active is None else np.where(active[None, :], b, -np.inf)
    w = np.exp(masked - masked.max(1, keepdims=True))
    w = w / w.sum(1, keepdims=True) * real[:, None]
    capsules = np.stack([numpy_squash(z) for z in w.T @ mapped])
    b = b + mapped @ capsules.T
  return capsules


# History of 2 real items and 1 padding slot, whose vector and initial logits are large: they must
# not matter.
BEHAVIOURS = np.array([[[1.0, 0.5], [-0.5, 2.0], [7.0, 7.0]]], np.float32)
REAL = np.array([[1, 1, 0]], np.float32)
BILINEAR = np.array([[1.0, 0.2], [0.3, -1.0]], np.float32)
LOGITS = np.array([[0.5, -0.5], [0.1, 0.3], [2.0, -2.0]], np.float32)


def routing_layer(iterations, logits=LOGITS, bilinear=BILINEAR):
  layer = mind_lib.B2IRouting(num_interests=logits.shape[1], capsule_dim=bilinear.shape[1],
                              iterations=iterations)
  layer.build((None, *logits.shape[:1], bilinear.shape[0]))
  layer.bilinear.assign(bilinear)
  layer.initial_logits.assign(logits)
  return layer


@pytest.mark.parametrize("iterations", [1, 2, 3])
def test_routing_matches_the_papers_algorithm(iterations):
  got = routing_layer(iterations)(tf.constant(BEHAVIOURS), tf.constant(REAL)).numpy()
  want = numpy_routing(BEHAVIOURS[0].astype(np.float64), REAL[0], BILINEAR, LOGITS, iterations)
  assert got.shape == (1, 2, 2)
  np.testing.assert_allclose(got[0], want, atol=1e-6)
  # The capsules differ (the random start breaks the symmetry of the shared S), and squash keeps
  # every norm below 1.
  assert np.abs(got[0, 0] - got[0, 1]).max() > 1e-3
  assert (np.linalg.norm(got, axis=-1) < 1).all()
  # Padding contributes nothing: the same as routing over the two real items alone.
  alone = routing_layer(iterations, logits=LOGITS[:2])(tf.constant(BEHAVIOURS[:, :2]),
                                                       tf.constant(REAL[:, :2])).numpy()
  np.testing.assert_allclose(got, alone, atol=1e-6)


def test_one_routing_iteration_by_hand():
  # One iteration: w_i = softmax_j(b_i), z_j = sum_i w_ij S e_i, u_j = squash(z_j).
  mapped = BEHAVIOURS[0, :2].astype(np.float64) @ BILINEAR  # [[1.15, -0.3], [0.1, -2.1]]
  np.testing.assert_allclose(mapped, [[1.15, -0.3], [0.1, -2.1]], atol=1e-6)
  w = np.array([[1 / (1 + np.exp(-1.0)), 1 / (1 + np.exp(1.0))],
                [1 / (1 + np.exp(0.2)), 1 / (1 + np.exp(-0.2))]])
  z = w.T @ mapped
  want = z * ((z ** 2).sum(1) / (1 + (z ** 2).sum(1)) / np.linalg.norm(z, axis=1))[:, None]
  got = routing_layer(1)(tf.constant(BEHAVIOURS), tf.constant(REAL)).numpy()[0]
  np.testing.assert_allclose(got, want, atol=1e-6)


def test_dynamic_number_of_interests():
  counts = np.array([0, 1, 2, 3, 4, 7, 8, 15, 16, 20])
  history = np.array([[5] * n + [0] * (20 - n) for n in counts], np.int64)
  active = mind_lib.active_interests(tf.constant(history), 4, dynamic=True).numpy()
  # K' = max(1, min(K, floor(log2 n))).
  np.testing.assert_array_equal(active.sum(1), [1, 1, 1, 1, 2, 2, 3, 3, 4, 4])
  assert (active[:, 0]).all() and (np.diff(active.astype(int), axis=1) <= 0).all()
  assert mind_lib.active_interests(tf.constant(history), 4, dynamic=False).numpy().all()


def test_routing_over_the_active_interests_only():
  rng = np.random.default_rng(0)
  behaviours = rng.normal(size=(1, 6, 3)).astype(np.float32)
  real = np.array([[1, 1, 1, 1, 0, 0]], np.float32)
  logits = rng.normal(size=(6, 3)).astype(np.float32)
  bilinear = rng.normal(size=(3, 4)).astype(np.float32)
  active = np.array([[True, True, False]])
  got = routing_layer(3, logits, bilinear)(tf.constant(behaviours), tf.constant(real),
                                           tf.constant(active)).numpy()[0]
  want = numpy_routing(behaviours[0].astype(np.float64), real[0], bilinear, logits, 3, active[0])
  np.testing.assert_allclose(got, want, atol=1e-5)
  np.testing.assert_array_equal(got[2], 0.0)


def numpy_routing_weights(behaviours, real, bilinear, logits, iterations, active=None):
  """The w_ij [H, K] of MIND's last routing iteration, for one user."""
  mapped = behaviours @ bilinear
  b = logits.copy()
  for _ in range(iterations):
    masked = b if active is None else np.where(active[None, :], b, -np.inf)
    w = np.exp(masked - masked.max(1, keepdims=True))
    w = w / w.sum(1, keepdims=True) * real[:, None]
    capsules = np.stack([numpy_squash(z) for z in w.T @ mapped])
    b = b + mapped @ capsules.T
  return w


def test_routing_weights_of_one_iteration_by_hand():
  # w_i = softmax_j(b_i) for the two real behaviours, 0 for the padding one.
  capsules, weights = routing_layer(1)(tf.constant(BEHAVIOURS), tf.constant(REAL),
                                       return_weights=True)
  want = [[1 / (1 + np.exp(-1.0)), 1 / (1 + np.exp(1.0))],
          [1 / (1 + np.exp(0.2)), 1 / (1 + np.exp(-0.2))], [0.0, 0.0]]
  np.testing.assert_allclose(weights.numpy()[0], want, atol=1e-6)
  np.testing.assert_array_equal(capsules, routing_layer(1)(tf.constant(BEHAVIOURS),
                                                           tf.constant(REAL)))


@pytest.mark.parametrize("iterations", [2, 3])
def test_routing_weights_are_the_last_iterations(iterations):
  _, weights = routing_layer(iterations)(tf.constant(BEHAVIOURS), tf.constant(REAL),
                                         return_weights=True)
  want = numpy_routing_weights(BEHAVIOURS[0].astype(np.float64), REAL[0], BILINEAR, LOGITS,
                               iterations)
  np.testing.assert_allclose(weights.numpy()[0], want, atol=1e-6)
  assert np.abs(want[:2] - numpy_routing_weights(BEHAVIOURS[0].astype(np.float64), REAL[0],
                                                 BILINEAR, LOGITS, 1)[:2]).max() > 1e-3


# --- MIND: label-aware attention and the tower --------------------------------------------------


INTERESTS = np.array([[[1.0, 0.0], [0.0, 1.0], [-2.0, 0.5]],
                      [[0.5, 0.5], [1.0, -1.0], [0.2, 0.1]]], np.float32)   # [B=2, K=3, d=2]
SLOTS = np.array([[[1.0, 0.5], [0.0, 1.0], [2.0, -1.0]],
                  [[0.0, 2.0], [1.0, 1.0], [-1.0, 0.0]]], np.float32)       # [B, 1+N=3, d]


def numpy_attention_logits(interests, slots, transform, active=None):
  out = []
  for v, e in zip(interests.astype(np.float64), slots.astype(np.float64)):
    a = transform(v @ e[0])
    a = a if active is None else np.where(active, a, -np.inf)
    w = np.exp(a - a.max())
    w /= w.sum()
    out.append(e @ (w @ v))
  return np.array(out)


@pytest.mark.parametrize("mode,power,transform", [
    ("power", 2, lambda x: x ** 2), ("power", 3, lambda x: x ** 3), ("power", 0, lambda x: 0 * x),
    ("scaled", 2, lambda x: 2 * x), ("scaled", 0.5, lambda x: 0.5 * x)])
def test_label_aware_attention_matches_numpy(mode, power, transform):
  tower = mind_lib.MIND(SCHEMA, CATALOG, num_interests=3, dynamic_interests=False, attention=mode,
                        attention_power=power)
  interests, slots = tf.constant(INTERESTS), tf.constant(SLOTS)
  with tf.GradientTape() as tape:
    tape.watch(interests)
    got = tower.matching_logits(features(), interests, slots)
  np.testing.assert_allclose(got.numpy(), numpy_attention_logits(INTERESTS, SLOTS, transform),
                             rtol=1e-5, atol=1e-6)
  assert np.isfinite(tape.gradient(got, interests).numpy()).all()


def test_power_attention_weighs_interests_by_the_squared_dot_product():
  # User 0's label [1, 0.5]: dot products 1, 0.5, -1.75; squared 1, 0.25, 3.0625, so the interest
  # pointing away from the label gets the largest weight — the paper's pow taken literally.
  w = mind_lib.label_aware_weights(tf.constant(INTERESTS), tf.constant(SLOTS[:, 0]), 2.0).numpy()
  want = np.exp([1.0, 0.25, 3.0625]) / np.exp([1.0, 0.25, 3.0625]).sum()
  np.testing.assert_allclose(w[0], want, rtol=1e-6)
  assert w[0].argmax() == 2


def test_label_aware_attention_skips_unused_interests():
  # 4 real history items: K' = floor(log2 4) = 2 of K = 3, so the third interest has weight 0.
  tower = mind_lib.MIND(SCHEMA, CATALOG, num_interests=3)
  f = features(history=np.array([[1, 2, 3, 1], [1, 1, 1, 1]], np.int64))
  got = tower.matching_logits(f, tf.constant(INTERESTS), tf.constant(SLOTS)).numpy()
  want = numpy_attention_logits(INTERESTS, SLOTS, lambda x: x ** 2, active=np.array([1, 1, 0]) > 0)
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_argmax_attention_scores_with_the_closest_active_interest():
  # User 0 (8 items, K' = 3): inner products 1, 0.5, 2.5 with its positive [1, 0.5], so k* = 2.
  # User 1 (4 items, K' = 2): 1, -2, 6 with [0, 2]; interest 3 is the closest but unused: k* = 0.
  tower = mind_lib.MIND(SCHEMA, CATALOG, num_interests=3, attention="argmax")
  f = features(history=np.array([[1, 2, 3, 1, 2, 3, 1, 2], [1, 2, 3, 1, 0, 0, 0, 0]], np.int64))
  interests = tf.constant([[[1.0, 0.0], [0.0, 1.0], [2.0, 1.0]],
                           [[0.5, 0.5], [1.0, -1.0], [0.0, 3.0]]])
  slots = tf.constant(SLOTS)
  with tf.GradientTape() as tape:
    tape.watch(interests)
    got = tower.matching_logits(f, interests, slots)
  np.testing.assert_allclose(got, [[2.5, 1.0, 3.0], [1.0, 1.0, -0.5]], atol=1e-6)
  np.testing.assert_allclose(tower.training_query(f, interests, slots[:, 0]),
                             [[2.0, 1.0], [0.5, 0.5]])
  # Only the chosen interest is trained: sum_n e_n for it, 0 for the others.
  np.testing.assert_allclose(tape.gradient(got, interests),
                             [[[0, 0], [0, 0], [3.0, 0.5]], [[0, 3.0], [0, 0], [0, 0]]])
  with pytest.raises(ValueError, match="hard_readout"):
    mind_lib.label_aware_weights(interests, slots[:, 0], 2.0, "argmax")


def test_mind_interest_routing_is_the_last_routing_weights():
  tower = mind_lib.MIND(SCHEMA, CATALOG, num_interests=3, hidden=(8,), output_dim=5,
                        embedding_dim=4, capsule_dim=6)
  # User 0 has 5 real items (K' = 2), user 1 one (K' = 1), then padding.
  history = np.array([[1, 2, 3, 1, 2, 0, 0, 0], [2, 0, 0, 0, 0, 0, 0, 0]], np.int64)
  f = features(history=history)
  interests, a = (x.numpy() for x in tower.interest_routing(f))
  assert a.shape == (2, 3, 8) and a.dtype == np.float32
  np.testing.assert_array_equal(interests, tower.user_embedding(f))
  real = history != 0
  np.testing.assert_array_equal(a[np.broadcast_to(~real[:, None], a.shape)], 0.0)
  np.testing.assert_array_equal(a[0, 2], 0.0)  # Interests beyond K' route nothing.
  np.testing.assert_array_equal(a[1, 1:], 0.0)
  np.testing.assert_allclose(a.sum(1), real.astype(np.float32), atol=1e-6)
  behaviours = tower.pooled_items(tf.constant(history)).numpy().astype(np.float64)
  bilinear = tower.routing.bilinear.numpy().astype(np.float64)
  logits = tower.routing.initial_logits.numpy().astype(np.float64)
  for user, used in ((0, 2), (1, 1)):
    want = numpy_routing_weights(behaviours[user], real[user].astype(np.float64), bilinear,
                                 logits, 3, np.arange(3) < used)
    np.testing.assert_allclose(a[user], want.T, atol=1e-6)


def test_mind_tower_shapes_and_shared_vectors():
  tower = mind_lib.MIND(SCHEMA, CATALOG, num_interests=3, hidden=(8,), output_dim=5,
                        embedding_dim=4, capsule_dim=6)
  # User 0 has 8 real items (K' = 3), user 1 one (K' = 1).
  f = features(history=np.array([[1, 2, 3, 1, 2, 3, 1, 2], [2, 0, 0, 0, 0, 0, 0, 0]], np.int64))
  u = tower.user_embedding(f).numpy()
  items = tf.constant([[1, 2, 3], [3, 3, 1]], tf.int64)
  v = tower.item_embedding(items).numpy()
  assert u.shape == (2, 3, 5) and v.shape == (2, 3, 5) and tower.num_interests == 3
  assert np.abs(u[0, 0] - u[0, 1]).max() > 1e-4  # User 0's interests differ.
  np.testing.assert_array_equal(u[1, 1:], np.repeat(u[1, :1], 2, axis=0))  # Unused: copies of 1.
  shared_u = tower.user_embedding(f, user_vector=tower.embeddings.user_vector(f))
  shared_v = tower.item_embedding(items, item_vector=tower.embeddings.item_vector(items))
  np.testing.assert_allclose(shared_u, u, atol=1e-6)
  np.testing.assert_allclose(shared_v, v, atol=1e-6)
  with pytest.raises(ValueError, match="longer than"):
    tower.user_embedding(features(history=np.ones((2, 9), np.int64)))


def test_bad_mind_arguments():
  with pytest.raises(ValueError, match="whole attention_power"):
    mind_lib.MIND(SCHEMA, CATALOG, attention_power=1.5)
  with pytest.raises(ValueError, match="attention must be one of"):
    mind_lib.MIND(SCHEMA, CATALOG, attention="dot")


def test_towers_are_registered():
  assert towers.TOWERS["fm"] is fm_lib.FM and towers.TOWERS["mind"] is mind_lib.MIND
  assert isinstance(towers.build_tower("mind", SCHEMA, CATALOG), towers.Tower)


# --- Both towers in the UMA² model --------------------------------------------------------------



def small_world(num_users: int, num_items: int, ages: int, categories: int):
  """A schema and catalog with one user feature (age) and one item feature (category = id mod)."""
  schema = schema_lib.LogSchema(
    num_users=num_users,
    num_items=num_items,
    user_features={"age": ages},
    item_features={"category": categories},
  )
  catalog = schema_lib.ItemCatalog(features={"category": np.arange(num_items) % categories},
                                   click_count=np.zeros(num_items, np.int64),
                                   exposure_count=np.zeros(num_items, np.int64))
  return schema, catalog

def uma2_model(tower, use_nsdn, share_embeddings=True):
  from uma2_tf.data import batch_keys
  from uma2_tf.tasks import LossConfig, UMA2Task
  from uma2_tf.models.uma2 import UMA2Model

  schema, catalog = small_world(num_users=6, num_items=21, ages=4, categories=5)
  kwargs = {"factor_dim": 8} if tower == "fm" else {"hidden": (16,), "output_dim": 8}
  model = UMA2Model(towers.build_tower(tower, schema, catalog, **kwargs),
                    UMA2Task(LossConfig(use_nsdn=use_nsdn)), share_embeddings=share_embeddings)
  space = np.array([[0, 1, 2, 2], [0, 1, 1, 2]], np.int32)
  batch = {schema_lib.USER_ID: [1, 2], "age": [1, 3],
           schema_lib.HISTORY: [[3, 4, 5, 6, 0], [7, 0, 0, 0, 0]],
           batch_keys.POS_ITEM: [5, 6], batch_keys.NEG_ITEMS: [[7, 8, 9, 0], [10, 11, 12, 13]]}
  batch = {k: tf.constant(v, tf.int64) for k, v in batch.items()}
  batch.update({batch_keys.NEG_SPACE: tf.constant(space),
                batch_keys.NEG_MASK: tf.constant([[1, 1, 1, 0], [1, 1, 1, 1]], tf.float32),
                batch_keys.NEG_RECALLED: tf.constant(space < 2, tf.float32),
                batch_keys.NEG_EXPOSED: tf.constant(space == 0, tf.float32)})
  return model, batch


@pytest.mark.parametrize("tower", ["fm", "mind"])
def test_uma2_model_fits_a_batch_with_either_tower(tower):
  import tf_keras as keras

  matching = ("loss_positive", "loss_space_a", "loss_space_b", "loss_space_c")
  for use_nsdn, share in ((False, True), (True, False)):  # (shared heads: the trainer test)
    model, batch = uma2_model(tower, use_nsdn, share)
    model.compile(optimizer=keras.optimizers.Adam(0.01))
    history = model.fit(tf.data.Dataset.from_tensors(batch).repeat(40), epochs=2,
                        verbose=0).history
    assert sum(history[k][-1] for k in matching) < 0.5 * sum(history[k][0] for k in matching)
    if use_nsdn:
      assert history["loss_er"][-1] < history["loss_er"][0]
      assert model.nsdn.embeddings is model.tower.embeddings or not share
    assert set(model(batch)) == ({"matching_logits", "p1", "p2"} if use_nsdn else
                                 {"matching_logits"})


# --- Multi-interest retrieval ------------------------------------------------------------------


def brute_multi_interest_top_k(user_emb, item_emb, k):
  scores = np.einsum("ukd,nd->ukn", user_emb.astype(np.float64), item_emb.astype(np.float64)).max(1)
  scores[:, 0] = -np.inf
  ids = np.argsort(-scores, axis=1, kind="stable")[:, :k]
  return ids, np.take_along_axis(scores, ids, axis=1)


def test_multi_interest_top_k_merges_interests_by_score():
  # Interest 1 ranks items 1, 2 first; interest 2 item 3. Item 2 is reached by both (scores 2 and
  # 0.5) and is listed once, at its best score.
  users = np.array([[[1.0, 0.0], [0.0, 1.0]]], np.float32)
  items = np.array([[9, 9], [3, 0], [2, 0.5], [0, 2.5], [-1, -1]], np.float32)
  ids, scores = metrics.top_k_items(users, items, k=3)
  np.testing.assert_array_equal(ids, [[1, 3, 2]])
  np.testing.assert_array_equal(scores, [[3.0, 2.5, 2.0]])
  ids, _ = metrics.top_k_items(users, items, k=4)
  np.testing.assert_array_equal(ids, [[1, 3, 2, 4]])  # No duplicates, never the padding item.


def test_multi_interest_top_k_matches_brute_force(monkeypatch):
  rng = np.random.default_rng(0)
  # Small integers: exact float32 scores, so ties are real and must go to the lower id.
  users = rng.integers(-3, 4, size=(7, 3, 4)).astype(np.float32)
  items = rng.integers(-3, 4, size=(50, 4)).astype(np.float32)
  items[0] = 100 * users.sum((0, 1))
  ids, scores = metrics.top_k_items(users, items, k=10)
  want_ids, want_scores = brute_multi_interest_top_k(users, items, 10)
  assert ids.dtype == np.int64 and scores.dtype == np.float32 and ids.shape == (7, 10)
  np.testing.assert_array_equal(ids, want_ids)
  np.testing.assert_array_equal(scores, want_scores)
  assert all(len(set(row)) == 10 for row in ids)
  np.testing.assert_array_equal(metrics.top_k_items(users, items, k=10, batch_size=3)[0], want_ids)
  monkeypatch.setattr(metrics, "MAX_BATCH_SCORES", 3 * 49 * 2)  # 2 users a batch
  np.testing.assert_array_equal(metrics.top_k_items(users, items, k=10)[0], want_ids)
  # One interest is the 2-D path.
  single = metrics.top_k_items(users[:, :1], items, k=10)
  flat = metrics.top_k_items(users[:, 0], items, k=10)
  np.testing.assert_array_equal(single[0], flat[0])
  np.testing.assert_array_equal(single[1], flat[1])


# --- The real trainer and export ---------------------------------------------------------------


@pytest.mark.parametrize("tower", ["fm", "mind"])
def test_fm_and_mind_train_through_the_trainer(tiny_data_dir, tmp_path, tower):
  from uma2_tf import training

  config = training.TrainConfig(dataset="uma2_simulated/tiny", data_dir=tiny_data_dir,
                                output_dir=str(tmp_path), batch_size=256, epochs=1, tower=tower)
  results = training.train(config, verbose=0)
  model = results["model"]
  assert {f"recall@{k}" for k in config.eval_ks} <= set(model)
  for name, value in model.items():
    assert np.isfinite(value) and (name.startswith("avg_popularity@") or 0.0 <= value <= 1.0), name
  assert all(np.isfinite(v) for v in results["propensity_auc"].values())  # NSDN shares the tables.
  assert os.path.exists(os.path.join(str(tmp_path), "checkpoints", "final.index"))


def test_fm_exports_as_a_single_vector_tower(tmp_path):
  # The multi-interest check calls the tower once: a single-vector tower still exports, and its
  # query model answers like the tower. (ScaNN needs more than 3 items: a 60-item catalog.)
  schema, catalog = small_world(num_users=3, num_items=60, ages=3, categories=3)
  tower = fm_lib.FM(schema, catalog, factor_dim=3)
  version_dir = export.write_version(export.ExportConfig(export_dir=str(tmp_path)), tower, schema,
                                     max_history=3)
  assert export.read_metadata(version_dir)["embedding_dim"] == 4
  query = tf.saved_model.load(os.path.join(version_dir, export.QUERY_MODEL))
  query = query.signatures["serving_default"]
  np.testing.assert_allclose(query(**features())["user_embedding"].numpy(),
                             tower.user_embedding(features()).numpy(), atol=1e-6)

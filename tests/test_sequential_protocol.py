"""The sequential protocol (ComiRec / REMI): the 80/10/10 user split, each held-out user's history
and targets checked against the raw records, NDCG by hand, the routing-collapse diagnostic, and a
run trained and evaluated under it."""
import uma2_tf  # noqa: F401

import json
import os

import numpy as np
import pytest
import tensorflow as tf

from uma2_tf import metrics, routing_metrics, sequential_evaluation, training
from uma2_tf.data import reading, samplers, splits
from uma2_tf.data import schema as schema_lib
from uma2_tf.sources import registry
from uma2_tf.tasks import LossConfig
from uma2_tf.tasks.remi import RemiConfig

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_ndcg_by_hand():
  retrieved = np.array([[5, 1, 7, 2], [3, 4, 8, 9]])
  truth = [np.array([1, 2, 6]), np.array([9])]
  got = metrics.per_user_retrieval_metrics(retrieved, truth, (2, 4), ndcg=True)
  # User 0: hits at positions 1 and 3; IDCG@4 of min(3, 4) = 3 hits, IDCG@2 of 2 hits.
  d = 1 / np.log2(np.arange(4) + 2)
  np.testing.assert_allclose(got["ndcg@2"], [d[1] / (d[0] + d[1]), 0.0])
  np.testing.assert_allclose(got["ndcg@4"], [(d[1] + d[3]) / d[:3].sum(), d[3] / d[0]])
  assert "ndcg@2" not in metrics.per_user_retrieval_metrics(retrieved, truth, (2,))


def test_users_split_80_10_10_disjoint_and_fixed(tiny_dataset):
  holdout = splits.user_holdout(tiny_dataset)
  parts = holdout.users
  everyone = np.concatenate(list(parts.values()))
  assert len(np.unique(everyone)) == len(everyone)  # disjoint
  assert len(parts["validation"]) == int(len(everyone) * 0.1)
  assert len(parts["test"]) == int(len(everyone) * 0.1)
  again = splits.user_holdout(tiny_dataset).users
  assert all(np.array_equal(parts[k], again[k]) for k in parts)
  assert holdout.sources("test") == (("train", "test"), parts["test"])


def test_membership_of_ids_by_hand():
  values = tf.constant([3, 7, 1, 9, 12, 0], tf.int64)
  np.testing.assert_array_equal(splits.is_member(values, np.array([1, 7, 12], np.int64)),
                                [False, True, True, False, True, False])
  np.testing.assert_array_equal(splits.is_member(values, np.zeros(0, np.int64)), [False] * 6)
  keep = splits.users_keep(np.array([0, 9], np.int64))
  np.testing.assert_array_equal(keep({schema_lib.USER_ID: values}),
                                [False, False, False, True, False, True])


def test_history_and_targets_are_the_users_clicks_cut_at_80_percent(tiny_dataset):
  test_users = splits.user_holdout(tiny_dataset).users["test"]
  evaluator = sequential_evaluation.SequentialEvaluator(
      tiny_dataset, ks=(5, 10), max_history=50, splits=("train", "test"), users=test_users)
  # Every test user's clicks by hand, in (day, request id, position) order.
  events = {}
  for split in ("train", "test"):
    for batch in reading.read_requests(tiny_dataset.split_files[split], tiny_dataset.schema, 512):
      rows = {k: (v.to_list() if isinstance(v, tf.RaggedTensor) else v.numpy())
              for k, v in batch.items()}
      for i, user in enumerate(rows[schema_lib.USER_ID]):
        if user not in set(test_users.tolist()):
          continue
        for p, (item, c) in enumerate(zip(rows["exposed"][i], rows["clicked"][i])):
          if c:
            events.setdefault(int(user), []).append(
                (int(rows["day"][i]), int(rows["request_id"][i]), p, int(item)))
  expected_users = [u for u in sorted(events) if 1 <= int(len(events[u]) * 0.8) < len(events[u])]
  assert evaluator.users[schema_lib.USER_ID].tolist() == expected_users
  for row, user in enumerate(expected_users):
    sequence = [item for *_, item in sorted(events[user])]
    cut = int(len(sequence) * 0.8)
    history = evaluator.users[schema_lib.HISTORY][row]
    real = history[history != schema_lib.PAD_ID].tolist()
    assert real == sequence[:cut][-50:]
    assert evaluator.truth[row].tolist() == sorted(set(sequence[cut:]))


class _StubTower:
  """A tower whose routing matrix is given."""

  def __init__(self, routing):
    self.routing = routing

  def interest_routing(self, batch):
    return None, tf.constant(self.routing[:len(batch[schema_lib.HISTORY])])


def test_routing_collapse_by_hand():
  history = np.array([[3, 4, 5, 0], [6, 7, 0, 0]])
  routing = np.array([[[0.5, 0.25, 0.25, 0.0], [1.0, 0.0, 0.0, 0.0]],
                      [[0.5, 0.5, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0]]], np.float32)
  got = routing_metrics.routing_collapse(_StubTower(routing), {schema_lib.HISTORY: history})
  h1 = -(0.5 * np.log(0.5) + 2 * 0.25 * np.log(0.25))
  # Interest 2 of user 2 routes nothing (an unused MIND interest): only user 1 counts for it.
  assert got["users"] == 2
  np.testing.assert_allclose(got["max_weight"], [(0.5 + 0.5) / 2, 1.0], atol=1e-6)
  np.testing.assert_allclose(got["entropy"], [(h1 + np.log(2)) / 2, 0.0], atol=1e-6)
  # The ceiling over the same users as each interest's mean.
  np.testing.assert_allclose(got["uniform_entropy"], [(np.log(3) + np.log(2)) / 2, np.log(3)],
                             atol=1e-6)
  table = routing_metrics.routing_markdown(got)
  assert f"| 2 | 1.0000 | 0.0000 | {np.log(3):.4f} |" in table
  assert routing_metrics.routing_collapse(_NoRouting(), {schema_lib.HISTORY: history}) is None


class _NoRouting:
  def interest_routing(self, batch):
    return None, None


def test_protocol_is_validated():
  with pytest.raises(ValueError, match="protocol must be one of"):
    training.TrainConfig(protocol="weekly")
  with pytest.raises(ValueError, match="--validation=users:0.1 would hold out"):
    training.TrainConfig(protocol="sequential", validation="users:0.1")


def test_a_run_under_the_sequential_protocol(tiny_data_dir, tmp_path):
  config = training.TrainConfig(
      dataset="uma2_simulated/tiny", data_dir=tiny_data_dir, output_dir=str(tmp_path),
      tower="mind", num_interests=2, protocol="sequential", epochs=2, batch_size=128,
      early_stopping_patience=1, eval_ks=(20, 50), monitor="recall@50",
      loss=LossConfig(use_nsdn=False),
      sampling=samplers.SamplingConfig(strategy="sampled", sampled_negatives=64),
      remi=RemiConfig(ihn_beta=1.0, rr_lambda=100.0))
  results = training.train(config, verbose=0)
  assert {"recall@20", "ndcg@50", "hitrate@50"} <= set(results["model"])
  assert len(results["routing"]["max_weight"]) == 2
  history = np.genfromtxt(tmp_path / "history.csv", delimiter=",", names=True)
  assert {"val_ndcg50", "val_routing_entropy", "val_routing_max_weight"} <= set(
      history.dtype.names)
  # Its last epoch's collapse is the validation users' diagnostic, averaged over the interests.
  assert 0 < history["val_routing_max_weight"][-1] <= 1
  on_disk = json.loads((tmp_path / "metrics.json").read_text())
  assert on_disk["routing"] == results["routing"]
  # Trained on the training users' records only: the positives counted by hand.
  dataset = registry.load("uma2_simulated/tiny", tiny_data_dir)
  train_users = set(splits.user_holdout(dataset).users["train"].tolist())
  clicks = 0
  for batch in reading.read_requests(dataset.split_files["train"], dataset.schema, 512):
    users = batch[schema_lib.USER_ID].numpy()
    per_request = batch["clicked"].to_list()
    clicks += sum(sum(c) for u, c in zip(users, per_request) if int(u) in train_users)
  assert results["run"]["train_positives"] == clicks
  per_user = np.load(tmp_path / "per_user.npz")
  test_users = splits.user_holdout(dataset).users["test"]
  assert set(per_user["user_id"].tolist()) <= set(test_users.tolist())


def test_a_sequence_dataset_trains_on_its_own_user_splits(tmp_path):
  import tensorflow_datasets as tfds

  data_dir = str(tmp_path / "tfds")
  registry.builder("taobao/tiny", data_dir).download_and_prepare(
      download_config=tfds.download.DownloadConfig(manual_dir=os.path.join(
          REPO, "data", "sequences", "taobao")))
  dataset = registry.load("taobao/tiny", data_dir)
  assert splits.user_holdout(dataset).sources("test") == (("test",), None)
  config = training.TrainConfig(
      dataset="taobao/tiny", data_dir=data_dir, output_dir=str(tmp_path / "run"),
      tower="comirec_sa", num_interests=2, protocol="sequential", epochs=2, batch_size=16,
      early_stopping_patience=1, eval_ks=(2, 5), monitor="recall@5",
      loss=LossConfig(use_nsdn=False),
      sampling=samplers.SamplingConfig(strategy="sampled", sampled_negatives=4, max_history=4),
      remi=RemiConfig(ihn_beta=1.0, rr_lambda=100.0))
  results = training.train(config, verbose=0)
  # The test users are the test split's: every one with 2 or more clicks is evaluated.
  sequences = {}
  for batch in reading.read_requests(dataset.split_files["test"], dataset.schema, 64):
    for user in batch[schema_lib.USER_ID].numpy():
      sequences[int(user)] = sequences.get(int(user), 0) + 1
  per_user = np.load(tmp_path / "run" / "per_user.npz")
  assert sorted(per_user["user_id"].tolist()) == sorted(u for u, n in sequences.items() if n >= 2)
  assert 0.0 <= results["model"]["ndcg@5"] <= 1.0

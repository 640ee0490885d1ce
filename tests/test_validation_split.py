"""The validation split: carved from the training days, and the only thing model selection sees."""
import uma2_tf  # noqa: F401

import dataclasses
import os

import numpy as np
import pytest
import tensorflow as tf

from uma2_tf.data import reading, splits
from uma2_tf.data import schema as schema_lib


def records(dataset, split, keep=None):
  """(day, request_id, user_id) arrays of a split's records that `keep` selects."""
  rows = []
  for b in reading.read_requests(dataset.split_files[split], dataset.schema, 4096, keep=keep):
    rows.append(np.stack([b[schema_lib.DAY].numpy(), b[schema_lib.REQUEST_ID].numpy(),
                          b[schema_lib.USER_ID].numpy()], 1))
  return np.concatenate(rows) if rows else np.zeros((0, 3), np.int64)


def test_parse():
  assert splits.parse("last_day") == ("last_day", 0.0)
  assert splits.parse("none") == ("none", 0.0)
  assert splits.parse("users:0.1") == ("users", 0.1)
  for bad in ("users:0", "users:1", "users:x", "users", "test", ""):
    with pytest.raises(ValueError, match="validation must be"):
      splits.parse(bad)


def test_last_day_holds_out_the_last_training_day_and_nothing_else(tiny_dataset):
  everything = records(tiny_dataset, "train")
  holdout = splits.holdout(tiny_dataset, "last_day")
  last = everything[:, 0].max()
  assert holdout.day == last < records(tiny_dataset, "test")[:, 0].min()
  train = records(tiny_dataset, "train", keep=holdout.keep_train)
  validation = records(tiny_dataset, "train", keep=holdout.keep_validation)
  assert (train[:, 0] < last).all() and (validation[:, 0] == last).all()
  assert len(train) + len(validation) == len(everything)
  assert (validation[:, 0] == last).sum() == (everything[:, 0] == last).sum()


def test_users_share_holds_out_each_chosen_users_last_request(tiny_dataset):
  everything = records(tiny_dataset, "train")
  holdout = splits.holdout(tiny_dataset, "users:0.25", seed=3)
  validation = records(tiny_dataset, "train", keep=holdout.keep_validation)
  users = np.unique(everything[:, 2])
  assert len(validation) == len(np.unique(validation[:, 2])) == round(0.25 * len(users))
  for day, request_id, user in validation:
    own = everything[everything[:, 2] == user]
    latest = own[own[:, 0] == own[:, 0].max()]
    assert (day, request_id) == (own[:, 0].max(), latest[:, 1].max())
  train = records(tiny_dataset, "train", keep=holdout.keep_train)
  assert len(train) + len(validation) == len(everything)
  assert not set(train[:, 1]) & set(validation[:, 1])
  # The same seed, the same users; another seed, others.
  assert np.array_equal(splits.holdout(tiny_dataset, "users:0.25", seed=3).request_ids,
                        holdout.request_ids)
  assert not np.array_equal(splits.holdout(tiny_dataset, "users:0.25", seed=4).request_ids,
                            holdout.request_ids)


def _flip_test_clicks(dataset, directory):
  """The test split rewritten with every exposed item's click flipped: other test-day truth."""
  files = []
  for i, path in enumerate(dataset.split_files["test"]):
    out = os.path.join(directory, f"test-{i}.tfrecord")
    with tf.io.TFRecordWriter(out) as writer:
      for serialized in tf.data.TFRecordDataset(path):
        example = tf.train.Example.FromString(serialized.numpy())
        clicked = example.features.feature[schema_lib.CLICKED].int64_list.value
        flipped = [1 - c for c in clicked]
        del clicked[:]
        clicked.extend(flipped)
        writer.write(example.SerializeToString())
    files.append(out)
  return dataclasses.replace(dataset, split_files={**dataset.split_files, "test": tuple(files)})


def test_selection_never_sees_the_test_day(tiny_dataset, tiny_data_dir, tmp_path, monkeypatch):
  """The test day's clicks changed: the epochs run, the per-epoch validation metrics and the final
  weights are the same; only the test metrics differ."""
  from uma2_tf import training

  config = training.TrainConfig(dataset="uma2_simulated/tiny", data_dir=tiny_data_dir,
                                batch_size=256, epochs=3, early_stopping_patience=1)
  flipped = _flip_test_clicks(tiny_dataset, str(tmp_path))
  runs = {}
  for name, dataset in (("real", tiny_dataset), ("flipped", flipped)):
    monkeypatch.setattr(training.registry, "load", lambda *args, dataset=dataset: dataset)
    out = str(tmp_path / name)
    results = training.train(dataclasses.replace(config, output_dir=out), verbose=0)
    with open(os.path.join(out, "history.csv")) as f:
      history = f.read()
    runs[name] = results, history
  (real, real_history), (other, other_history) = runs["real"], runs["flipped"]
  assert "val_recall@100" in real_history
  assert real_history == other_history
  assert real["run"]["epochs_run"] == other["run"]["epochs_run"]
  assert real["run"]["weights_sha256"] == other["run"]["weights_sha256"]
  assert real["model"]["recall@100"] != other["model"]["recall@100"]

"""Exports of own logs speak the logs' ids: raw user ids, feature values and history items in,
raw item ids out, unknown ones answered and counted; simulated worlds keep their dense ids."""
import uma2_tf  # noqa: F401

import json
import os
import re
import shutil
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import tensorflow as tf

from uma2_tf import export, raw_ids, training
from uma2_tf.data import schema as schema_lib
from uma2_tf.serving import loader
from uma2_tf.serving.parsing import parse_request
from uma2_tf.serving.servable import RequestError, load_servable
from uma2_tf.sources import registry

FIXTURE = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "data",
                       "request_logs", "one_row")
K = 10


def test_ids_are_int64_only_when_every_one_is_an_int64_literal():
  assert raw_ids._as_int64(np.array(["7", "-1", "12"])).tolist() == [7, -1, 12]
  for not_all_ints in (["7", "v1"], ["007"], ["1.0"], [str(2**63)], [" 7"]):
    assert raw_ids._as_int64(np.array(not_all_ints)) is None, not_all_ints
  # History padding is no item's id: 0, else -1, else the smallest int64.
  assert raw_ids._unused_int(np.array([1, 2])) == 0
  assert raw_ids._unused_int(np.array([0, 5])) == -1
  assert raw_ids._unused_int(np.array([0, -1])) == np.iinfo(np.int64).min


def test_lookup_maps_unknown_ids_to_zero_and_counts_them():
  vocabulary = raw_ids.IdVocabulary(raw_ids.RAW, np.array(["u1", "u2"]),
                                    np.array(["a", "b", "c"]), "",
                                    {"city": (np.array(["paris", "rome"]), "")})
  lookup = raw_ids.IdLookup(vocabulary)
  dense, oov_ids = lookup.to_dense({
      schema_lib.USER_ID: tf.constant(["u2", "new"]), "city": tf.constant(["rome", "oslo"]),
      schema_lib.HISTORY: tf.constant([["c", "zz", "a", ""], ["b", "", "", ""]])})
  assert dense[schema_lib.USER_ID].numpy().tolist() == [2, 0]
  assert dense["city"].numpy().tolist() == [2, 0]  # An unknown value is the missing one: 0.
  assert dense[schema_lib.HISTORY].numpy().tolist() == [[3, 0, 1, 0], [2, 0, 0, 0]]
  assert oov_ids.numpy().tolist() == [1, 1]  # "zz"; the new user. Padding is not unknown.
  assert lookup.to_raw_items(tf.constant([[3, 1]])).numpy().tolist() == [[b"c", b"a"]]


def _integer_ids(manual_dir):
  """The fixture with integer ids: user `u034` -> 1034, item `v78` -> 78 (so item 0 exists and
  the history padding must be another value)."""
  requests = pd.read_csv(os.path.join(manual_dir, "requests.csv"), dtype=str)
  requests["user_id"] = requests["user_id"].map(lambda u: str(1000 + int(u[1:])))
  for column in ("exposed", "recalled"):
    requests[column] = requests[column].map(lambda cell: re.sub(r"\bv(\d+)", r"\1", cell))
  requests.to_csv(os.path.join(manual_dir, "requests.csv"), index=False)
  items = pd.read_csv(os.path.join(manual_dir, "items.csv"), dtype=str)
  items["item_id"] = items["item_id"].str[1:]
  items.to_csv(os.path.join(manual_dir, "items.csv"), index=False)


@pytest.fixture(scope="module", params=["string", "integer"])
def logs_export(request, tmp_path_factory):
  """(export version dir, the trained model, the dataset) of one epoch on the own-logs fixture,
  with its string ids or turned into integer ones."""
  root = tmp_path_factory.mktemp(f"raw_{request.param}")
  manual_dir, data_dir = str(root / "logs"), str(root / "tfds")
  shutil.copytree(FIXTURE, manual_dir)
  if request.param == "integer":
    _integer_ids(manual_dir)
  name = f"request_logs/{request.param}_ids"
  prepared = subprocess.run([sys.executable, "-m", "pipelines.prepare", f"--dataset={name}",
                             f"--manual_dir={manual_dir}", f"--data_dir={data_dir}"],
                            capture_output=True, text=True, timeout=300)
  assert prepared.returncode == 0, prepared.stderr[-3000:]
  config = training.TrainConfig(dataset=name, data_dir=data_dir, output_dir=str(root / "run"),
                                epochs=1, batch_size=64, eval_ks=(5, 10), monitor="recall@10",
                                early_stopping_patience=0, evaluate_each_epoch=False,
                                validation="none")
  training.train(config, verbose=0)
  version_dir = export.export_run(export.ExportConfig(run_dir=config.output_dir,
                                                      export_dir=str(root / "exports"), max_k=K))
  _, dataset, model = export.load_trained_model(config.output_dir)
  raw_ids.zero_unknown_user_rows(model)  # As the export does.
  return request.param, version_dir, model, registry.load(name, data_dir)


def _by_hand(model, dataset, users, histories, features):
  """Top-K raw item ids through the model's tower on dense ids translated with ids.npz."""
  with np.load(os.path.join(dataset.directory, "ids.npz")) as z:
    raw = {key: z[key].tolist() for key in z.files}
  dense_user = {u: i for i, u in enumerate(raw["user_raw_id"]) if i}
  dense_item = {v: i for i, v in enumerate(raw["item_raw_id"]) if i}
  length = 50
  history = np.zeros([len(users), length], np.int64)
  for row, items in enumerate(histories):
    known = [dense_item[str(v)] for v in items if str(v) in dense_item]
    history[row, :len(known)] = known
  inputs = {schema_lib.USER_ID: np.array([dense_user.get(str(u), 0) for u in users], np.int64),
            schema_lib.HISTORY: history}
  for name in dataset.schema.user_feature_names:
    values = raw[f"user_feature/{name}"]
    inputs[name] = np.array([values.index(str(f[name])) if name in f and str(f[name]) in values
                             else 0 for f in features], np.int64)
  tower = model.tower
  users_emb = tower.user_embedding({k: tf.constant(v) for k, v in inputs.items()}).numpy()
  items_emb = export.item_embeddings(tower, dataset.schema.num_items)[1:]
  top = np.argsort(-(users_emb @ items_emb.T), axis=1)[:, :K] + 1
  return [[raw["item_raw_id"][i] for i in row] for row in top]


def test_raw_ids_in_and_out_match_the_dense_path_by_hand(logs_export):
  kind, version_dir, model, dataset = logs_export
  metadata = loader.read_metadata(version_dir)
  dtype = "string" if kind == "string" else "int64"
  assert metadata["ids"]["space"] == "raw" and metadata["ids"]["dtype"] == dtype
  assert metadata["ids"]["history_padding"] == ("" if kind == "string" else -1)  # Item 0 exists.
  servable = load_servable(version_dir, loader.BRUTE_FORCE_MODEL)

  def ident(user_or_item, number):
    return f"{user_or_item}{number:03d}" if user_or_item == "u" else f"v{number}"

  def raw(user_or_item, number):
    if kind == "string":
      return ident(user_or_item, number)
    return 1000 + number if user_or_item == "u" else number

  users = [raw("u", 34), raw("u", 12), "new" if kind == "string" else 999_999, raw("u", 3)]
  histories = [[raw("v", 78), raw("v", 22)], [], [raw("v", 5), "zz" if kind == "string" else -7],
               [raw("v", 0), raw("v", 41)]]
  features = [{"age": 40, "city": "paris"}, {}, {"city": "tokyo"}, {"age": 20}]
  instances = [{"user_id": u, "history": h, **f} for u, h, f in zip(users, histories, features)]
  body = json.dumps({"instances": instances, "k": K})
  parsed, k, _ = parse_request(body.encode(), servable, max_batch=8)
  ids, _, oov_ids = servable.top_k(parsed, k)
  want = _by_hand(model, dataset, users, histories, features)
  want = want if kind == "string" else [[int(v) for v in row] for row in want]
  assert ids == want
  assert oov_ids.tolist() == [0, 0, 2, 0]  # The new user and its unknown history item.
  # A string where integers are expected (or the reverse) is still a client's mistake.
  wrong = '{"instances": [{"user_id": %s}]}' % ("5" if kind == "string" else '"u005"')
  with pytest.raises(RequestError, match="instances\\[0\\].user_id: expected"):
    parse_request(wrong.encode(), servable, max_batch=8)


def test_simulated_exports_keep_dense_ids_and_answer_unknown_ones(tiny_data_dir, tmp_path):
  config = training.TrainConfig(dataset="uma2_simulated/tiny", data_dir=tiny_data_dir,
                                output_dir=str(tmp_path / "run"), epochs=1, batch_size=256,
                                early_stopping_patience=0, evaluate_each_epoch=False)
  training.train(config, verbose=0)
  version_dir = export.export_run(export.ExportConfig(run_dir=config.output_dir,
                                                      export_dir=str(tmp_path / "exports"),
                                                      max_k=K))
  metadata = loader.read_metadata(version_dir)
  assert metadata["ids"]["space"] == "dense" and metadata["inputs"]["user_id"]["dtype"] == "int64"
  servable = load_servable(version_dir, loader.BRUTE_FORCE_MODEL)
  body = ('{"inputs": {"user_id": [5, 100000], "age": [2, 99], "history": [[3, 4], [3, 10**9]]},'
          ' "k": 10}').replace("10**9", str(10**9))
  parsed, k, _ = parse_request(body.encode(), servable, max_batch=8)
  ids, _, oov_ids = servable.top_k(parsed, k)
  assert oov_ids.tolist() == [0, 2] and all(len(row) == K for row in ids)
  assert all(1 <= i < metadata["num_items"] + 1 for row in ids for i in row)

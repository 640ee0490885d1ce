"""`make serve`: the loader in fresh processes, and the REST server as a real process on loopback.

The exports are written by `uma2_tf.export.write_version` from a tower of small random tables (50
users, 200 items, d=8, one user feature `age`, history length 4), so the expected answers are plain
numpy: the server must return exactly the brute-force top-k of these tables.
"""
from __future__ import annotations

import uma2_tf  # noqa: F401  (before TensorFlow: selects tf_keras)

import contextlib
import http.client
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
import tensorflow as tf

from uma2_tf.serving import loader
from uma2_tf.serving.servable import Servable

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NUM_USERS, NUM_ITEMS, AGES, DIM, H = 50, 200, 5, 8, 4
MAX_K = 150
MODEL = "uma2"
# History positions weigh differently, so a history padded on the wrong side scores differently.
POSITION_WEIGHTS = np.array([1.0, 2.0, 3.0, 4.0], np.float32)


class TableTower(tf.Module):
  """user_id, age, history -> U[user] + A[age] + sum_j w_j I[history_j]; items -> I[item]."""

  def __init__(self, seed: int):
    super().__init__()
    self.tables = random_tables(seed)
    self.users, self.ages, self.items = (tf.Variable(t) for t in self.tables)

  def user_embedding(self, features):
    history = tf.gather(self.items, features["history"]) * POSITION_WEIGHTS[None, :, None]
    return (tf.gather(self.users, features["user_id"]) + tf.gather(self.ages, features["age"])
            + tf.reduce_sum(history, axis=1))

  def item_embedding(self, ids):
    return tf.gather(self.items, ids)


def random_tables(seed: int):
  rng = np.random.default_rng(seed)
  users = rng.standard_normal((NUM_USERS + 1, DIM)).astype(np.float32)
  ages = rng.standard_normal((AGES, DIM)).astype(np.float32)
  items = rng.standard_normal((NUM_ITEMS + 1, DIM)).astype(np.float32)
  items[0] = 0  # The padding item.
  return users, ages, items


def pad_history(history) -> list[int]:
  """The documented rule: zeros dropped, newest H kept, right-padded with zeros."""
  items = [i for i in history if i][-H:]
  return items + [0] * (H - len(items))


def expected_top_k(tables, users, ages, histories, k):
  """numpy brute force over items 1..NUM_ITEMS: (ids [B, k], scores [B, k])."""
  u, a, items = tables
  padded = np.array([pad_history(h) for h in histories], np.int64)
  queries = u[users] + a[ages] + (items[padded] * POSITION_WEIGHTS[None, :, None]).sum(axis=1)
  scores = queries @ items[1:].T
  order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
  return order + 1, np.take_along_axis(scores, order, axis=1)


def write_export(export_dir: str, seed: int, version: int) -> str:
  from uma2_tf import export
  from uma2_tf.data import schema as schema_lib

  schema = schema_lib.LogSchema(num_users=NUM_USERS + 1, num_items=NUM_ITEMS + 1,
                                user_features={"age": AGES}, item_features={})
  # Every leaf searched: the ScaNN index then finds all k for every k <= MAX_K.
  config = export.ExportConfig(export_dir=export_dir, version=version, model_name=MODEL,
                               max_k=MAX_K, scann_leaves=10, scann_leaves_to_search=10)
  return export.write_version(config, TableTower(seed), schema, max_history=H)


@pytest.fixture(scope="module")
def export_dir(tmp_path_factory):
  path = str(tmp_path_factory.mktemp("exports"))
  write_export(path, seed=1, version=1)
  return path


# --- loader ------------------------------------------------------------------------------------

FRESH_LOAD = r"""
import json, sys
import numpy as np
import tensorflow as tf
version_dir, mode = sys.argv[1:]
features = dict(user_id=tf.constant([1, 7, 50], tf.int64), age=tf.constant([0, 3, 4], tf.int64),
                history=tf.constant([[5, 9, 0, 0], [0, 0, 0, 0], [1, 2, 3, 200]], tf.int64))
out = {}
if mode == "without_loader":
  try:
    tf.saved_model.load(version_dir + "/retrieval_model")
    out["error"] = None
  except Exception as e:
    out["error"] = str(e)
elif mode == "no_scann":
  sys.modules["scann"] = None  # As if scann were not installed.
  from uma2_tf.serving import loader
  try:
    loader.load_model(version_dir)
  except ImportError as e:
    out["error"] = str(e)
  predict, _ = loader.load_model(version_dir, "brute_force_model")
  out["brute_ids"] = predict(k=tf.constant(10), **features)["item_ids"].numpy().tolist()
else:
  from uma2_tf.serving import loader
  predict, metadata = loader.load_model(version_dir, "brute_force_model")
  out["version"] = metadata["version"]
  result = predict(k=tf.constant(100), **features)
  out["brute_ids"] = result["item_ids"].numpy().tolist()
  out["brute_scores"] = result["scores"].numpy().tolist()
  out["scann_imported_by_brute_force"] = "scann" in sys.modules
  predict, _ = loader.load_model(version_dir, "retrieval_model")
  out["scann_ids"] = predict(k=tf.constant(100), **features)["item_ids"].numpy().tolist()
print("RESULT " + json.dumps(out))
"""


def fresh_load(version_dir: str, mode: str) -> dict:
  result = subprocess.run([sys.executable, "-c", FRESH_LOAD, version_dir, mode],
                          capture_output=True, text=True, timeout=300, cwd=REPO)
  assert result.returncode == 0, result.stderr[-3000:]
  line = [x for x in result.stdout.splitlines() if x.startswith("RESULT ")][-1]
  return json.loads(line[len("RESULT "):])


FRESH_FEATURES = ([1, 7, 50], [0, 3, 4], [[5, 9], [], [1, 2, 3, 200]])


def test_scann_import_is_what_makes_the_retrieval_model_loadable(export_dir):
  version_dir = os.path.join(export_dir, "1")
  assert "Op type not registered 'Scann" in fresh_load(version_dir, "without_loader")["error"]

  out = fresh_load(version_dir, "with_loader")
  assert out["version"] == 1
  assert not out["scann_imported_by_brute_force"]  # The brute-force model needs stock TF only.
  ids, scores = expected_top_k(random_tables(1), *FRESH_FEATURES, k=100)
  np.testing.assert_array_equal(out["brute_ids"], ids)
  np.testing.assert_allclose(out["brute_scores"], scores, rtol=1e-4, atol=1e-4)
  recall = np.mean([len(set(a) & set(b)) / 100 for a, b in zip(out["scann_ids"], ids)])
  assert recall >= 0.95, recall


def test_missing_scann_is_one_clear_error_and_brute_force_still_loads(export_dir):
  out = fresh_load(os.path.join(export_dir, "1"), "no_scann")
  assert "pip install 'scann[tf]==1.4.2'" in out["error"]
  assert "brute_force_model" in out["error"] and "stock TensorFlow" in out["error"]
  ids, _ = expected_top_k(random_tables(1), *FRESH_FEATURES, k=10)
  np.testing.assert_array_equal(out["brute_ids"], ids)


def test_versions_are_positive_integer_dirs(tmp_path):
  for name in ("1", "3", "10", "0", "abc", ".tmp-11-123"):
    (tmp_path / name).mkdir()
  (tmp_path / "12").write_text("a file, not a version")
  assert loader.list_versions(str(tmp_path)) == [1, 3, 10]
  assert loader.latest_version(str(tmp_path)) == os.path.join(str(tmp_path), "10")
  with pytest.raises(FileNotFoundError, match="holds no version"):
    loader.latest_version(str(tmp_path / "abc"))
  with pytest.raises(FileNotFoundError, match="does not exist"):
    loader.latest_version(str(tmp_path / "missing"))
  with pytest.raises(FileNotFoundError, match="no brute_force_model"):
    loader.load_model(str(tmp_path / "1"), "brute_force_model")
  with pytest.raises(ValueError, match="unknown variant"):
    loader.load_model(str(tmp_path / "1"), "scann")


def test_slots_scann_could_not_fill_are_dropped():
  # In a batch, ScaNN pads the rows of users whose searched partitions hold fewer than k items
  # with NaN scores and a real item id; those must not reach a client.
  def signature(**_):
    return {"item_ids": tf.constant([[4, 2, 1], [3, 1, 1]], tf.int64),
            "scores": tf.constant([[3.0, 2.0, 1.0], [5.0, np.nan, np.nan]])}

  servable = Servable(version=1, version_dir="", variant="retrieval_model",
                      signature=signature, metadata={}, scalar_inputs={}, list_inputs={},
                      num_items=3, max_k=3)
  ids, scores, oov_ids = servable.top_k({}, 3)
  assert (ids, scores) == ([[4, 2, 1], [3]], [[3.0, 2.0, 1.0], [5.0]])
  assert oov_ids.tolist() == [0, 0]  # An export without `oov_ids` (before raw ids) knows them all.


# --- the server as a process -------------------------------------------------------------------

def free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def call(port: int, method: str, path: str, body=None, connection=None):
  """(status, X-Model-Version, parsed JSON body); `body` is JSON-encoded unless bytes."""
  own = connection is None
  connection = connection or http.client.HTTPConnection("127.0.0.1", port, timeout=60)
  try:
    data = body if isinstance(body, bytes) or body is None else json.dumps(body).encode()
    connection.request(method, path, data, {"Content-Type": "application/json"})
    response = connection.getresponse()
    payload = response.read()
    return response.status, response.getheader("X-Model-Version"), json.loads(payload)
  finally:
    if own:
      connection.close()


def predict(port: int, body, connection=None):
  return call(port, "POST", f"/v1/models/{MODEL}:predict", body, connection)


@contextlib.contextmanager
def serving(export_dir: str, variant: str, log_path: str):
  with server_process(export_dir, variant, log_path) as (port, _):
    yield port


@contextlib.contextmanager
def server_process(export_dir: str, variant: str, log_path: str, *flags: str):
  """(port, process) of `pipelines.serve` on `export_dir`, once it answers; stopped on exit."""
  port = free_port()
  with open(log_path, "w") as log:
    process = subprocess.Popen(
        [sys.executable, "-m", "pipelines.serve", f"--export_dir={export_dir}",
         f"--model_name={MODEL}", f"--variant={variant}", f"--port={port}", "--poll_seconds=0.3",
         *flags], cwd=REPO, stdout=log, stderr=subprocess.STDOUT,
        env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
      deadline = time.time() + 180
      while True:
        if process.poll() is not None:
          raise AssertionError(f"server exited with {process.returncode}:\n"
                               f"{open(log_path).read()[-3000:]}")
        try:
          if call(port, "GET", f"/v1/models/{MODEL}")[0] == 200:
            break
        except OSError:
          pass
        assert time.time() < deadline, open(log_path).read()[-3000:]
        time.sleep(0.3)
      yield port, process
    finally:
      process.terminate()
      try:
        process.wait(timeout=30)
      except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


@pytest.fixture(scope="module")
def brute_force_server(export_dir, tmp_path_factory):
  log = str(tmp_path_factory.mktemp("logs") / "brute_force.log")
  with serving(export_dir, "brute_force_model", log) as port:
    yield port


def test_predict_answers_the_exact_top_k_in_both_formats(brute_force_server):
  port = brute_force_server
  users, ages = [3, 50, 1], [2, 0, 4]
  # Shorter than H, with padding zeros sent by the client, and longer than H (newest 4 kept).
  histories = [[7], [0, 0, 12, 180], [1, 2, 3, 4, 5, 6]]
  instances = [{"user_id": u, "age": a, "history": h} for u, a, h in zip(users, ages, histories)]
  ids, scores = expected_top_k(random_tables(1), users, ages, histories, k=20)

  status, version, out = predict(port, {"instances": instances, "k": 20})
  assert (status, version) == (200, "1"), out
  assert [p["item_ids"] for p in out["predictions"]] == ids.tolist()
  np.testing.assert_allclose([p["scores"] for p in out["predictions"]], scores, rtol=1e-4,
                             atol=1e-4)

  status, _, out = predict(port, {"inputs": {"user_id": users, "age": ages, "history": histories},
                                  "k": 20})
  assert status == 200, out
  assert out["outputs"]["item_ids"] == ids.tolist()
  # k may also sit in `inputs`, as TF Serving would take a scalar input.
  status, _, out = predict(port, {"inputs": {"user_id": users, "age": ages, "history": histories,
                                             "k": 20}})
  assert status == 200 and out["outputs"]["item_ids"] == ids.tolist()

  # Defaults: age and history left out are 0 / empty; k is min(100, max_k).
  status, _, out = predict(port, {"instances": [{"user_id": 9}]})
  assert status == 200, out
  ids, _ = expected_top_k(random_tables(1), [9], [0], [[]], k=100)
  assert out["predictions"][0]["item_ids"] == ids[0].tolist()
  # The largest k the export allows, and the largest batch.
  status, _, out = predict(port, {"instances": [{"user_id": 1 + i % NUM_USERS} for i in range(256)],
                                  "k": MAX_K})
  assert status == 200 and len(out["predictions"]) == 256
  assert all(len(p["item_ids"]) == MAX_K for p in out["predictions"])


def test_status_metadata_and_unknown_model(brute_force_server):
  port = brute_force_server
  status, version, out = call(port, "GET", f"/v1/models/{MODEL}")
  assert (status, version) == (200, "1")
  assert out == {"model_version_status": [{"version": "1", "state": "AVAILABLE",
                                           "status": {"error_code": "OK", "error_message": ""}}]}

  status, _, out = call(port, "GET", f"/v1/models/{MODEL}/metadata")
  assert status == 200
  assert out["model_spec"] == {"name": MODEL, "signature_name": "", "version": "1"}
  signature = out["metadata"]["signature_def"]["signature_def"]["serving_default"]
  assert set(signature["inputs"]) == {"user_id", "age", "history", "k"}
  assert signature["inputs"]["history"]["dtype"] == "DT_INT64"
  assert [d["size"] for d in signature["inputs"]["history"]["tensor_shape"]["dim"]] == ["-1", "4"]
  assert signature["inputs"]["k"]["dtype"] == "DT_INT32"
  assert signature["inputs"]["k"]["tensor_shape"]["dim"] == []
  assert set(signature["outputs"]) == {"item_ids", "scores", "oov_ids"}
  assert signature["outputs"]["scores"]["dtype"] == "DT_FLOAT"
  about = out["metadata"]["export"]
  assert (about["num_items"], about["max_k"], about["default_k"]) == (NUM_ITEMS, MAX_K, 100)
  assert about["inputs"]["age"]["vocab_size"] == AGES and about["variant"] == "brute_force_model"

  for method, path in [("GET", "/v1/models/other"), ("GET", "/v1/models/other/metadata"),
                       ("POST", "/v1/models/other:predict")]:
    status, _, out = call(port, method, path, {"instances": [{"user_id": 1}]})
    assert status == 404 and "'other'" in out["error"], (path, out)


ONE = [{"user_id": 1}]
BAD_REQUESTS = [
    (b"{not json", "not valid JSON"),
    (b"\xff\xfe\x00", "not valid JSON"),
    (b"[" * 100_000, "not valid JSON"),
    ([1, 2], "must be a JSON object"),
    ({"k": 5}, "exactly one of instances"),
    ({"instances": ONE, "inputs": {"user_id": [1]}}, "got both"),
    ({"instances": ONE, "extra": 1}, "unknown field(s) extra"),
    ({"instances": ONE, "signature_name": "other"}, "signature_name"),
    ({"instances": {"user_id": 1}}, "instances: expected an array"),
    ({"instances": [5]}, "instances[0]: expected an object"),
    ({"instances": [{"age": 1}]}, "instances[0]: missing user_id"),
    ({"inputs": {"age": [1]}}, "inputs: missing user_id"),
    ({"inputs": [1]}, "inputs: expected an object"),
    ({"inputs": {"user_id": 3}}, "inputs.user_id: expected an array"),
    ({"instances": [{"user_id": 1, "colour": 2}]}, "unknown input(s) colour"),
    ({"instances": [{"user_id": 1, "k": 2}]}, "k goes at the top level"),
    ({"instances": [{"user_id": "5"}]}, "instances[0].user_id: expected an integer"),
    ({"instances": [{"user_id": 5.0}]}, "instances[0].user_id: expected an integer"),
    ({"instances": [{"user_id": True}]}, "instances[0].user_id: expected an integer"),
    ({"instances": [{"user_id": None}]}, "instances[0].user_id: expected an integer"),
    ({"instances": [{"user_id": [1]}]}, "instances[0].user_id: expected an integer"),
    ({"instances": [{"user_id": 10**30}]}, "instances[0].user_id: 10000000000000000000000000000"),
    ({"instances": [{"user_id": 1, "age": "old"}]}, "instances[0].age: expected an integer"),
    ({"instances": [{"user_id": 1, "history": 3}]}, "instances[0].history: expected an array"),
    ({"instances": [{"user_id": 1, "history": [1, [2]]}]},
     "instances[0].history[1]: expected an integer"),
    ({"instances": [{"user_id": 1, "history": [2**63]}]}, "history[0]: 9223372036854775808 is "
     "outside int64"),
    ({"inputs": {"user_id": [1, 2], "age": [1]}}, "inputs.age: expected an array of 2 integers"),
    ({"inputs": {"user_id": [1, 2], "history": [[1]]}},
     "inputs.history: expected an array of 2 arrays"),
    ({"instances": ONE, "k": 0}, "k: must be >= 1, got 0"),
    ({"instances": ONE, "k": -3}, "k: must be >= 1"),
    ({"instances": ONE, "k": "10"}, "k: expected an integer"),
    ({"instances": ONE, "k": 2.5}, "k: expected an integer"),
    ({"instances": ONE, "k": 201}, "corpus size (200 items)"),
    ({"instances": ONE, "k": MAX_K + 1}, f"exceeds max_k={MAX_K}"),
    ({"inputs": {"user_id": [1], "k": 3}, "k": 3}, "k is given both"),
    ({"instances": []}, "instances is empty"),
    ({"inputs": {"user_id": []}}, "inputs.user_id is empty"),
    ({"instances": ONE * 257}, "batch of 257 users exceeds max_batch=256"),
]


@pytest.mark.parametrize("body,message", BAD_REQUESTS, ids=[m for _, m in BAD_REQUESTS])
def test_bad_requests_get_400_naming_the_problem(brute_force_server, body, message):
  status, version, out = predict(brute_force_server, body)
  assert status == 400 and version == "1", (status, out)
  assert message in out["error"], out["error"]


@pytest.mark.parametrize("body,oov", [
    ({"instances": [{"user_id": 0}]}, 1),
    ({"instances": [{"user_id": 51, "history": [201, 3, -3]}]}, 3),
    ({"instances": [{"user_id": 1, "age": 5}, {"user_id": 2, "age": -1}]}, 0),  # features: missing
    ({"inputs": {"user_id": [1, 2], "history": [[1, 999], [0, 0, 2]]}}, 1),  # 0s are padding
])
def test_unknown_ids_are_answered_and_counted(brute_force_server, body, oov):
  connection = http.client.HTTPConnection("127.0.0.1", brute_force_server, timeout=60)
  try:
    connection.request("POST", f"/v1/models/{MODEL}:predict", json.dumps({**body, "k": 5}))
    response = connection.getresponse()
    out = json.loads(response.read())
  finally:
    connection.close()
  assert response.status == 200, out
  assert response.getheader("X-OOV-Ids") == str(oov)
  rows = out["predictions"] if "predictions" in out else out["outputs"]["item_ids"]
  assert len(rows) == len(body.get("instances") or body["inputs"]["user_id"])


def test_server_keeps_answering_after_bad_requests(brute_force_server):
  # Runs after the parametrized bad requests above.
  status, _, out = predict(brute_force_server, {"instances": ONE, "k": 5})
  assert status == 200 and len(out["predictions"][0]["item_ids"]) == 5


def test_version_swap_under_load_fails_no_request(export_dir, tmp_path):
  """The ScaNN variant serving version 1 while a client hammers it; version 2 is renamed into the
  export dir (as the exporter does), then a broken version 3."""
  served = str(tmp_path / "served")
  staging = str(tmp_path / "staging")
  shutil.copytree(os.path.join(export_dir, "1"), os.path.join(served, "1"))
  write_export(staging, seed=2, version=2)

  with serving(served, "retrieval_model", str(tmp_path / "server.log")) as port:
    seen, failures, stop = [], [], threading.Event()

    def client():
      connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
      rng = np.random.default_rng(0)
      while not stop.is_set():
        user = int(rng.integers(1, NUM_USERS + 1))
        try:
          status, version, out = predict(port, {"instances": [{"user_id": user}], "k": 10},
                                         connection)
          if status == 200 and len(out["predictions"][0]["item_ids"]) == 10:
            seen.append(int(version))
          else:
            failures.append((status, out))
        except (OSError, http.client.HTTPException, ValueError) as e:
          failures.append(repr(e))
          connection.close()
          connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
      connection.close()

    thread = threading.Thread(target=client)
    thread.start()
    try:
      while len(seen) < 20 and not failures:
        time.sleep(0.05)
      os.rename(os.path.join(staging, "2"), os.path.join(served, "2"))
      deadline = time.time() + 120
      while (not seen or seen[-1] != 2) and time.time() < deadline and not failures:
        time.sleep(0.1)
      swapped_at = len(seen)
      while len(seen) < swapped_at + 20 and time.time() < deadline and not failures:
        time.sleep(0.05)
    finally:
      stop.set()
      thread.join(timeout=60)
    assert not failures, failures[:3]
    assert seen[0] == 1 and seen[-1] == 2, seen[-5:]
    assert seen == sorted(seen), "a request was answered by version 1 after version 2"
    # Version 2 answers with its own tables.
    status, version, out = predict(port, {"instances": [{"user_id": 4, "age": 1, "history": [8]}],
                                          "k": 50})
    ids, _ = expected_top_k(random_tables(2), [4], [1], [[8]], k=50)
    assert status == 200 and version == "2"
    assert len(set(out["predictions"][0]["item_ids"]) & set(ids[0].tolist())) >= 48

    # A version that fails to load is reported and skipped; version 2 keeps serving.
    broken = os.path.join(staging, "3")
    os.makedirs(os.path.join(broken, "retrieval_model"))
    with open(os.path.join(broken, "metadata.json"), "w") as f:
      f.write("{truncated")
    os.rename(broken, os.path.join(served, "3"))
    deadline = time.time() + 60
    while True:
      _, _, out = call(port, "GET", f"/v1/models/{MODEL}")
      states = {s["version"]: s for s in out["model_version_status"]}
      if "3" in states or time.time() > deadline:
        break
      time.sleep(0.2)
    assert states["2"]["state"] == "AVAILABLE"
    assert states["3"]["state"] == "END" and states["3"]["status"]["error_code"] == "UNKNOWN"
    status, version, _ = predict(port, {"instances": ONE})
    assert (status, version) == (200, "2")
  log = open(str(tmp_path / "server.log")).read()
  assert "swapped version 1 -> 2" in log and "version 3" in log and "failed to load" in log


def test_cli_rejects_a_missing_or_empty_export_dir(tmp_path):
  for export_dir, message in [(tmp_path / "missing", "does not exist"),
                              (tmp_path, "holds no version")]:
    result = subprocess.run([sys.executable, "-m", "pipelines.serve", f"--export_dir={export_dir}",
                             f"--port={free_port()}"], capture_output=True, text=True, timeout=120,
                            cwd=REPO)
    assert result.returncode == 2, result.stderr[-2000:]
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and message in errors[0], result.stderr[-2000:]
    assert "Traceback" not in result.stderr


def test_coalescing_transport_sends_one_step_of_writes_as_one():
  import asyncio

  from uma2_tf.serving.transport import CoalescingTransport

  class Recorder:
    def __init__(self):
      self.writes, self.closed, self.aborted = [], False, False

    def write(self, data):
      self.writes.append(data)

    def is_closing(self):
      return self.closed

    def close(self):
      self.closed = True

    def abort(self):
      self.aborted = True

    def get_write_buffer_size(self):
      return 0

    def get_extra_info(self, name):
      return {"peername": ("127.0.0.1", 1)}.get(name)

  async def scenario():
    raw = Recorder()
    transport = CoalescingTransport(raw, asyncio.get_running_loop())
    transport.write(b"HTTP/1.1 200 OK\r\n\r\n")
    transport.write(memoryview(b"{}"))
    assert raw.writes == [] and transport.get_write_buffer_size() == 21
    await asyncio.sleep(0)  # The end of the step: one send.
    assert raw.writes == [b"HTTP/1.1 200 OK\r\n\r\n{}"]
    transport.write(b"last")
    transport.close()  # Pending bytes leave before the close.
    assert raw.writes[-1] == b"last" and raw.closed
    assert transport.get_extra_info("peername") == ("127.0.0.1", 1)  # The rest is the transport's.
    aborted = Recorder()
    transport = CoalescingTransport(aborted, asyncio.get_running_loop())
    transport.write(b"dropped")
    transport.abort()
    await asyncio.sleep(0)
    assert aborted.writes == [] and aborted.aborted

  asyncio.run(scenario())

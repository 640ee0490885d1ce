"""A REST server for an export dir, speaking TF Serving's API (`make serve`).

    app = create_app("exports/uma2_default", "uma2")          # then: uvicorn.run(app, port=8501)

    curl -d '{"instances": [{"user_id": 5, "age": 2, "history": [31, 7, 12]}], "k": 10}' \
        http://127.0.0.1:8501/v1/models/uma2:predict
    # {"predictions": [{"item_ids": [...10 ids...], "scores": [...]}]}
    curl -d '{"inputs": {"user_id": [5, 6], "history": [[31], []]}, "k": 10}' ...:predict
    # {"outputs": {"item_ids": [[...], [...]], "scores": [[...], [...]]}}
    curl http://127.0.0.1:8501/v1/models/uma2             # version status
    curl http://127.0.0.1:8501/v1/models/uma2/metadata    # signature, inputs and their vocabularies

Requests:
  - `instances` (one object per user) or `inputs` (one array per input name), not both.
  - `user_id` is required (1..vocab_size-1). A user feature left out is 0, the "unknown" value of
    every feature; given, it must be in 0..vocab_size-1.
  - `history`: the user's clicked item ids (1..num_items), oldest first, newest last, any length.
    Zeros are dropped as padding, the newest H ids are kept, and zeros pad them on the right to the
    export's history length H: the layout the trainer's sampler feeds the model. Left out: empty.
  - `k` (top level; in the columnar format it may also sit in `inputs` as a scalar, as TF Serving
    would take it): 1..max_k, default min(100, max_k).
  - At most `max_batch` users per request.
Answers hold up to k items per user, best first (fewer only when a ScaNN index searches partitions
holding fewer than k items; see `Servable.top_k`).
Anything else gets HTTP 400 with {"error": "..."} naming the field; an unknown model name gets 404.
Every answer carries the served version in the `X-Model-Version` header.

The server serves the highest version in the export dir and polls it every `poll_seconds`: a
higher version is loaded and warmed up in the background while the old one keeps answering, then
swapped in by replacing one reference. A request uses the version it started with, so none fails
during a swap. A version that fails to load is logged and skipped; the old one stays.
"""
from __future__ import annotations

import uma2_tf  # noqa: F401  (before TensorFlow: selects tf_keras)

import contextlib
import dataclasses
import json
import os
import threading
import time
from typing import Any

import numpy as np
import orjson
import tensorflow as tf
from absl import logging
from fastapi import FastAPI, Request
from fastapi.responses import Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from uma2_tf.serving import loader

DEFAULT_K = 100
USER_ID = "user_id"
K = "k"
SERVABLE_VARIANTS = (loader.RETRIEVAL_MODEL, loader.BRUTE_FORCE_MODEL)
_TOP_LEVEL = ("instances", "inputs", K, "signature_name")


class RequestError(ValueError):
  """A client mistake; answered with HTTP 400 and this message."""


@dataclasses.dataclass(frozen=True)
class Servable:
  """One loaded version and what validating a request against it needs. Never mutated: a swap
  replaces the whole object, so a request holding it sees one consistent version."""

  version: int
  version_dir: str
  variant: str
  signature: Any
  metadata: dict
  scalar_inputs: dict[str, int]  # name -> vocab size; user_id and the user features
  list_inputs: dict[str, tuple[int, int]]  # name -> (length H, vocab size); the history
  num_items: int
  max_k: int

  @property
  def default_k(self) -> int:
    return min(DEFAULT_K, self.max_k)

  def __call__(self, features: dict[str, np.ndarray], k: int) -> tuple[np.ndarray, np.ndarray]:
    """(item_ids, scores), [B, <= k] each; NaN scores mark slots the index could not fill."""
    out = self.signature(**{name: tf.constant(v) for name, v in features.items()},
                         k=tf.constant(k, tf.int32))
    return out["item_ids"].numpy(), out["scores"].numpy()

  def top_k(self, features: dict[str, np.ndarray], k: int) -> tuple[list, list]:
    """Per user, up to k (item ids, scores) as lists, best first.

    ScaNN only scores the items in the partitions it searches: when they hold fewer than k items
    it answers fewer columns, and in a batch pads short rows with NaN scores (and a real-looking
    item id). Those slots are dropped, so a row may hold fewer than k items, never a fake one.
    """
    return _drop_unfilled(*self(features, k))


def _drop_unfilled(ids: np.ndarray, scores: np.ndarray) -> tuple[list, list]:
  ids, scores = _filled_rows(ids, scores)
  return [row.tolist() for row in ids], [row.tolist() for row in scores]


def _filled_rows(ids: np.ndarray, scores: np.ndarray) -> tuple[list, list]:
  """Per user, the (ids, scores) arrays without the slots ScaNN could not fill (NaN scores)."""
  valid = ~np.isnan(scores)
  if valid.all():
    return list(ids), list(scores)
  return [row[keep] for row, keep in zip(ids, valid)], [row[keep] for row, keep in zip(scores, valid)]


@dataclasses.dataclass
class _Pending:
  servable: Servable
  features: dict[str, np.ndarray]
  k: int
  on_done: Any  # Called from the worker thread once result or error is set.
  result: tuple | None = None
  error: BaseException | None = None

  @property
  def rows(self) -> int:
    return len(self.features[USER_ID])


class MicroBatcher:
  """Merges predict calls that arrive together into one model call, as TF Serving's batching does.

  One worker thread takes a waiting request, adds every other request already queued for the same
  version (up to `max_rows` users), runs the model once with the largest k among them and hands
  each caller its rows cut to its k. Nothing waits for a batch to fill: requests queue only while
  the model is busy, so a lone request pays no delay and a loaded server pays the per-call cost
  (signature dispatch, ScaNN's batch setup) once per batch instead of once per request.

      batcher = MicroBatcher(max_rows=256); batcher.start()
      ids, scores = await batcher.top_k(servable, features, k)  # arrays per user, NaN slots dropped
  """

  def __init__(self, max_rows: int):
    import queue
    self._queue: "queue.Queue[_Pending]" = queue.Queue()
    self._empty = queue.Empty
    self.max_rows = max_rows
    self._carry: _Pending | None = None
    self._thread: threading.Thread | None = None

  def start(self) -> None:
    if self._thread is None:
      self._thread = threading.Thread(target=self._run, name="uma2-micro-batcher", daemon=True)
      self._thread.start()

  async def top_k(self, servable: Servable, features: dict[str, np.ndarray], k: int):
    """Awaits the worker's answer on the event loop, without tying up a thread of the pool."""
    import asyncio
    loop = asyncio.get_running_loop()
    future = loop.create_future()

    def deliver(pending: _Pending) -> None:
      if future.cancelled():
        return
      if pending.error is not None:
        future.set_exception(pending.error)
      else:
        future.set_result(pending.result)

    pending = _Pending(servable, features, k,
                       on_done=lambda: loop.call_soon_threadsafe(deliver, pending))
    self._queue.put(pending)
    return await future

  def _next_batch(self) -> list[_Pending]:
    first = self._carry or self._queue.get()
    self._carry = None
    batch, rows = [first], first.rows
    while True:
      try:
        nxt = self._queue.get_nowait()
      except self._empty:
        return batch
      if nxt.servable is not first.servable or rows + nxt.rows > self.max_rows:
        self._carry = nxt  # Goes first in the next batch.
        return batch
      batch.append(nxt)
      rows += nxt.rows

  def _run(self) -> None:
    while True:
      batch = self._next_batch()
      try:
        servable = batch[0].servable
        k = max(p.k for p in batch)
        features = {name: np.concatenate([p.features[name] for p in batch])
                    for name in batch[0].features}
        ids, scores = servable(features, k)
        start = 0
        for p in batch:
          p.result = _filled_rows(ids[start:start + p.rows, :p.k], scores[start:start + p.rows, :p.k])
          start += p.rows
      except BaseException as e:  # Handed to every caller of the batch; the worker goes on.
        for p in batch:
          p.error = e
      for p in batch:
        p.on_done()


def load_servable(version_dir: str, variant: str) -> Servable:
  """Loads a version, checks its metadata against its signature, and warms it up with one call
  (so the first request does not pay for it, and a broken model is caught before it is served)."""
  signature, metadata = loader.load_model(version_dir, variant)
  scalar_inputs, list_inputs = {}, {}
  try:
    for name, spec in metadata["inputs"].items():
      if spec.get("shape"):
        list_inputs[name] = (int(spec["shape"][0]), int(spec["vocab_size"]))
      else:
        scalar_inputs[name] = int(spec["vocab_size"])
  except (AttributeError, KeyError, IndexError, TypeError, ValueError) as e:
    raise ValueError(f"{version_dir}/{loader.METADATA}: malformed inputs "
                     f"({type(e).__name__}: {e}); expected "
                     '{name: {"shape": [] or [H], "vocab_size": int}}') from None
  _, signature_inputs = signature.structured_input_signature
  expected = set(metadata["inputs"]) | {K}
  if set(signature_inputs) != expected or USER_ID not in scalar_inputs:
    raise ValueError(f"{version_dir}/{variant}: signature inputs {sorted(signature_inputs)} do not "
                     f"match metadata.json's inputs {sorted(metadata['inputs'])} plus k")
  # The directory name is the version, as in TF Serving (metadata.json's copy could be stale).
  servable = Servable(version=int(os.path.basename(os.path.normpath(version_dir))),
                      version_dir=version_dir, variant=variant, signature=signature,
                      metadata=metadata, scalar_inputs=scalar_inputs, list_inputs=list_inputs,
                      num_items=int(metadata["num_items"]), max_k=int(metadata["max_k"]))
  warmup = {name: np.zeros([1], np.int64) for name in scalar_inputs}
  warmup[USER_ID] = np.ones([1], np.int64)
  for name, (length, _) in list_inputs.items():
    warmup[name] = np.zeros([1, length], np.int64)
  ids, scores = servable(warmup, servable.default_k)
  if ids.ndim != 2 or ids.shape[0] != 1 or ids.shape[1] > servable.default_k or (
      scores.shape != ids.shape):
    raise ValueError(f"{version_dir}/{variant}: warm-up answered shapes {ids.shape}, {scores.shape}"
                     f" for one user and k={servable.default_k}")
  return servable


# ---------------------------------------------------------------------------------------------
# Request parsing: every check a client can fail, in plain Python/numpy before the model runs.

def _json_type(value) -> str:
  names = {bool: "boolean", int: "integer", float: "number", str: "string", list: "array",
           dict: "object", type(None): "null"}
  return names.get(type(value), type(value).__name__)


def _show(value) -> str:
  text = json.dumps(value)
  return f"{text[:40]}{'...' if len(text) > 40 else ''} ({_json_type(value)})"


def _integer(value, where: str) -> int:
  # `type(...) is int`: JSON true/false arrive as bool, a subclass of int, and must not pass as 1/0.
  if type(value) is not int:
    raise RequestError(f"{where}: expected an integer, got {_show(value)}")
  return value


def _scalar_id(value, where: str, name: str, vocab_size: int) -> int:
  value = _integer(value, where)
  low = 1 if name == USER_ID else 0
  if not low <= value < vocab_size:
    what = f"unknown user id {value}" if name == USER_ID else f"{value} is out of range"
    raise RequestError(f"{where}: {what}; expected {low}..{vocab_size - 1}")
  return value


def _history(value, where: str, length: int, vocab_size: int) -> list[int]:
  if not isinstance(value, list):
    raise RequestError(f"{where}: expected an array of item ids, got {_show(value)}")
  items = []
  for j, item in enumerate(value):
    item = _integer(item, f"{where}[{j}]")
    if not 0 <= item < vocab_size:
      raise RequestError(f"{where}[{j}]: unknown item id {item}; expected 1..{vocab_size - 1} "
                         "(0 is padding)")
    if item:
      items.append(item)
  items = items[len(items) - length:] if len(items) > length else items  # The newest H.
  return items + [0] * (length - len(items))


def _check_batch(size: int, where: str, max_batch: int) -> None:
  if size == 0:
    raise RequestError(f"{where} is empty; send at least one user")
  if size > max_batch:
    raise RequestError(f"{where}: batch of {size} users exceeds max_batch={max_batch}")


def _unknown_inputs(names, servable: Servable, where: str) -> None:
  known = [*servable.scalar_inputs, *servable.list_inputs]
  unknown = sorted(set(names) - set(known))
  if unknown:
    hint = "; k goes at the top level of the request" if K in unknown else ""
    raise RequestError(f"{where}: unknown input(s) {', '.join(unknown)}; expected "
                       f"{', '.join(known)}{hint}")


def _parse_instances(instances, servable: Servable, max_batch: int) -> dict[str, np.ndarray]:
  if not isinstance(instances, list):
    raise RequestError(f"instances: expected an array of objects, got {_show(instances)}")
  _check_batch(len(instances), "instances", max_batch)
  columns = {name: [] for name in (*servable.scalar_inputs, *servable.list_inputs)}
  for i, instance in enumerate(instances):
    where = f"instances[{i}]"
    if not isinstance(instance, dict):
      raise RequestError(f"{where}: expected an object of inputs, got {_show(instance)}")
    _unknown_inputs(instance, servable, where)
    if USER_ID not in instance:
      raise RequestError(f"{where}: missing user_id (required)")
    for name, vocab_size in servable.scalar_inputs.items():
      columns[name].append(_scalar_id(instance.get(name, 0), f"{where}.{name}", name, vocab_size))
    for name, (length, vocab_size) in servable.list_inputs.items():
      columns[name].append(_history(instance.get(name, []), f"{where}.{name}", length, vocab_size))
  return {name: np.asarray(values, np.int64) for name, values in columns.items()}


def _parse_inputs(inputs, servable: Servable, max_batch: int) -> dict[str, np.ndarray]:
  if not isinstance(inputs, dict):
    raise RequestError("inputs: expected an object mapping input names to arrays, got "
                       f"{_show(inputs)}")
  _unknown_inputs(set(inputs) - {K}, servable, "inputs")
  if USER_ID not in inputs:
    raise RequestError("inputs: missing user_id (required)")
  users = inputs[USER_ID]
  if not isinstance(users, list):
    raise RequestError(f"inputs.user_id: expected an array of user ids, got {_show(users)}")
  batch = len(users)
  _check_batch(batch, "inputs.user_id", max_batch)
  features = {}
  for name, vocab_size in servable.scalar_inputs.items():
    values = inputs.get(name, [0] * batch)
    if not isinstance(values, list) or len(values) != batch:
      raise RequestError(f"inputs.{name}: expected an array of {batch} integers (one per user_id), "
                         f"got {_show(values)}")
    features[name] = np.asarray(
        [_scalar_id(v, f"inputs.{name}[{i}]", name, vocab_size) for i, v in enumerate(values)],
        np.int64)
  for name, (length, vocab_size) in servable.list_inputs.items():
    rows = inputs.get(name, [[]] * batch)
    if not isinstance(rows, list) or len(rows) != batch:
      raise RequestError(f"inputs.{name}: expected an array of {batch} arrays of item ids (one per "
                         f"user_id), got {_show(rows)}")
    features[name] = np.asarray(
        [_history(row, f"inputs.{name}[{i}]", length, vocab_size) for i, row in enumerate(rows)],
        np.int64).reshape(batch, length)
  return features


def _parse_k(body: dict, servable: Servable) -> int:
  in_inputs = isinstance(body.get("inputs"), dict) and K in body["inputs"]
  if in_inputs and K in body:
    raise RequestError("k is given both at the top level and in inputs; give it once")
  if not in_inputs and K not in body:
    return servable.default_k
  k = _integer(body["inputs"][K] if in_inputs else body[K], "k")
  if k < 1:
    raise RequestError(f"k: must be >= 1, got {k}")
  if k > servable.num_items:
    raise RequestError(f"k: {k} exceeds the corpus size ({servable.num_items} items)")
  if k > servable.max_k:
    raise RequestError(f"k: {k} exceeds max_k={servable.max_k}, the largest k this export answers "
                       "(export with a larger --max_k)")
  return k


def parse_request(raw: bytes, servable: Servable, max_batch: int):
  """(features {name: int64 array}, k, row_format) of a predict body; RequestError if malformed."""
  try:
    body = json.loads(raw)
  except ValueError as e:  # Also bodies that are not UTF-8.
    raise RequestError(f"request body is not valid JSON: {e}") from None
  except RecursionError:
    raise RequestError("request body is not valid JSON: nested too deeply") from None
  if not isinstance(body, dict):
    raise RequestError(f"request body must be a JSON object with instances or inputs, got "
                       f"{_show(body)}")
  unknown = sorted(set(body) - set(_TOP_LEVEL))
  if unknown:
    raise RequestError(f"unknown field(s) {', '.join(unknown)}; a request has "
                       f"{', '.join(_TOP_LEVEL)}")
  signature_name = body.get("signature_name", loader.SIGNATURE)
  if signature_name != loader.SIGNATURE:
    raise RequestError(f"signature_name: {_show(signature_name)} is not served; the model has only "
                       f"{loader.SIGNATURE!r}")
  if ("instances" in body) == ("inputs" in body):
    raise RequestError("a request needs exactly one of instances (row format) or inputs (columnar "
                       "format), got " + ("both" if "inputs" in body else "neither"))
  k = _parse_k(body, servable)
  if "instances" in body:
    return _parse_instances(body["instances"], servable, max_batch), k, True
  return _parse_inputs(body["inputs"], servable, max_batch), k, False


# ---------------------------------------------------------------------------------------------
# Versions: the served one and the background poller that swaps in newer ones.

def _freeze_heap(collect: bool = False) -> None:
  """Moves every object alive now out of the garbage collector's reach (`gc.freeze`).

  A loaded SavedModel leaves millions of long-lived Python objects; with them in the heap one full
  collection takes ~0.3 s (measured on the 1M-item bench export) and stops every request while it
  runs. Frozen, they are never scanned again, and collections see only what requests allocate.
  After a swap (`collect`) the old version's cycles are collected once before freezing again.
  """
  import gc
  if collect:
    gc.unfreeze()
    gc.collect()
  gc.freeze()


class ModelManager:
  """Holds the served version and swaps in newer ones found by polling the export dir."""

  def __init__(self, export_dir: str, variant: str, poll_seconds: float):
    self.export_dir, self.variant, self.poll_seconds = export_dir, variant, poll_seconds
    self._lock = threading.Lock()
    self._failed: dict[int, str] = {}  # version -> why it did not load; never retried
    self._loading: int | None = None
    self._stop = threading.Event()
    self._thread: threading.Thread | None = None
    start = time.perf_counter()
    self._current = load_servable(loader.latest_version(export_dir), variant)
    _freeze_heap()
    logging.info("serving %s version %d (%s) from %s, loaded in %.1fs", variant,
                 self._current.version, self._current.version_dir, export_dir,
                 time.perf_counter() - start)

  @property
  def current(self) -> Servable:
    return self._current  # One reference read: atomic, never a half-swapped state.

  def status(self) -> list[dict]:
    """TF Serving's model_version_status entries, newest first."""
    with self._lock:
      current, failed, loading = self._current, dict(self._failed), self._loading
    entries = [{"version": str(current.version), "state": "AVAILABLE",
                "status": {"error_code": "OK", "error_message": ""}}]
    if loading is not None:
      entries.append({"version": str(loading), "state": "LOADING",
                      "status": {"error_code": "OK", "error_message": ""}})
    for version, error in failed.items():
      if version > current.version:
        entries.append({"version": str(version), "state": "END",
                        "status": {"error_code": "UNKNOWN", "error_message": error}})
    return sorted(entries, key=lambda e: -int(e["version"]))

  def poll_once(self) -> bool:
    """Loads and swaps in the highest version if it is newer; True if it swapped."""
    try:
      versions = loader.list_versions(self.export_dir)
    except OSError as e:  # The dir vanished or is unreadable: keep serving what is loaded.
      logging.warning("cannot list %s: %s; still serving version %d", self.export_dir, e,
                      self._current.version)
      return False
    candidates = [v for v in versions if v > self._current.version and v not in self._failed]
    if not candidates:
      return False
    version = candidates[-1]
    version_dir = os.path.join(self.export_dir, str(version))
    with self._lock:
      self._loading = version
    start = time.perf_counter()
    try:
      servable = load_servable(version_dir, self.variant)
    except Exception as e:  # noqa: BLE001  Whatever broke the new version, the old one serves on.
      logging.error("version %d (%s) failed to load, still serving version %d: %s: %s", version,
                    version_dir, self._current.version, type(e).__name__, e)
      with self._lock:
        self._failed[version] = f"{type(e).__name__}: {e}"
        self._loading = None
      return False
    with self._lock:
      previous, self._current, self._loading = self._current, servable, None
    logging.info("swapped version %d -> %d (%s), loaded and warmed up in %.1fs", previous.version,
                 servable.version, version_dir, time.perf_counter() - start)
    del previous  # Requests still holding it keep it alive; the collection below frees its cycles.
    _freeze_heap(collect=True)
    return True

  def _run(self) -> None:
    while not self._stop.wait(self.poll_seconds):
      try:
        self.poll_once()
      except Exception:  # noqa: BLE001  A poller that dies would silently freeze the version.
        logging.exception("polling %s failed; will retry", self.export_dir)

  def start(self) -> None:
    if self._thread is None:
      self._thread = threading.Thread(target=self._run, name="uma2-version-poller", daemon=True)
      self._thread.start()

  def stop(self) -> None:
    self._stop.set()
    if self._thread is not None:
      self._thread.join(timeout=60)
      self._thread = None


# ---------------------------------------------------------------------------------------------
# The app.

_warned_short: set[int] = set()


def _warn_short(servable: Servable, k: int) -> None:
  if servable.version not in _warned_short:  # Once per version: it is a property of the export.
    _warned_short.add(servable.version)
    logging.warning("version %d answered fewer than k=%d items for some users: its ScaNN index "
                    "searches too few partitions for that k (%s); export with a larger "
                    "--scann_leaves_to_search", servable.version, k, servable.metadata.get("scann"))

def _json(payload, status_code: int = 200, version: int | None = None) -> Response:
  """`payload` (numpy arrays allowed) as a JSON response. orjson writes a k=100 answer about ten
  times faster than `json` and float32 scores in their shortest form (0.8437512, not
  0.8437511920928955): a smaller body, less to send on every answer."""
  headers = {"X-Model-Version": str(version)} if version is not None else None
  return Response(orjson.dumps(payload, option=orjson.OPT_SERIALIZE_NUMPY), status_code=status_code,
                  media_type="application/json", headers=headers)


def _tensor_info(name: str, spec, is_input: bool) -> dict:
  from tensorflow.core.framework import types_pb2

  shape = spec.shape
  info = {"dtype": types_pb2.DataType.Name(spec.dtype.as_datatype_enum)}
  if shape.rank is None:
    info["tensor_shape"] = {"dim": [], "unknown_rank": True}
  else:
    info["tensor_shape"] = {"dim": [{"size": str(-1 if d is None else d), "name": ""}
                                    for d in shape.as_list()], "unknown_rank": False}
  if is_input:  # The placeholder names tf.saved_model.save gives signature inputs.
    info["name"] = f"{loader.SIGNATURE}_{name}:0"
  return info


def _model_metadata(model_name: str, servable: Servable) -> dict:
  _, inputs = servable.signature.structured_input_signature
  outputs = servable.signature.structured_outputs
  signature_def = {
      "inputs": {n: _tensor_info(n, s, True) for n, s in sorted(inputs.items())},
      "outputs": {n: _tensor_info(n, s, False) for n, s in sorted(outputs.items())},
      "method_name": "tensorflow/serving/predict",
  }
  keys = ("model_name", "created", "commit", "embedding_dim", "dataset", "scann")
  about = {key: servable.metadata[key] for key in keys if key in servable.metadata}
  return {
      "model_spec": {"name": model_name, "signature_name": "", "version": str(servable.version)},
      "metadata": {
          "signature_def": {"signature_def": {loader.SIGNATURE: signature_def}},
          # Not in TF Serving's answer: what a client needs to build valid requests.
          "export": {"variant": servable.variant, "num_items": servable.num_items,
                     "max_k": servable.max_k, "default_k": servable.default_k,
                     "inputs": servable.metadata["inputs"], **about},
      },
  }


def create_app(export_dir: str, model_name: str, variant: str = loader.RETRIEVAL_MODEL,
               poll_seconds: float = 2.0, max_batch: int = 256) -> FastAPI:
  """The FastAPI app serving `export_dir`'s highest version as `model_name`.

  Loads that version before returning (so a bad export dir fails here, not on the first request);
  the poller that picks up newer versions runs while the app does (its lifespan).
  Raises FileNotFoundError (no export dir / no version), ImportError (the ScaNN variant without
  scann), ValueError (bad arguments or a broken version).
  """
  if variant not in SERVABLE_VARIANTS:
    raise ValueError(f"variant must be one of {', '.join(SERVABLE_VARIANTS)}, got {variant!r}")
  if poll_seconds <= 0:
    raise ValueError(f"poll_seconds must be > 0, got {poll_seconds}")
  if max_batch < 1:
    raise ValueError(f"max_batch must be >= 1, got {max_batch}")
  manager = ModelManager(export_dir, variant, poll_seconds)
  batcher = MicroBatcher(max_rows=max_batch)

  @contextlib.asynccontextmanager
  async def lifespan(_):
    manager.start()
    batcher.start()
    try:
      yield
    finally:
      manager.stop()

  app = FastAPI(title=f"uma2_tf serving {model_name}", lifespan=lifespan, docs_url=None,
                redoc_url=None, openapi_url=None)
  app.state.manager = manager

  def not_found(name: str) -> Response:
    return _json({"error": f"Servable not found for request: model {name!r} (this server serves "
                           f"{model_name!r})"}, 404)

  @app.exception_handler(StarletteHTTPException)
  async def http_error(_, exc: StarletteHTTPException):  # TF Serving's {"error": ...} everywhere.
    return _json({"error": str(exc.detail)}, exc.status_code)

  @app.exception_handler(Exception)
  async def server_error(request: Request, exc: Exception):
    # Client mistakes never get here (parse_request catches them): this is a bug, so log it whole.
    logging.error("%s %s failed", request.method, request.url.path, exc_info=exc)
    return _json({"error": f"internal error: {type(exc).__name__}: {exc}"}, 500)

  @app.post("/v1/models/{name}:predict")
  async def predict_endpoint(name: str, request: Request):
    servable = manager.current  # This request's version, whatever swaps happen meanwhile.
    if name != model_name:
      return not_found(name)
    raw = await request.body()
    # Validation is numpy on one request (tens of microseconds): done on the event loop; the model
    # call runs on the micro-batcher's thread and is awaited, so no pool thread waits on it.
    try:
      features, k, row_format = parse_request(raw, servable, max_batch)
    except RequestError as e:
      return _json({"error": str(e)}, 400, servable.version)
    ids, scores = await batcher.top_k(servable, features, k)
    if any(len(row) < k for row in ids):
      _warn_short(servable, k)
    if row_format:
      payload = {"predictions": [{"item_ids": i, "scores": s} for i, s in zip(ids, scores)]}
    else:
      payload = {"outputs": {"item_ids": ids, "scores": scores}}
    return _json(payload, 200, servable.version)

  @app.get("/v1/models/{name}")
  def status_endpoint(name: str):
    if name != model_name:
      return not_found(name)
    return _json({"model_version_status": manager.status()}, 200, manager.current.version)

  @app.get("/v1/models/{name}/metadata")
  def metadata_endpoint(name: str):
    if name != model_name:
      return not_found(name)
    servable = manager.current
    return _json(_model_metadata(model_name, servable), 200, servable.version)

  return app

"""One served version and the way predict calls reach its model (`uma2_tf.serving.server` uses it).

    servable = load_servable("exports/uma2_default/3", "retrieval_model")  # loaded and warmed up
    ids, scores, oov_ids = servable.top_k(features, k=10)  # features: {input name: array}; lists
    batcher = MicroBatcher(max_rows=256); batcher.start()
    ids, scores, oov_ids = await batcher.top_k(servable, features, 10)  # calls share one call

`Servable` is immutable, so a request holding one sees one consistent version across swaps.
`RequestError` (a client mistake, answered with HTTP 400) and the input names `USER_ID` and `K`
live here because parsing, the version manager and the app all build on this module.
"""
from __future__ import annotations

import uma2_tf  # noqa: F401  (before TensorFlow: selects tf_keras)

import dataclasses
import os
import threading
from typing import Any

import numpy as np
import tensorflow as tf

from uma2_tf.serving import loader

DEFAULT_K = 100
USER_ID = "user_id"
K = "k"


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
  # An export that looks its inputs up itself (unknown ids answered and counted in `oov_ids`):
  # name -> (its type, "int64" or "string"; the value of a missing feature or of history padding).
  # Empty for an export made before, which takes dense int64 ids only.
  lookups: dict[str, tuple[str, Any]] = dataclasses.field(default_factory=dict)

  @property
  def looks_up_ids(self) -> bool:
    return bool(self.lookups)

  @property
  def default_k(self) -> int:
    return min(DEFAULT_K, self.max_k)

  def dtype(self, name: str) -> str:
    return self.lookups[name][0] if name in self.lookups else "int64"

  def missing(self, name: str):
    """The value of input `name` that stands for none: a missing feature, history padding; for
    user_id one the export does not know (1, a known dense id, in an export before lookups)."""
    if name in self.lookups:
      dtype, missing = self.lookups[name]
      if missing is not None:
        return missing
      return "" if dtype == "string" else -1
    return 1 if name == USER_ID else 0

  def column(self, values: list, name: str) -> np.ndarray:
    """Parsed values of input `name` as the array its signature takes."""
    return np.array(values, object if self.dtype(name) == "string" else np.int64)

  def __call__(self, features: dict[str, np.ndarray],
               k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(item_ids, scores), [B, <= k] each, and oov_ids [B]; NaN scores mark slots the index
    could not fill. String ids come back as str."""
    out = self.signature(**{name: tf.constant(v) for name, v in features.items()},
                         k=tf.constant(k, tf.int32))
    ids = out["item_ids"].numpy()
    if ids.dtype == object:
      ids = np.vectorize(bytes.decode, otypes=[object])(ids) if ids.size else ids
    oov_ids = (out["oov_ids"].numpy() if "oov_ids" in out
               else np.zeros(len(ids), np.int32))
    return ids, out["scores"].numpy(), oov_ids

  def top_k(self, features: dict[str, np.ndarray], k: int) -> tuple[list, list, np.ndarray]:
    """Per user, up to k (item ids, scores) as lists, best first.

    ScaNN only scores the items in the partitions it searches: when they hold fewer than k items
    it answers fewer columns, and in a batch pads short rows with NaN scores (and a real-looking
    item id). Those slots are dropped, so a row may hold fewer than k items, never a fake one.
    """
    ids, scores, oov_ids = self(features, k)
    ids, scores = _filled_rows(ids, scores)
    return ([row if isinstance(row, list) else row.tolist() for row in ids],
            [row.tolist() for row in scores], oov_ids)


def _filled_rows(ids: np.ndarray, scores: np.ndarray) -> tuple[list, list]:
  """Per user, the (ids, scores) arrays without the slots ScaNN could not fill (NaN scores);
  string ids as lists (JSON writes numeric arrays only)."""
  valid = ~np.isnan(scores)
  if valid.all():
    id_rows, score_rows = list(ids), list(scores)
  else:
    id_rows = [row[keep] for row, keep in zip(ids, valid)]
    score_rows = [row[keep] for row, keep in zip(scores, valid)]
  if ids.dtype == object:
    id_rows = [row.tolist() for row in id_rows]
  return id_rows, score_rows


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
      ids, scores, oov_ids = await batcher.top_k(servable, features, k)  # NaN slots dropped
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
        ids, scores, oov_ids = servable(features, k)
        start = 0
        for p in batch:
          rows = slice(start, start + p.rows)
          p.result = (*_filled_rows(ids[rows, :p.k], scores[rows, :p.k]), oov_ids[rows])
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
    # Exports before raw ids took dense int64 ids only and did not look them up.
    lookups = {name: (spec["dtype"], spec.get("padding", spec.get("missing")))
               for name, spec in metadata["inputs"].items() if "ids" in spec}
    if any(dtype not in ("int64", "string") for dtype, _ in lookups.values()):
      raise ValueError(f"an input's dtype is not int64 or string: {lookups}")
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
                      num_items=int(metadata["num_items"]), max_k=int(metadata["max_k"]),
                      lookups=lookups)
  warmup = {name: servable.column([servable.missing(name)], name) for name in scalar_inputs}
  warmup[USER_ID] = servable.column([servable.missing(USER_ID)], USER_ID)
  for name, (length, _) in list_inputs.items():
    warmup[name] = servable.column([[servable.missing(name)] * length], name)
  ids, scores, _ = servable(warmup, servable.default_k)
  if ids.ndim != 2 or ids.shape[0] != 1 or ids.shape[1] > servable.default_k or (
      scores.shape != ids.shape):
    raise ValueError(f"{version_dir}/{variant}: warm-up answered shapes {ids.shape}, {scores.shape}"
                     f" for one user and k={servable.default_k}")
  return servable

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
  - Ids and feature values are those the export speaks (metadata.json's `inputs`): the logs' raw
    ids for a dataset that keeps them, int64 or strings (`"u034"`, `["v78", "v22"]`), the dense
    ids (1..n-1) for a simulated world. A value of the wrong JSON type is a 400; an unknown one is
    answered (an unseen user from its features and history, an unknown history item ignored, an
    unknown feature value as a missing one) and counted in the `X-OOV-Ids` header and the metrics.
  - `user_id` is required. A user feature left out is the missing value (`missing` in the
    metadata).
  - `history`: the user's clicked item ids, oldest first, newest last, any length. Padding values
    (`padding` in the metadata: 0 for dense ids) are dropped, the newest H ids are kept, and
    padding fills them up to the export's history length H. Left out: empty.
  - An export made before raw ids takes dense ids only, range-checked (400 out of range).
  - `k` (top level; in the columnar format it may also sit in `inputs` as a scalar, as TF Serving
    would take it): 1..max_k, default min(100, max_k).
  - At most `max_batch` users per request.
Answers hold up to k items per user, best first (fewer only when a ScaNN index searches partitions
holding fewer than k items; see `servable.Servable.top_k`). A multi-interest export (metadata's
`num_interests` K > 1, MIND) is answered alike: its models search with the K interest vectors and
merge the results by score themselves (`uma2_tf.export.merge_interests`).
Anything else gets HTTP 400 with {"error": "..."} naming the field; an unknown model name gets 404,
an unknown path 404, a wrong method 405. Every answer carries the served version in the
`X-Model-Version` header.

What a client sends never gets a 500: every error is a 4xx with a JSON {"error": ...} (client text
in it escaped where JSON cannot carry it, long messages cut). The HTTP layer (`transport`, limits
set by `pipelines.serve`'s flags) refuses before the app sees them: a body over max_body_bytes
(413, before it is read), a request line and headers over max_header_bytes (431/414), a request not
whole within read_timeout (408), a connection over max_connections (503), bytes that are not HTTP
(400); it closes idle connections after idle_timeout. A 500 is a bug of the server, logged once.
Logs never hold a client's raw text (escaped: no control characters, no lone surrogates), and a
client that goes away mid-request is one line.

    curl http://127.0.0.1:8501/monitoring/prometheus/metrics   # Prometheus text format

serves the metrics of `monitoring` (requests by endpoint and status, errors, latency, users per
request, OOV ids, the served version) at TF Serving's path.

The server serves the newest version in the export dir that loads and polls the dir every
`poll_seconds`: a higher version is loaded and warmed up in the background once its files stopped
changing, while the old one keeps answering, then swapped in by replacing one reference. A request
uses the version it started with, so none fails during a swap. A version that fails to load is
logged and reported by the status endpoint; it is tried again when its files change (see
`versions`), and the old one serves meanwhile.

This module is the app; `servable` (a loaded version, the micro-batcher), `parsing` (the request
checks), `versions` (the poller and the swap), `transport` (the HTTP protocol and its limits) and
`monitoring` (metrics, log escaping) hold the rest.
"""
from __future__ import annotations

import uma2_tf  # noqa: F401  (before TensorFlow: selects tf_keras)

import contextlib
import time

import numpy as np
import orjson
from absl import logging
from fastapi import FastAPI, Request
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect

from uma2_tf.serving import loader, monitoring
from uma2_tf.serving.parsing import parse_request
from uma2_tf.serving.servable import MicroBatcher, RequestError, Servable
from uma2_tf.serving.versions import ModelManager

SERVABLE_VARIANTS = (loader.RETRIEVAL_MODEL, loader.BRUTE_FORCE_MODEL)
# Ids of a predict request the export does not know (answered all the same), in every answer.
OOV_HEADER = "X-OOV-Ids"

# A body above this is parsed on a pool thread: checking a few MB of ids in Python takes long enough
# to stall every other request if the event loop did it. A usual body (kB) stays on the loop.
PARSE_INLINE_BYTES = 64 << 10
# The longest error message an answer carries (one naming thousands of unknown fields is cut).
MAX_ERROR_CHARS = 2000

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


def _error(message: str, status_code: int, version: int | None = None) -> Response:
  """{"error": message}: cut to MAX_ERROR_CHARS, lone surrogates (a JSON body can hold "\\ud800"
  as a key, which Python keeps, but no UTF-8 answer can) written as their escape."""
  if len(message) > MAX_ERROR_CHARS:
    message = f"{message[:MAX_ERROR_CHARS]}... ({len(message) - MAX_ERROR_CHARS} more characters)"
  message = message.encode("utf-8", "backslashreplace").decode("utf-8")
  return _json({"error": message}, status_code, version)


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
  # Exports made before multi-interest towers exported hold single-vector towers only.
  about["num_interests"] = int(servable.metadata.get("num_interests", 1))
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
  """The FastAPI app serving `export_dir`'s newest loadable version as `model_name`.

  Loads that version before returning (so a bad export dir fails here, not on the first request;
  broken versions above it are logged and skipped); the poller that picks up newer versions runs
  while the app does (its lifespan). The HTTP limits are the protocol's: run it with
  `transport.http_protocol(...)`, as `pipelines.serve` does.
  Raises FileNotFoundError (no export dir / no version), ImportError (the ScaNN variant without
  scann), ValueError (bad arguments, or no version loads).
  """
  if variant not in SERVABLE_VARIANTS:
    raise ValueError(f"variant must be one of {', '.join(SERVABLE_VARIANTS)}, got {variant!r}")
  if poll_seconds <= 0:
    raise ValueError(f"poll_seconds must be > 0, got {poll_seconds}")
  if max_batch < 1:
    raise ValueError(f"max_batch must be >= 1, got {max_batch}")
  manager = ModelManager(export_dir, variant, poll_seconds)
  batcher = MicroBatcher(max_rows=max_batch)
  monitoring.track_version(model_name, lambda: manager.current.version)

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
    return _error(f"Servable not found for request: model {name!r} (this server serves "
                  f"{model_name!r})", 404)

  def answered(endpoint: str, response: Response, start: float) -> Response:
    monitoring.count_request(endpoint, response.status_code, time.perf_counter() - start)
    return response

  @app.exception_handler(StarletteHTTPException)
  async def http_error(request: Request, exc: StarletteHTTPException):
    # TF Serving's {"error": ...} everywhere (unknown paths, wrong methods).
    monitoring.count_request(monitoring.endpoint_of(request.url.path), exc.status_code)
    return _error(str(exc.detail), exc.status_code)

  @app.exception_handler(Exception)
  async def server_error(request: Request, exc: Exception):
    # Client mistakes never get here (the endpoints answer them): this is a bug, so log it whole.
    # (Starlette re-raises it after this answer, and uvicorn logs it once more.)
    monitoring.count_request(monitoring.endpoint_of(request.url.path), 500)
    logging.error("%s %s failed", request.method, monitoring.escape(request.url.path), exc_info=exc)
    return _error(f"internal error: {type(exc).__name__}: {exc}", 500)

  @app.post("/v1/models/{name}:predict")
  async def predict_endpoint(name: str, request: Request):
    start = time.perf_counter()
    servable = manager.current  # This request's version, whatever swaps happen meanwhile.
    if name != model_name:
      return answered("predict", not_found(name), start)
    try:
      raw = await request.body()
    except ClientDisconnect:  # Gone, or cut off by the HTTP layer: it logged and counted that.
      return Response(status_code=499)
    # Validation is numpy on one request (tens of microseconds): done on the event loop; the model
    # call runs on the micro-batcher's thread and is awaited, so no pool thread waits on it.
    try:
      if len(raw) > PARSE_INLINE_BYTES:
        features, k, row_format = await run_in_threadpool(parse_request, raw, servable, max_batch)
      else:
        features, k, row_format = parse_request(raw, servable, max_batch)
    except RequestError as e:
      return answered("predict", _error(str(e), 400, servable.version), start)
    except RecursionError:  # A check that recursed into a deeply nested value.
      return answered("predict", _error("request body is nested too deeply", 400,
                                        servable.version), start)
    except Exception as e:  # noqa: BLE001  A parsing bug, but the body caused it: 400, logged.
      logging.error("parsing a predict body failed (answered 400): %s: %s", type(e).__name__,
                    monitoring.escape(e), exc_info=e)
      return answered("predict", _error(f"request body could not be parsed ({type(e).__name__})",
                                        400, servable.version), start)
    monitoring.observe_batch(len(next(iter(features.values()))))
    try:
      result = await batcher.top_k(servable, features, k)
    except Exception as e:  # noqa: BLE001  The model failed: the server's fault, logged once.
      logging.error("version %d failed on a predict batch: %s: %s", servable.version,
                    type(e).__name__, monitoring.escape(e), exc_info=e)
      return answered("predict", _error(f"internal error: {type(e).__name__}", 500,
                                        servable.version), start)
    ids, scores, oov_ids = result
    oov = int(np.sum(oov_ids))
    monitoring.count_oov(oov)
    if any(len(row) < k for row in ids):
      _warn_short(servable, k)
    if row_format:
      payload = {"predictions": [{"item_ids": i, "scores": s} for i, s in zip(ids, scores)]}
    else:
      payload = {"outputs": {"item_ids": ids, "scores": scores}}
    response = _json(payload, 200, servable.version)
    response.headers[OOV_HEADER] = str(oov)
    return answered("predict", response, start)

  @app.get("/v1/models/{name}")
  def status_endpoint(name: str):
    start = time.perf_counter()
    if name != model_name:
      return answered("status", not_found(name), start)
    return answered("status", _json({"model_version_status": manager.status()}, 200,
                                    manager.current.version), start)

  @app.get("/v1/models/{name}/metadata")
  def metadata_endpoint(name: str):
    start = time.perf_counter()
    if name != model_name:
      return answered("metadata", not_found(name), start)
    servable = manager.current
    return answered("metadata", _json(_model_metadata(model_name, servable), 200,
                                      servable.version), start)

  @app.get(monitoring.PROMETHEUS_PATH)
  def metrics_endpoint():
    start = time.perf_counter()
    body, content_type = monitoring.exposition()
    return answered("metrics", Response(body, media_type=content_type), start)

  return app

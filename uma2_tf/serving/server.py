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
holding fewer than k items; see `servable.Servable.top_k`).
Anything else gets HTTP 400 with {"error": "..."} naming the field; an unknown model name gets 404.
Every answer carries the served version in the `X-Model-Version` header.

The server serves the highest version in the export dir and polls it every `poll_seconds`: a
higher version is loaded and warmed up in the background while the old one keeps answering, then
swapped in by replacing one reference. A request uses the version it started with, so none fails
during a swap. A version that fails to load is logged and skipped; the old one stays.

This module is the app; `servable` (a loaded version, the micro-batcher), `parsing` (the request
checks) and `versions` (the poller and the swap) hold the rest.
"""
from __future__ import annotations

import uma2_tf  # noqa: F401  (before TensorFlow: selects tf_keras)

import contextlib

import orjson
from absl import logging
from fastapi import FastAPI, Request
from fastapi.responses import Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from uma2_tf.serving import loader
from uma2_tf.serving.parsing import parse_request
from uma2_tf.serving.servable import MicroBatcher, RequestError, Servable
from uma2_tf.serving.versions import ModelManager

SERVABLE_VARIANTS = (loader.RETRIEVAL_MODEL, loader.BRUTE_FORCE_MODEL)

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

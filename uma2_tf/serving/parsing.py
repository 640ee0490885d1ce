"""Request parsing: every check a client can fail, in plain Python/numpy before the model runs.

    features, k, row_format = parse_request(raw_body, servable, max_batch=256)
    # features: {input name: array [B] or [B, H]}; row_format: True for `instances`

A malformed body raises `RequestError` naming the field. The rules it enforces are the HTTP API's,
listed in `uma2_tf.serving.server`'s docstring.
"""
from __future__ import annotations

import json

import numpy as np

from uma2_tf.serving import loader
from uma2_tf.serving.servable import K, USER_ID, RequestError, Servable

_TOP_LEVEL = ("instances", "inputs", K, "signature_name")


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


def _looked_up(value, where: str, name: str, servable: Servable):
  """A value of an input the export looks up: an integer or a string, as its metadata says;
  an unknown one is the model's to map and count, not an error."""
  if servable.dtype(name) == "string":
    if not isinstance(value, str):
      raise RequestError(f"{where}: expected a string (this export's {name} values are strings), "
                         f"got {_show(value)}")
    return value
  value = _integer(value, where)
  if not -2**63 <= value < 2**63:
    raise RequestError(f"{where}: {value} is outside int64")
  return value


def _scalar_id(value, where: str, name: str, vocab_size: int, servable: Servable):
  if name in servable.lookups:
    return _looked_up(value, where, name, servable)
  value = _integer(value, where)
  low = 1 if name == USER_ID else 0
  if not low <= value < vocab_size:
    what = f"unknown user id {value}" if name == USER_ID else f"{value} is out of range"
    raise RequestError(f"{where}: {what}; expected {low}..{vocab_size - 1}")
  return value


def _history(value, where: str, name: str, length: int, vocab_size: int,
             servable: Servable) -> list:
  if not isinstance(value, list):
    raise RequestError(f"{where}: expected an array of item ids, got {_show(value)}")
  items = []
  padding = servable.missing(name)
  for j, item in enumerate(value):
    if name in servable.lookups:
      item = _looked_up(item, f"{where}[{j}]", name, servable)
    else:
      item = _integer(item, f"{where}[{j}]")
      if not 0 <= item < vocab_size:
        raise RequestError(f"{where}[{j}]: unknown item id {item}; expected 1..{vocab_size - 1} "
                           "(0 is padding)")
    if item != padding:
      items.append(item)
  items = items[len(items) - length:] if len(items) > length else items  # The newest H.
  return items + [padding] * (length - len(items))


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
      columns[name].append(_scalar_id(instance.get(name, servable.missing(name)),
                                      f"{where}.{name}", name, vocab_size, servable))
    for name, (length, vocab_size) in servable.list_inputs.items():
      columns[name].append(_history(instance.get(name, []), f"{where}.{name}", name, length,
                                    vocab_size, servable))
  return {name: servable.column(values, name) for name, values in columns.items()}


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
    values = inputs.get(name, [servable.missing(name)] * batch)
    if not isinstance(values, list) or len(values) != batch:
      raise RequestError(f"inputs.{name}: expected an array of {batch} integers (one per user_id), "
                         f"got {_show(values)}")
    features[name] = servable.column(
        [_scalar_id(v, f"inputs.{name}[{i}]", name, vocab_size, servable)
         for i, v in enumerate(values)], name)
  for name, (length, vocab_size) in servable.list_inputs.items():
    rows = inputs.get(name, [[]] * batch)
    if not isinstance(rows, list) or len(rows) != batch:
      raise RequestError(f"inputs.{name}: expected an array of {batch} arrays of item ids (one per "
                         f"user_id), got {_show(rows)}")
    features[name] = servable.column(
        [_history(row, f"inputs.{name}[{i}]", name, length, vocab_size, servable)
         for i, row in enumerate(rows)], name).reshape(batch, length)
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

"""Validation of request records before anything trains on them.

Every reader (simulator, real-log builders) passes each record through a `RecordValidator`. A
malformed record raises one `InvalidRecordError` naming the request id, the field and what was
expected (policy `error`, the default), or is skipped and counted per reason (policy `skip`); the
counts are written next to the run's outputs so a skipped record is never silent.

    validator = RecordValidator(schema, policy="skip")
    clean = [r for r in records if validator.check(r)]
    validator.write_report(output_dir)     # validation.json: counts per reason, first messages

Rules (ids follow the schema's convention: 0 is padding, real ids are 1..size-1):
  missing_field         a field of the record is absent
  not_integer           a field holds something other than integers of the right rank
  length_mismatch       `clicked` does not have one value per `exposed` item (or `recalled_stage`
                        one per `recalled` item)
  invalid_click         a click is not 0 or 1
  id_out_of_range       a user/item id is not in 1..size-1, or a user feature not in 0..size-1
  duplicate_id          an item appears twice in `exposed` or in `recalled` (a history may repeat
                        items: users re-consume)
  exposed_not_recalled  an exposed item is missing from `recalled` (exposure is a subset of recall)
"""
from __future__ import annotations

import collections
import json
import os
from typing import Any, Mapping

import numpy as np

from uma2_tf.data import schema as schema_lib

POLICIES = ("error", "skip")
REASONS = ("missing_field", "not_integer", "length_mismatch", "invalid_click", "id_out_of_range",
           "duplicate_id", "exposed_not_recalled")
REPORT_FILE = "validation.json"
_MAX_EXAMPLES = 20


class InvalidRecordError(ValueError):
  """A request record breaks the schema. `reason` is one of `REASONS`."""

  def __init__(self, message: str, reason: str, request_id: Any = None, field: str | None = None):
    super().__init__(message)
    self.reason = reason
    self.request_id = request_id
    self.field = field


class RecordValidator:
  """Checks request records (dicts of ints and int arrays) against a `LogSchema`.

  Args:
    schema: the dataset's id spaces and user features.
    policy: `error` raises on the first bad record; `skip` makes `check` return False and counts it.
    source: where records come from (a file name), prefixed to every message.
  """

  def __init__(self, schema: schema_lib.LogSchema, policy: str = "error", source: str = ""):
    if policy not in POLICIES:
      raise ValueError(f"validation policy must be one of {POLICIES}, got {policy!r}")
    self.schema = schema
    self.policy = policy
    self.source = source
    self.checked = 0
    self.skipped = collections.Counter()
    self.examples: list[str] = []

  def check(self, record: Mapping[str, Any]) -> bool:
    """True if `record` is valid; False (policy skip) or `InvalidRecordError` (policy error)."""
    self.checked += 1
    try:
      _check_record(record, self.schema)
    except InvalidRecordError as e:
      if self.source:
        e.args = (f"{self.source}: {e.args[0]}",)
      if self.policy == "error":
        raise
      self.skipped[e.reason] += 1
      if len(self.examples) < _MAX_EXAMPLES:
        self.examples.append(str(e))
      return False
    return True

  def report(self) -> dict:
    return {
        "policy": self.policy,
        "source": self.source,
        "checked": self.checked,
        "skipped": sum(self.skipped.values()),
        "skipped_by_reason": {reason: self.skipped.get(reason, 0) for reason in REASONS},
        "first_messages": list(self.examples),
    }

  def write_report(self, directory: str) -> str:
    """Writes `validation.json` into `directory` (atomically) and returns its path."""
    os.makedirs(directory, exist_ok=True)
    path = os.path.join(directory, REPORT_FILE)
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
      json.dump(self.report(), f, indent=2)
    os.replace(tmp, path)
    return path


def _check_record(record: Mapping[str, Any], schema: schema_lib.LogSchema) -> None:
  rid = record.get(schema_lib.REQUEST_ID, "?")

  def fail(reason: str, field: str, expected: str):
    raise InvalidRecordError(f"request {rid}: field '{field}': {expected}", reason, rid, field)

  for field in schema_lib.record_fields(schema):
    if field not in record:
      fail("missing_field", field, "is missing")

  def scalar(field: str) -> int:
    value = np.asarray(record[field])
    if value.ndim != 0 or not np.issubdtype(value.dtype, np.integer):
      fail("not_integer", field, f"expected one integer, got {record[field]!r}")
    return int(value)

  def int_list(field: str) -> np.ndarray:
    value = np.asarray(record[field])
    if value.size == 0:
      return value.reshape(0).astype(np.int64)
    if value.ndim != 1 or not np.issubdtype(value.dtype, np.integer):
      fail("not_integer", field, f"expected a list of integers, got {record[field]!r}")
    return value

  for field in (schema_lib.REQUEST_ID, schema_lib.DAY):
    scalar(field)
  user_id = scalar(schema_lib.USER_ID)
  if not 1 <= user_id < schema.num_users:
    fail("id_out_of_range", schema_lib.USER_ID,
         f"expected 1..{schema.num_users - 1}, got {user_id}")
  for name, size in schema.user_features.items():
    value = scalar(name)
    if not 0 <= value < size:
      fail("id_out_of_range", name, f"expected 0..{size - 1}, got {value}")

  lists = {field: int_list(field) for field in schema.list_fields}
  for field in schema_lib.ITEM_LIST_FIELDS:
    ids = lists[field]
    bad = ids[(ids < 1) | (ids >= schema.num_items)]
    if bad.size:
      fail("id_out_of_range", field,
           f"item ids must be in 1..{schema.num_items - 1}, got {int(bad[0])}")

  exposed, clicked, recalled = (lists[schema_lib.EXPOSED], lists[schema_lib.CLICKED],
                                lists[schema_lib.RECALLED])
  if clicked.shape != exposed.shape:
    fail("length_mismatch", schema_lib.CLICKED,
         f"expected one 0/1 per exposed item ({exposed.size}), got {clicked.size} values")
  bad = clicked[(clicked != 0) & (clicked != 1)]
  if bad.size:
    fail("invalid_click", schema_lib.CLICKED, f"expected 0 or 1, got {int(bad[0])}")
  for field, ids in ((schema_lib.EXPOSED, exposed), (schema_lib.RECALLED, recalled)):
    if ids.size > 1:
      ordered = np.sort(ids)
      dup = ordered[1:][ordered[1:] == ordered[:-1]]
      if dup.size:
        fail("duplicate_id", field, f"item {int(dup[0])} appears more than once")
  missing = exposed[~np.isin(exposed, recalled)]
  if missing.size:
    fail("exposed_not_recalled", schema_lib.EXPOSED,
         f"exposed item {int(missing[0])} is not in 'recalled' "
         f"(exposure must be a subset of recall)")
  if schema.stages:
    stage = lists[schema_lib.RECALLED_STAGE]
    if stage.shape != recalled.shape:
      fail("length_mismatch", schema_lib.RECALLED_STAGE,
           f"expected one stage per recalled item ({recalled.size}), got {stage.size} values")
    bad = stage[(stage < 0) | (stage > len(schema.stages))]
    if bad.size:
      fail("id_out_of_range", schema_lib.RECALLED_STAGE,
           f"expected 0..{len(schema.stages)} (0 = unknown, else an index into "
           f"{list(schema.stages)}), got {int(bad[0])}")
  if not schema.has_recall_log and not np.array_equal(np.sort(recalled), np.sort(exposed)):
    fail("exposed_not_recalled", schema_lib.RECALLED,
         "the schema has no recall log, so 'recalled' must be exactly the exposed items")

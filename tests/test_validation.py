"""The record validator: each malformed record is named by request id and field, or counted."""
import json

import numpy as np
import pytest

from uma2_tf.data import schema as schema_lib
from uma2_tf.data.validation import InvalidRecordError, RecordValidator

SCHEMA = schema_lib.LogSchema(num_users=11, num_items=101, user_features={"age": 5},
                              item_features={"category": 4})


def good_record(**overrides):
  record = {"request_id": 7, "day": 1, "user_id": 3, "age": 2, "history": np.array([9, 9, 4]),
            "exposed": np.array([1, 2, 3]), "clicked": np.array([0, 1, 0]),
            "recalled": np.array([5, 1, 2, 3, 8])}
  record.update(overrides)
  return record


BAD = [
  ("length_mismatch", "clicked", dict(clicked=np.array([0, 1]))),
  ("invalid_click", "clicked", dict(clicked=np.array([0, 2, 0]))),
  (
    "id_out_of_range",
    "exposed",
    dict(exposed=np.array([1, 2, 101]), recalled=np.array([1, 2, 101])),
  ),
  ("id_out_of_range", "recalled", dict(recalled=np.array([1, 2, 3, -4]))),
  ("id_out_of_range", "history", dict(history=np.array([0]))),
  ("id_out_of_range", "user_id", dict(user_id=11)),
  ("id_out_of_range", "user_id", dict(user_id=-1)),
  ("id_out_of_range", "age", dict(age=5)),
  ("exposed_not_recalled", "exposed", dict(recalled=np.array([1, 2, 8]))),
  ("duplicate_id", "exposed", dict(exposed=np.array([1, 2, 2]))),
  ("duplicate_id", "recalled", dict(recalled=np.array([1, 2, 3, 3]))),
  ("not_integer", "recalled", dict(recalled=np.array([1.5, 2.0]))),
  ("not_integer", "day", dict(day="monday")),
]


def test_valid_record_passes_and_history_may_repeat():
  validator = RecordValidator(SCHEMA)
  assert validator.check(good_record())
  assert validator.check(good_record(history=np.array([], np.int64)))
  assert validator.report()["checked"] == 2 and validator.report()["skipped"] == 0


@pytest.mark.parametrize("reason,field,overrides", BAD)
def test_error_policy_names_request_and_field(reason, field, overrides):
  with pytest.raises(InvalidRecordError) as e:
    RecordValidator(SCHEMA, source="logs.jsonl").check(good_record(**overrides))
  assert e.value.reason == reason and e.value.field == field and e.value.request_id == 7
  assert str(e.value).startswith("logs.jsonl: request 7: field ") and f"'{field}'" in str(e.value)


def test_missing_field_is_named():
  record = good_record()
  del record["recalled"]
  with pytest.raises(InvalidRecordError, match="request 7: field 'recalled': is missing"):
    RecordValidator(SCHEMA).check(record)


def test_skip_policy_counts_per_reason_and_writes_report(tmp_path):
  validator = RecordValidator(SCHEMA, policy="skip")
  results = [validator.check(good_record(**o)) for _, _, o in BAD] + [
    validator.check(good_record())
  ]
  assert results == [False] * len(BAD) + [True]
  report = json.loads(open(validator.write_report(str(tmp_path))).read())
  assert report["checked"] == len(BAD) + 1
  assert report["skipped"] == len(BAD)
  expected = {}
  for reason, _, _ in BAD:
    expected[reason] = expected.get(reason, 0) + 1
  assert {k: v for k, v in report["skipped_by_reason"].items() if v} == expected
  assert report["first_messages"][0].startswith("request 7: field 'clicked'")


def test_unknown_policy_is_rejected():
  with pytest.raises(ValueError, match="policy"):
    RecordValidator(SCHEMA, policy="ignore")

"""The validation split: training records held out for model selection, never the test day.

    holdout = splits.holdout(dataset, "last_day")          # or "users:0.1", or "none"
    train = samplers.make_training_dataset(dataset, config, 512, keep=holdout.keep_train)
    evaluator = Evaluator(dataset, split="train", keep=holdout.keep_validation, name="validation")

It is carved from the `train` split when a run starts, the same way for every source (simulated,
MovieLens, RecFlow, KuaiRand, own logs): their records all carry `day` and `request_id`.

  last_day     the last day of the train split is validation; training reads the days before it
               (temporal, like the test day). The default.
  users:<s>    a share s of the users (chosen by the seed) each give their last training request
               (latest day, then highest request id) to validation; training reads the rest.
  none         no validation: nothing is held out, and nothing can be selected on.

The catalog's click counts (the popularity retriever, popularity^α negatives) were computed by the
builder over the whole train split, validation records included.

The sequential protocol (ComiRec / REMI, `--protocol=sequential`) holds out users instead:

    users = splits.user_holdout(dataset)     # 80/10/10 of the users, disjoint
    users.train_keep()                       # training reads the training users' records
    users.sources("test")                    # (("train", "test"), test user ids) to evaluate

A dataset built with by-user splits (`train`, `validation`, `test`: the interaction-sequence
builders) keeps its own; on a daily dataset (simulated, MovieLens, own logs) the users of all its
splits are permuted with `USER_SPLIT_SEED` and cut 80/10/10 (rounded down, the rest to training),
the same for every run, so runs of different seeds are evaluated on the same users.
"""
from __future__ import annotations

import dataclasses
from typing import Callable, Optional

import numpy as np

from uma2_tf.data import reading
from uma2_tf.data import schema as schema_lib

NONE, LAST_DAY, USERS = "none", "last_day", "users"
VALIDATION = "validation"
USER_SHARES = (0.8, 0.1, 0.1)
USER_SPLIT_SEED = 0


def parse(spec: str) -> tuple[str, float]:
  """("last_day", 0) / ("users", share) / ("none", 0) from a `--validation` value."""
  if spec in (NONE, LAST_DAY):
    return spec, 0.0
  kind, _, share = spec.partition(":")
  if kind == USERS:
    try:
      value = float(share)
    except ValueError:
      value = -1.0
    if 0.0 < value < 1.0:
      return USERS, value
  raise ValueError(f"validation must be last_day, users:<share in (0, 1)> or none, got {spec!r}")


@dataclasses.dataclass(frozen=True)
class Holdout:
  """Which records of the train split are validation.

  Attributes:
    spec: the `--validation` value it was made from.
    day: `last_day`: the held-out day (else None).
    request_ids: `users:<share>`: the held-out request ids, sorted (else empty).
  """

  spec: str
  day: Optional[int] = None
  request_ids: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros(0, np.int64))

  @property
  def enabled(self) -> bool:
    return self.day is not None or len(self.request_ids) > 0

  def is_validation(self, requests):
    """bool[n] over a parsed batch of requests (tf)."""
    import tensorflow as tf

    if self.day is not None:
      return tf.equal(requests[schema_lib.DAY], self.day)
    return is_member(requests[schema_lib.REQUEST_ID], self.request_ids)

  def keep_train(self, requests):
    import tensorflow as tf

    return tf.logical_not(self.is_validation(requests))

  def keep_validation(self, requests):
    return self.is_validation(requests)

  def train_keep(self) -> Optional[Callable]:
    """The predicate training reads with (None: every record)."""
    return self.keep_train if self.enabled else None


def holdout(dataset: reading.BuiltDataset, spec: str, seed: int = 0) -> Holdout:
  """The validation records of `dataset`'s train split under `spec` (see the module docstring)."""
  kind, share = parse(spec)
  if kind == NONE:
    return Holdout(spec)
  days, request_ids, users = _train_index(dataset)
  if kind == LAST_DAY:
    train_days = np.unique(days)
    if len(train_days) < 2:
      raise ValueError(f"--validation=last_day: {dataset.name}'s train split has "
                       f"{len(train_days)} day(s); it needs two (one to train on, the last to "
                       f"validate on); use --validation=users:<share> or none")
    return Holdout(spec, day=int(train_days[-1]))
  # users:<share>: the chosen users' last request (latest day, then highest request id).
  distinct = np.unique(users)
  rng = np.random.default_rng(seed)
  chosen = rng.choice(distinct, size=max(1, int(round(share * len(distinct)))), replace=False)
  order = np.lexsort((request_ids, days, users))  # by user, then day, then request id
  last = order[np.r_[users[order][1:] != users[order][:-1], True]]
  held = last[np.isin(users[last], chosen)]
  return Holdout(spec, request_ids=np.sort(request_ids[held]))


def _train_index(dataset: reading.BuiltDataset):
  """(day, request_id, user_id) of every train record, as int64 arrays."""
  days, request_ids, users = [], [], []
  for batch in reading.read_requests(dataset.split_files["train"], dataset.schema, 8192):
    days.append(batch[schema_lib.DAY].numpy())
    request_ids.append(batch[schema_lib.REQUEST_ID].numpy())
    users.append(batch[schema_lib.USER_ID].numpy())
  if not days:
    return (np.zeros(0, np.int64),) * 3
  return tuple(np.concatenate(x).astype(np.int64) for x in (days, request_ids, users))


@dataclasses.dataclass(frozen=True)
class UserHoldout:
  """The sequential protocol's users: training, validation and test, disjoint.

  Attributes:
    by_split: the dataset has its own `validation` and `test` splits of held-out users.
    users: else the user ids of each part ("train", "validation", "test"), sorted.
  """

  by_split: bool
  users: dict = dataclasses.field(default_factory=dict)
  spec: str = "sequential protocol: the validation users"
  enabled = True

  def train_keep(self) -> Optional[Callable]:
    if self.by_split:
      return None
    return users_keep(self.users["train"])

  def sources(self, part: str) -> tuple[tuple[str, ...], Optional[np.ndarray]]:
    """(splits to read, user ids or None for all) holding the sequences of `part`'s users."""
    if self.by_split:
      return (part,), None
    return ("train", "test"), self.users[part]


def user_holdout(dataset: reading.BuiltDataset) -> UserHoldout:
  """The sequential protocol's users of `dataset` (see the module docstring)."""
  if VALIDATION in dataset.split_files and "test" in dataset.split_files:
    return UserHoldout(by_split=True)
  ids = []
  for split in ("train", "test"):
    for batch in reading.read_requests(dataset.split_files[split], dataset.schema, 8192):
      ids.append(batch[schema_lib.USER_ID].numpy())
  distinct = np.unique(np.concatenate(ids)) if ids else np.zeros(0, np.int64)
  order = np.random.default_rng(USER_SPLIT_SEED).permutation(distinct)
  num_validation = int(len(order) * USER_SHARES[1])
  num_test = int(len(order) * USER_SHARES[2])
  if num_validation < 1 or num_test < 1:
    raise ValueError(f"--protocol=sequential: {dataset.name} has {len(distinct)} users, too few "
                     f"to hold out 10 % for validation and 10 % for test")
  parts = {"validation": order[:num_validation],
           "test": order[num_validation:num_validation + num_test],
           "train": order[num_validation + num_test:]}
  return UserHoldout(by_split=False, users={k: np.sort(v).astype(np.int64)
                                            for k, v in parts.items()})


def users_keep(users: np.ndarray) -> Callable:
  """A predicate on parsed requests: the records of `users` (sorted int64)."""

  def keep(requests):
    return is_member(requests[schema_lib.USER_ID], users)

  return keep


def is_member(values, sorted_ids: np.ndarray):
  """bool tensor: which of `values` (an int64 tensor) are in `sorted_ids` (sorted int64)."""
  import tensorflow as tf

  if not len(sorted_ids):
    return tf.zeros_like(values, tf.bool)
  ids = tf.constant(sorted_ids, tf.int64)
  pos = tf.minimum(tf.searchsorted(ids, values), len(sorted_ids) - 1)
  return tf.equal(tf.gather(ids, pos), values)

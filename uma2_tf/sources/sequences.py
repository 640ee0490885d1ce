"""Interaction sequences for the sequential protocol of ComiRec / REMI: the k-core filter, dense ids
and the 80/10/10 user split of the `Interactions` that `sequence_files` reads from the four public
files (its docstring: the file layouts and what is kept per dataset).

    interactions = sequence_files.read("gowalla", "/data/loc-gowalla_totalCheckins.txt")
    prepared = sequences.prepare(interactions, min_count=5, kcore_mode=sequences.ONE_PASS, seed=0)
    prepared.split_users["test"]          # (first, last) dense user id of the test users
    prepared.items_of(user)               # that user's dense item ids in time order

The TFDS builders (`sequence_builders`: `amazon_books`, `gowalla`, `retailrocket`, `taobao`) write
one request record per interaction from a `Prepared`. The protocol (Cen et al., KDD 2020; Xie et
al., RecSys 2023): users are split 80/10/10 into disjoint train / validation / test users; a
validation or test user's first 80 % of items are the history and the last 20 % the targets
(the evaluator's part, not this module's).

**What the reference does, and what is done here.** The reference is ComiRec's
`preprocess/data.py` (github.com/THUDM/ComiRec; Books, Taobao) and REMI's `process/data.py`
(github.com/Tokkiu/REMI; the same code, plus Gowalla and RetailRocket read from RecBole's atomic
files `gowalla.inter` and `retailrocket-view.inter`, which RecBole's conversion tools make from the
public files: every check-in; the `view` rows of events.csv, repeats kept, timestamps as written):

- Behaviours: Taobao keeps `pv` rows only (the reference's `if conts[3] != 'pv': continue`),
  RetailRocket `view` events only (`sequence_files` drops the other rows).
- Repeats are kept: a user who viewed, reviewed or checked in at an item twice has it twice in the
  sequence (and it counts twice in the k-core counts), as in the reference.
- k-core (`min_count`, default 5), **one pass by default** (`ONE_PASS`), as the reference code:
  items with at least k interactions (counted over every kept row) are the item vocabulary, then
  users with at least k interactions on those items are kept; nothing is counted again, so an item
  can be left with fewer than k interactions (or none: its users were dropped) and still be in the
  vocabulary, which is the candidate set. This is what the published statistics and item counts
  come from (ComiRec's `item_count = 1708531` for Taobao is its item_total + 1). `FIXED_POINT`
  repeats both steps until nothing changes: every kept item and user then has at least k
  interactions, and the vocabulary is the items left.
- Order: a user's interactions sorted by timestamp, ties in file order (the reference's stable
  `sort(key=timestamp)` over the lines in file order). Gowalla's times are read as UTC; RecBole
  converts them with `time.mktime` (the local time zone), which orders them the same way except
  around a daylight-saving change. Amazon's `unixReviewTime` is a day, so ties are common there.
- Dense ids, 1-based (0 is padding): items by their count over the kept rows before filtering,
  most frequent first, ties by first appearance in the file: the reference's `item_map`, id for
  id, in one-pass mode. Users: the kept users in order of first appearance, shuffled with
  `random.Random(seed).shuffle` (the reference's `random.seed(1230); random.shuffle(user_ids)`:
  with `seed=1230` and one-pass filtering the permutation is the reference's); the user at
  position p of the permutation gets id p + 1.
- Split: the first floor(0.8 n) users of the permutation are `train`, up to floor(0.9 n)
  `validation`, the rest `test` (`int(n * 0.8)`, `int(n * 0.9)` as the reference), so train users
  are ids 1..floor(0.8 n). Every interaction of a user is in the user's split. A split left empty
  (fewer than 6 users) is an error, as is nothing left after filtering.
- Taobao's item feature `category` is the `category_id` of the item's last `pv` row (ComiRec's
  `preprocess/category.py`), categories numbered in order of first appearance in the pv rows. The
  other datasets have no item feature.

The kept interactions are a few numpy arrays; Taobao's 89M pv rows take about 3 GB while they are
sorted.
"""
from __future__ import annotations

import dataclasses
import datetime
import os
import random

import numpy as np

from uma2_tf.sources import logs
from uma2_tf.sources import sequence_files

ONE_PASS = "one_pass"
FIXED_POINT = "fixed_point"
KCORE_MODES = (ONE_PASS, FIXED_POINT)
SPLITS = ("train", "validation", "test")
# The reference's `int(num_users * 0.8)` and `int(num_users * 0.9)`, the same float products.
TRAIN_FRACTION = 0.8
VALIDATION_END = 0.9
_EPOCH = datetime.datetime(1970, 1, 1)


# ----------------------------------------------------------------------------- filtering, ids


@dataclasses.dataclass(frozen=True)
class KCore:
  """What the k-core filter keeps.

  Attributes:
    rows: bool per interaction: kept.
    items: bool per item index: in the item vocabulary.
    rounds: passes over items then users (one pass: 1; fixed point: the last one removed nothing).
  """

  rows: np.ndarray
  items: np.ndarray
  rounds: int


def kcore(users: np.ndarray, items: np.ndarray, min_count: int, mode: str = ONE_PASS,
          num_users: int | None = None, num_items: int | None = None) -> KCore:
  """The k-core filter of (user, item) interactions, repeats counted (module docstring).

  `ONE_PASS`: items with >= min_count interactions are the vocabulary; users with >= min_count
  interactions on them are kept, with those interactions. `FIXED_POINT`: both steps again until
  nothing changes; the vocabulary is then the items left.
  """
  if mode not in KCORE_MODES:
    raise ValueError(f"kcore mode must be one of {KCORE_MODES}, got {mode!r}")
  if min_count < 1:
    raise ValueError(f"min_count must be >= 1, got {min_count}")
  users, items = np.asarray(users, np.int64), np.asarray(items, np.int64)
  num_users = int(users.max(initial=-1)) + 1 if num_users is None else num_users
  num_items = int(items.max(initial=-1)) + 1 if num_items is None else num_items
  rows = np.ones(users.shape, bool)
  rounds = 0
  while True:
    rounds += 1
    item_ok = np.bincount(items[rows], minlength=num_items) >= min_count
    kept = rows & item_ok[items]
    user_ok = np.bincount(users[kept], minlength=num_users) >= min_count
    kept &= user_ok[users]
    if mode == ONE_PASS:
      return KCore(rows=kept, items=item_ok, rounds=rounds)
    if kept.sum() == rows.sum():
      return KCore(rows=kept, items=np.bincount(items[kept], minlength=num_items) > 0,
                   rounds=rounds)
    rows = kept


def split_sizes(num_users: int) -> dict[str, int]:
  """Users per split: floor(0.8 n) train, floor(0.9 n) - floor(0.8 n) validation, the rest test."""
  train, validation_end = int(num_users * TRAIN_FRACTION), int(num_users * VALIDATION_END)
  return {"train": train, "validation": validation_end - train,
          "test": num_users - validation_end}


def user_permutation(num_users: int, seed: int) -> list[int]:
  """The users 0..n-1 (first-appearance order) in split order: `random.Random(seed).shuffle`,
  the reference's shuffle (`random.seed(1230); random.shuffle(user_ids)`) for seed 1230."""
  order = list(range(num_users))
  random.Random(seed).shuffle(order)
  return order


@dataclasses.dataclass(frozen=True)
class Prepared:
  """The filtered sequences with dense ids (1..n; 0 is padding).

  Attributes:
    items: int64, the dense item id of every kept interaction, by user id 1..n, then in time order.
    days: int64, aligned with `items`: the calendar day since the first kept interaction, 1-based.
    offsets: int64[n + 1]: user u's interactions are `items[offsets[u - 1]:offsets[u]]`.
    split_users: split -> (first, last) dense user id (inclusive).
    user_raw, item_raw: the raw id of dense id i at index i - 1.
    item_category: int64[num_items + 1], the dense category of each item (None: no category).
    category_raw: the raw id of dense category c at index c - 1.
    stats: the figures of `sequences.json` (module docstring of `sequence_builders`).
  """

  items: np.ndarray
  days: np.ndarray
  offsets: np.ndarray
  split_users: dict
  user_raw: list
  item_raw: list
  item_category: np.ndarray | None
  category_raw: list | None
  stats: dict

  @property
  def num_users(self) -> int:
    return len(self.user_raw)

  @property
  def num_items(self) -> int:
    return len(self.item_raw)

  def items_of(self, user: int) -> np.ndarray:
    return self.items[self.offsets[user - 1]:self.offsets[user]]

  def split_rows(self, split: str) -> slice:
    """The split's interactions: a slice of `items` (its users' ids are contiguous)."""
    first, last = self.split_users[split]
    return slice(int(self.offsets[first - 1]), int(self.offsets[last]))


def _utc(seconds: int) -> str:
  return (_EPOCH + datetime.timedelta(seconds=int(seconds))).isoformat() + "Z"


def prepare(interactions: sequence_files.Interactions, *, min_count: int = 5,
            kcore_mode: str = ONE_PASS, seed: int = 0) -> Prepared:
  """Filters, re-indexes, orders and splits `interactions` (module docstring)."""
  path = interactions.path
  users, items, times = interactions.users, interactions.items, interactions.times
  num_raw_users, num_raw_items = len(interactions.user_keys), len(interactions.item_keys)
  if not len(users):
    raise logs.LogFormatError(
        f"{path}: no interaction to read: no row with {interactions.info.get('kept', 'data')} "
        f"in its {interactions.info.get('lines', 0)} line(s)")
  core = kcore(users, items, min_count, kcore_mode, num_raw_users, num_raw_items)
  kept = np.flatnonzero(core.rows)
  if not len(kept):
    raise logs.LogFormatError(
        f"{path}: nothing is left after the {min_count}-core filter ({kcore_mode}): none of the "
        f"{num_raw_users} users has {min_count} interactions on the "
        f"{int(core.items.sum())} items with at least {min_count} ({len(users)} interactions "
        f"read)")

  # Items: most frequent first (counted over every kept row, before filtering), ties by first
  # appearance: the reference's item_map.
  raw_count = np.bincount(items, minlength=num_raw_items)
  vocabulary = np.flatnonzero(core.items)
  vocabulary = vocabulary[np.argsort(-raw_count[vocabulary], kind="stable")]
  dense_item = np.zeros(num_raw_items, np.int64)
  dense_item[vocabulary] = np.arange(1, len(vocabulary) + 1)

  kept_users = np.unique(users[kept])  # ascending: first-appearance order
  num_users = len(kept_users)
  sizes = split_sizes(num_users)
  empty = [split for split in SPLITS if not sizes[split]]
  if empty:
    raise logs.LogFormatError(
        f"{path}: {num_users} user(s) left after the {min_count}-core filter ({kcore_mode}); the "
        f"80/10/10 user split leaves {empty} empty (sizes {sizes}); at least 6 users are needed")
  order = user_permutation(num_users, seed)
  dense_user = np.zeros(num_raw_users, np.int64)
  dense_user[kept_users[order]] = np.arange(1, num_users + 1)

  # By user, then time, then file order: two stable sorts over the rows in file order.
  by_time = kept[np.argsort(times[kept], kind="stable")]
  rows = by_time[np.argsort(dense_user[users[by_time]], kind="stable")]
  row_users = dense_user[users[rows]]
  offsets = np.concatenate([[0], np.cumsum(np.bincount(row_users, minlength=num_users + 1)[1:])])
  seq_items = dense_item[items[rows]]
  seconds = times[rows] // interactions.units_per_second
  day_number = (seconds + 3600 * interactions.utc_offset_hours) // 86400
  days = day_number - day_number.min() + 1

  split_users, first = {}, 1
  for split in SPLITS:
    split_users[split] = (first, first + sizes[split] - 1)
    first += sizes[split]

  item_category = category_raw = None
  if interactions.categories is not None:
    # The category of an item's last kept row (ComiRec's category.py), over every kept row.
    reversed_items = items[::-1]
    present, first_in_reversed = np.unique(reversed_items, return_index=True)
    last_category = np.zeros(num_raw_items, np.int64)
    last_category[present] = interactions.categories[::-1][first_in_reversed]
    carried = last_category[vocabulary]
    categories = np.unique(carried)  # ascending: first-appearance order
    dense_category = np.zeros(len(interactions.category_keys), np.int64)
    dense_category[categories] = np.arange(1, len(categories) + 1)
    item_category = np.zeros(len(vocabulary) + 1, np.int64)
    item_category[1:] = dense_category[carried]
    category_raw = [interactions.category_keys[c] for c in categories]

  pairs = row_users * (len(vocabulary) + 1) + seq_items
  stats = {
      "file": os.path.basename(path),
      **interactions.info,
      "read": {"users": num_raw_users, "items": num_raw_items, "interactions": int(len(users))},
      "kcore": {"min_count": min_count, "mode": kcore_mode, "rounds": core.rounds,
                "users_removed": num_raw_users - num_users,
                "items_removed": num_raw_items - len(vocabulary),
                "interactions_removed": int(len(users) - len(kept))},
      "users": num_users,
      "items": int(len(vocabulary)),
      "items_with_interactions": int(len(np.unique(seq_items))),
      "interactions": int(len(rows)),
      "repeated_interactions": int(len(pairs) - len(np.unique(pairs))),
      "time": {"first": _utc(seconds.min()), "last": _utc(seconds.max()),
               "days": int(days.max()), "day_starts_at_utc_offset_hours":
                   interactions.utc_offset_hours},
      "splits": {split: {"users": sizes[split], "user_ids": list(split_users[split]),
                         "interactions": int(offsets[split_users[split][1]]
                                             - offsets[split_users[split][0] - 1])}
                 for split in SPLITS},
      "seed": seed,
  }
  if category_raw is not None:
    stats["categories"] = len(category_raw)
  return Prepared(items=seq_items, days=days, offsets=offsets, split_users=split_users,
                  user_raw=[interactions.user_keys[u] for u in kept_users[order]],
                  item_raw=[interactions.item_keys[i] for i in vocabulary],
                  item_category=item_category, category_raw=category_raw, stats=stats)

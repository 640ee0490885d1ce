"""The sequential protocol of ComiRec / REMI: held-out users, each cut into history and targets.

    evaluator = SequentialEvaluator(dataset, ks=(20, 50), splits=("test",))      # by-user splits
    evaluator = SequentialEvaluator(dataset, splits=("train", "test"), users=test_users)  # daily
    results = evaluator.evaluate(model)   # {"model": {"recall@20": ..., "ndcg@50": ...}, ...}

Users are disjoint between training, validation and test (80/10/10: the sequence datasets' own
splits, or `splits.user_split` over a daily dataset's users). A held-out user's clicks, in time
order (day, request id, then exposure position), are their sequence; the first
⌊0.8·n⌋ items are the history the user tower reads (its newest `max_history`), the rest the
targets. Users with no history or no target under that cut (n < 2) are left out. Every interest
retrieves from the whole corpus and the lists merge by score, an item reached by several interests
once at its best score (`metrics.top_k_items`). Metrics per K: Recall (distinct targets found /
distinct targets), HitRate, NDCG (`metrics.per_user_retrieval_metrics`' definition), Precision;
the popularity and (on simulated data) oracle retrievers are evaluated on the same users.
"""
from __future__ import annotations

import uma2_tf  # noqa: F401

from typing import Sequence

import numpy as np
import tensorflow as tf

from uma2_tf import evaluation
from uma2_tf.data import reading
from uma2_tf.data import schema as schema_lib
from uma2_tf.data import splits as splits_lib

HISTORY_SHARE = 0.8


class SequentialEvaluator(evaluation.Evaluator):
  """Test (or validation) users of the sequential protocol.

  Args:
    dataset: a `reading.BuiltDataset`.
    ks: cut-offs K (ComiRec's 20 and 50).
    max_history: history length fed to the user tower.
    splits: the splits whose records make the users' sequences.
    users: the user ids evaluated (sorted int64), or None for every user of `splits`.
    history_share: the share of a sequence that is history (the rest are the targets).
    name: what the users are called in messages.
  """

  ndcg = True

  def __init__(self, dataset: reading.BuiltDataset, ks: Sequence[int] = (20, 50),
               max_history: int = 50, splits: Sequence[str] = ("test",), users=None,
               history_share: float = HISTORY_SHARE, name: str | None = None):
    self._set_dataset(dataset, splits, ks)
    if not 0.0 < history_share < 1.0:
      raise ValueError(f"history_share must be in (0, 1), got {history_share}")
    self.splits = tuple(splits)
    self.split = self.splits[-1]
    self.name = name or "+".join(self.splits)
    self.max_history = max_history
    self.history_share = history_share
    self.selected = None if users is None else np.unique(np.asarray(users, np.int64))
    self.keep = None if self.selected is None else splits_lib.users_keep(self.selected)
    self.users, self.truth = self._test_users(max_history)
    self.last_per_user: dict[str, np.ndarray] = {}
    self.reference = self._reference_results()

  def _test_users(self, max_history: int):
    schema = self.dataset.schema
    events: dict[int, list] = {}  # user -> [(day, request id, position, item)]
    profile: dict[int, tuple] = {}  # user -> ((day, request id), feature values)
    for split in self.splits:
      for batch in reading.read_requests(self.dataset.split_files[split], schema, 4096,
                                         keep=self.keep):
        batch = {k: (v.to_list() if isinstance(v, tf.RaggedTensor) else v.numpy())
                 for k, v in batch.items()}
        for i, user in enumerate(batch[schema_lib.USER_ID]):
          user, when = int(user), (int(batch[schema_lib.DAY][i]),
                                   int(batch[schema_lib.REQUEST_ID][i]))
          clicks = [(*when, p, int(item)) for p, (item, c) in
                    enumerate(zip(batch[schema_lib.EXPOSED][i], batch[schema_lib.CLICKED][i]))
                    if c]
          events.setdefault(user, []).extend(clicks)
          if user not in profile or when < profile[user][0]:
            profile[user] = (when, [int(batch[name][i]) for name in schema.user_feature_names])
    histories, truth, kept = [], [], []
    for user in sorted(events):
      sequence = [item for *_, item in sorted(events[user])]
      cut = int(len(sequence) * self.history_share)
      if cut < 1 or cut >= len(sequence):
        continue
      history = sequence[:cut][-max_history:]
      histories.append(history + [schema_lib.PAD_ID] * (max_history - len(history)))
      truth.append(np.unique(np.asarray(sequence[cut:], np.int64)))
      kept.append(user)
    if not kept:
      raise evaluation.NoClicksError(
          f"{self.dataset.name}: no {self.name} user has a sequence of 2 or more clicks to split "
          f"into history and targets")
    users = {schema_lib.USER_ID: np.asarray(kept, np.int64),
             schema_lib.HISTORY: np.asarray(histories, np.int64)}
    for j, name in enumerate(schema.user_feature_names):
      users[name] = np.asarray([profile[u][1][j] for u in kept], np.int64)
    return users, truth

  def propensity_auc(self, model) -> dict:
    """Not measured under this protocol (its held-out users' records are not ER/RE samples)."""
    del model
    return {}

"""Routing collapse of a multi-interest tower: how concentrated each interest's routing row is.

    diagnostic = routing_collapse(tower, users)   # users: the evaluator's feature arrays
    diagnostic["max_weight"][k], diagnostic["entropy"][k], diagnostic["uniform_entropy"][k]

A collapsed interest routes (almost) all its weight to one history item: its largest weight is near
1 and its entropy near 0, whatever the history's length. Each row A_k of the routing matrix
(`Tower.interest_routing`) is normalised over the user's real history positions, then per
interest k the largest weight and the entropy −Σ_l Â_kl ln Â_kl (nats) are averaged over the users
with a history; a row that is all 0 (an interest MIND does not use for that user) is left out of
its interest's mean. `uniform_entropy[k]` is the mean of ln(history length) over the same users:
the entropy of rows that spread evenly, the ceiling to read `entropy[k]` against (per interest,
because MIND gives its later interests only to users with longer histories). The symptom REMI's
routing regulariser exists to cure.
"""
from __future__ import annotations

import uma2_tf  # noqa: F401

import numpy as np
import tensorflow as tf

from uma2_tf.data import schema as schema_lib


def routing_collapse(tower, users: dict, batch_size: int = 2048) -> dict | None:
  """The diagnostic over `users` (feature name -> array, one row per user); None when the tower
  has no routing matrix (a single-vector tower, or an object with only the two embeddings)."""
  if not hasattr(tower, "interest_routing"):
    return None
  totals = None
  ds = tf.data.Dataset.from_tensor_slices(users).batch(batch_size)
  num_users = 0
  for batch in ds:
    _, routing = tower.interest_routing(batch)
    if routing is None:
      return None
    routing = np.asarray(routing, np.float64)
    real = batch[schema_lib.HISTORY].numpy() != schema_lib.PAD_ID  # [B, L]
    lengths = real.sum(axis=1)
    has_history = lengths > 0
    routing = np.where(real[:, None, :], np.abs(routing), 0.0)[has_history]
    sums = routing.sum(axis=-1, keepdims=True)  # [B, K, 1]
    used = sums[..., 0] > 0  # [B, K]
    share = np.divide(routing, sums, out=np.zeros_like(routing), where=sums > 0)
    entropy = -np.sum(np.where(share > 0, share * np.log(np.where(share > 0, share, 1.0)), 0.0),
                      axis=-1)
    log_length = np.log(lengths[has_history])[:, None]  # [B, 1]
    batch_totals = np.stack([used.sum(0), np.where(used, share.max(-1), 0).sum(0),
                             np.where(used, entropy, 0).sum(0),
                             np.where(used, log_length, 0).sum(0)])
    totals = batch_totals if totals is None else totals + batch_totals
    num_users += int(has_history.sum())
  if totals is None or num_users == 0:
    return {"users": 0, "max_weight": [], "entropy": [], "uniform_entropy": []}
  counts = np.maximum(totals[0], 1)
  means = (totals[1:] / counts).round(6).tolist()
  return {"users": num_users, "max_weight": means[0], "entropy": means[1],
          "uniform_entropy": means[2]}


def routing_markdown(diagnostic: dict) -> str:
  """The diagnostic as a markdown table, one row per interest."""
  uniform = diagnostic["uniform_entropy"]
  if not isinstance(uniform, list):  # Written before the ceiling was per interest.
    uniform = [uniform] * len(diagnostic["entropy"])
  lines = [f"Routing of each interest over {diagnostic['users']} users' history (uniform rows "
           "would have the uniform entropy):", "",
           "| interest | largest weight | entropy | uniform entropy |", "|---:|---:|---:|---:|"]
  for k, values in enumerate(zip(diagnostic["max_weight"], diagnostic["entropy"], uniform)):
    lines.append(f"| {k + 1} | " + " | ".join(f"{v:.4f}" for v in values) + " |")
  return "\n".join(lines)

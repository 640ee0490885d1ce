"""Writing a file so that no reader ever sees it half-written: a temporary file, then a rename.

    atomic_files.atomic_write_text(path, json.dumps(results))
    atomic_files.atomic_savez(path, user_id=ids, recall=recall)

Files go through tf.io.gfile, so a dataset or a run can be written into (and read from) any file
system TensorFlow knows, gs:// included (a Beam preparation on Dataflow writes to a bucket).
"""
from __future__ import annotations

import io

import numpy as np


def atomic_write_bytes(path: str, data: bytes) -> None:
  """Writes `data` to a temporary file beside `path`, then renames it: never a half-written
  `path`."""
  import tensorflow as tf

  tmp = path + ".tmp"
  with tf.io.gfile.GFile(tmp, "wb") as f:
    f.write(data)
  tf.io.gfile.rename(tmp, path, overwrite=True)


def atomic_write_text(path: str, text: str) -> None:
  atomic_write_bytes(path, text.encode("utf-8"))


def atomic_savez(path: str, **arrays: np.ndarray) -> None:
  """`np.savez` that never leaves a half-written file at `path`."""
  buffer = io.BytesIO()
  np.savez(buffer, **arrays)
  atomic_write_bytes(path, buffer.getvalue())

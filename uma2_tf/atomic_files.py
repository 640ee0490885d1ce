"""Writing a file so that no reader ever sees it half-written: a temporary file, then a rename.

    atomic_files.atomic_write_text(path, json.dumps(results))
    atomic_files.atomic_savez(path, user_id=ids, recall=recall)
    atomic_files.check_writable(output_dir, "--output_dir")    # before hours of work, not after

Files go through tf.io.gfile, so a dataset or a run can be written into (and read from) any file
system TensorFlow knows, gs:// included (a Beam preparation on Dataflow writes to a bucket).
"""
from __future__ import annotations

import errno
import io
import os
import re

import numpy as np


class NotWritableError(ValueError):
  """A directory a job has to write into cannot be created or written (a ValueError: the pipelines
  print it as their one error line)."""


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


def check_writable(directory: str, what: str) -> None:
  """Whether a job can write into `directory`: creates it if it is missing, writes and removes a
  probe file in it, then removes what it created, leaving the file system as it was.

  Raises NotWritableError naming `what` (the flag that chose the directory), the directory and the
  file system's reason: a read-only or full disk, or a path through a file, is found before a job
  runs, not by its first save hours later.
  """
  import tensorflow as tf

  created = directory  # The topmost dir this check creates, removed again at the end.
  while True:
    parent = os.path.dirname(created.rstrip("/"))
    if not parent or parent == created or tf.io.gfile.exists(parent):
      break
    created = parent
  if tf.io.gfile.exists(directory):
    created = None
  probe = os.path.join(directory, f".write_probe.{os.getpid()}")
  try:
    tf.io.gfile.makedirs(directory)
    with tf.io.gfile.GFile(probe, "wb") as f:
      f.write(b"probe")
    tf.io.gfile.remove(probe)
    if created is not None:
      tf.io.gfile.rmtree(created)
  except tf.errors.OpError as e:
    raise NotWritableError(f"{what}: cannot write into {directory} ({e.message})") from None
  except OSError as e:
    raise NotWritableError(f"{what}: cannot write into {directory} "
                           f"({e.strerror or e})") from None


def out_of_space(error: BaseException) -> str | None:
  """"no space left on device writing <file>" if `error` is a full disk (an OSError with ENOSPC,
  or TensorFlow's ResourceExhaustedError of a save, which names the file); else None."""
  if isinstance(error, OSError) and error.errno == errno.ENOSPC:
    return f"no space left on device writing {error.filename or 'a file'}"
  message = getattr(error, "message", "")
  if "No space left on device" in message:
    found = re.search(r"(\S+?);? No space left on device", message)
    return f"no space left on device writing {found.group(1) if found else 'a file'}"
  return None

"""Where a TFDS builder of this package finds the files a user downloaded (TFDS's manual dir).

    directory = manual_files.manual_dir(dl_manager)    # "" when none was given
"""
from __future__ import annotations


def manual_dir(dl_manager) -> str:
  """The TFDS manual dir a builder was given, or "" when none was.

  TFDS's own `dl_manager.manual_dir` raises an AssertionError holding the builder's whole download
  instructions when the dir is missing; builders name the files they expect instead.
  """
  manual = getattr(dl_manager, "_manual_dir", None)
  try:
    manual = dl_manager.manual_dir
  except AssertionError:
    pass
  return str(manual) if manual else ""

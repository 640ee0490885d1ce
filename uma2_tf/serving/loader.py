"""Loads one exported version of a model (see `uma2_tf.export` for what a version holds).

    from uma2_tf.serving import loader
    version_dir = loader.latest_version("exports/uma2_default")     # .../exports/uma2_default/3
    predict, metadata = loader.load_model(version_dir)               # the ScaNN retrieval model
    out = predict(user_id=tf.constant([5], tf.int64), age=..., history=..., k=tf.constant(100))
    out["item_ids"], out["scores"]                                   # [B, k] each

    predict, metadata = loader.load_model(version_dir, "brute_force_model")  # stock TF ops only

`retrieval_model` holds ScaNN's custom ops (`Scann>...`), which stock TensorFlow does not know: a
process must import scann's TF ops before loading it, or loading fails with "Op type not registered
'Scann>...'". `load_model` does that import. `brute_force_model` and `query_model` need only
stock TensorFlow (and stock TF Serving).
"""
from __future__ import annotations

import uma2_tf  # noqa: F401  (before TensorFlow: selects tf_keras)

import json
import os

# The names of a version's parts. Defined here, not in `uma2_tf.export` (which imports them),
# because importing the exporter pulls in the trainer and TFDS, which a server does not need.
QUERY_MODEL = "query_model"
RETRIEVAL_MODEL = "retrieval_model"
BRUTE_FORCE_MODEL = "brute_force_model"
VARIANTS = (RETRIEVAL_MODEL, BRUTE_FORCE_MODEL, QUERY_MODEL)
METADATA = "metadata.json"
SIGNATURE = "serving_default"

SCANN_REQUIREMENT = "scann[tf]==1.4.2"

_REQUIRED_METADATA = ("num_items", "max_k", "inputs")


def list_versions(export_dir: str) -> list[int]:
  """The versions in `export_dir`, ascending: subdirectories named by a positive integer.

  Anything else (the exporter's temporary `.tmp-*` dirs, stray files) is ignored, as TF Serving
  does.
  """
  if not os.path.isdir(export_dir):
    raise FileNotFoundError(f"export dir {export_dir} does not exist "
                            "(write one with `make export`)")
  versions = []
  for name in os.listdir(export_dir):
    if name.isascii() and name.isdigit() and int(name) > 0 and os.path.isdir(
        os.path.join(export_dir, name)):
      versions.append(int(name))
  return sorted(versions)


def files_signature(version_dir: str) -> tuple | None:
  """What a version dir holds: (relative path, size, mtime in ns) of every file and subdir, sorted.

  Two equal signatures taken apart in time mean nothing was written in between, which is how a
  server tells a version that is still being copied in from a finished one (and a broken version
  that was fixed from one that was not). None if the dir changed while it was read.
  """
  entries = []
  try:
    for root, dirs, files in os.walk(version_dir, onerror=_raise):
      dirs.sort()
      for name in [*dirs, *sorted(files)]:
        path = os.path.join(root, name)
        stat = os.stat(path, follow_symlinks=False)
        entries.append((os.path.relpath(path, version_dir), stat.st_size, stat.st_mtime_ns))
  except OSError:  # A file or dir vanished under the walk (a copy or a rename under way).
    return None
  return tuple(entries)


def _raise(error: OSError) -> None:
  raise error


def latest_version(export_dir: str) -> str:
  """The directory of the highest version in `export_dir`, the one TF Serving would serve."""
  versions = list_versions(export_dir)
  if not versions:
    raise FileNotFoundError(f"export dir {export_dir} holds no version (no subdirectory named by a "
                            "positive integer; write one with `make export`)")
  return os.path.join(export_dir, str(versions[-1]))


def read_metadata(version_dir: str) -> dict:
  """The version's metadata.json, checked for the keys a server relies on."""
  path = os.path.join(version_dir, METADATA)
  if not os.path.exists(path):
    raise FileNotFoundError(f"{path} does not exist: {version_dir} is not an exported version")
  try:
    with open(path) as f:
      metadata = json.load(f)
  except ValueError as e:
    raise ValueError(f"{path} is not valid JSON: {e}") from None
  missing = [key for key in _REQUIRED_METADATA if key not in metadata] if isinstance(
      metadata, dict) else list(_REQUIRED_METADATA)
  if missing:
    raise ValueError(f"{path} lacks {missing}; was it written by `make export`?")
  return metadata


def import_scann_ops() -> None:
  """Registers ScaNN's TF ops in this process, or raises ImportError saying what to install."""
  import tensorflow as tf

  try:
    # `import scann` alone swallows a failed import of its TF ops (it works without TF), so the
    # module that loads the op library is imported by name: that import is what registers them.
    from scann.scann_ops.py import scann_ops  # noqa: F401
  except (ImportError, tf.errors.NotFoundError) as e:
    # NotFoundError: scann is installed but its op library does not match this TensorFlow.
    raise ImportError(
        f"the ScaNN variant ({RETRIEVAL_MODEL}) needs scann's TensorFlow ops, which failed to load "
        f"({type(e).__name__}: {e}); install them with `pip install '{SCANN_REQUIREMENT}'`, "
        f"or serve {BRUTE_FORCE_MODEL}, which needs only stock TensorFlow") from e


def load_model(version_dir: str, variant: str = RETRIEVAL_MODEL):
  """Loads one SavedModel of a version.

  Args:
    version_dir: `EXPORT_DIR/<version>`.
    variant: `retrieval_model` (ScaNN; imports scann first), `brute_force_model` or
      `query_model`.
  Returns:
    (signature, metadata): the `serving_default` concrete function, called with keyword tensors
    (`user_id`, the user features, `history`, and `k` for the retrieval variants), and the
    version's metadata.json as a dict.
  Raises:
    ValueError: an unknown variant, or a metadata.json that is not an export's.
    FileNotFoundError: the version or the variant is missing.
    ImportError: the ScaNN variant without scann's TF ops.
  """
  if variant not in VARIANTS:
    raise ValueError(f"unknown variant {variant!r}; expected one of {', '.join(VARIANTS)}")
  path = os.path.join(version_dir, variant)
  if not os.path.exists(os.path.join(path, "saved_model.pb")):
    raise FileNotFoundError(f"{path}/saved_model.pb does not exist: no {variant} in {version_dir}")
  metadata = read_metadata(version_dir)
  if variant == RETRIEVAL_MODEL:
    import_scann_ops()

  import tensorflow as tf

  loaded = tf.saved_model.load(path)
  if SIGNATURE not in loaded.signatures:
    raise ValueError(f"{path} has no {SIGNATURE!r} signature (has {sorted(loaded.signatures)})")
  return loaded.signatures[SIGNATURE], metadata

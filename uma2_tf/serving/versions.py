"""The served version and the background poller that swaps in newer ones (`server` runs it).

    manager = ModelManager("exports/uma2_default", "retrieval_model", poll_seconds=2.0)
    manager.start()              # polls in a thread from now on; manager.stop() ends it
    servable = manager.current   # the version one request uses, whatever swaps happen meanwhile
    manager.status()             # TF Serving's model_version_status entries, newest first

The constructor loads the newest version that loads, newest first: the errors of those above it are
logged and reported by `status`; it raises only if none loads. Then every poll looks at the versions
above the served one, newest first, and loads the first that is complete and not known to fail:
  - complete: its files (names, sizes, mtimes: `loader.files_signature`) did not change since the
    previous poll, so a version dir that appears before its files are all copied in is left alone
    until the copy ends (one the exporter renames in whole is loaded one poll after it appears);
  - a version that fails to load is tried again only once its files changed, and no sooner than a
    backoff that doubles with each failure (from 2 polls up to `max_backoff_seconds`).
A swap replaces one reference, so a request keeps the version it started with and none fails.
"""
from __future__ import annotations

import dataclasses
import os
import threading
import time

from absl import logging

from uma2_tf.serving import loader, monitoring
from uma2_tf.serving.servable import Servable, load_servable


def _freeze_heap(collect: bool = False) -> None:
  """Moves every object alive now out of the garbage collector's reach (`gc.freeze`).

  A loaded SavedModel leaves millions of long-lived Python objects; with them in the heap one full
  collection takes ~0.3 s (measured on the 1M-item bench export) and stops every request while it
  runs. Frozen, they are never scanned again, and collections see only what requests allocate.
  After a swap (`collect`) the old version's cycles are collected once before freezing again.
  """
  import gc
  if collect:
    gc.unfreeze()
    gc.collect()
  gc.freeze()


@dataclasses.dataclass
class _Failure:
  error: str  # "ExceptionType: message"
  signature: tuple | None  # The files it failed with; tried again only once they differ.
  attempts: int
  retry_at: float  # time.monotonic(): no attempt before (the backoff).


class ModelManager:
  """Holds the served version and swaps in newer ones found by polling the export dir."""

  def __init__(self, export_dir: str, variant: str, poll_seconds: float,
               max_backoff_seconds: float = 60.0):
    self.export_dir, self.variant, self.poll_seconds = export_dir, variant, poll_seconds
    self.max_backoff_seconds = max_backoff_seconds
    self._lock = threading.Lock()
    self._failed: dict[int, _Failure] = {}
    self._seen: dict[int, tuple | None] = {}  # version -> its files at the previous poll
    self._loading: int | None = None
    self._stop = threading.Event()
    self._thread: threading.Thread | None = None
    start = time.perf_counter()
    self._current = self._load_newest()
    _freeze_heap()
    logging.info("serving %s version %d (%s) from %s, loaded in %.1fs", variant,
                 self._current.version, self._current.version_dir, export_dir,
                 time.perf_counter() - start)

  def _load_newest(self) -> Servable:
    """The newest version that loads. Raises FileNotFoundError (no version), ImportError (the
    ScaNN variant without scann: no version would load) or ValueError (none loads)."""
    loader.latest_version(self.export_dir)  # FileNotFoundError when there is no version at all.
    versions = loader.list_versions(self.export_dir)
    for version in reversed(versions):
      try:
        return self._load(version)
      except ImportError:
        raise
      except Exception:  # noqa: BLE001  Logged and recorded by _load; an older one may load.
        continue
    errors = "; ".join(f"version {v}: {self._failed[v].error}" for v in reversed(versions))
    raise ValueError(f"no version in {self.export_dir} loads ({errors})")

  def _load(self, version: int) -> Servable:
    """Loads `version`, recording a failure (and its files) before re-raising it."""
    version_dir = os.path.join(self.export_dir, str(version))
    signature = loader.files_signature(version_dir)
    with self._lock:
      self._loading = version
    try:
      servable = load_servable(version_dir, self.variant)
    except Exception as e:
      error = f"{type(e).__name__}: {e}"
      with self._lock:
        self._loading = None
        failure = self._failed.get(version)
        attempts = failure.attempts + 1 if failure else 1
        backoff = min(self.max_backoff_seconds, self.poll_seconds * 2 ** attempts)
        self._failed[version] = _Failure(error, signature, attempts, time.monotonic() + backoff)
      monitoring.VERSION_LOADS.labels("error").inc()
      serving = getattr(self, "_current", None)
      logging.error("version %d (%s) failed to load (attempt %d; tried again once its files "
                    "change), %s: %s", version, version_dir, attempts,
                    f"still serving version {serving.version}" if serving else "trying older ones",
                    monitoring.escape(error, 2000))
      raise
    with self._lock:
      self._loading = None
      self._failed.pop(version, None)
    monitoring.VERSION_LOADS.labels("ok").inc()
    return servable

  @property
  def current(self) -> Servable:
    return self._current  # One reference read: atomic, never a half-swapped state.

  def status(self) -> list[dict]:
    """TF Serving's model_version_status entries, newest first."""
    with self._lock:
      current, loading = self._current, self._loading
      failed = {version: failure.error for version, failure in self._failed.items()}
    entries = [{"version": str(current.version), "state": "AVAILABLE",
                "status": {"error_code": "OK", "error_message": ""}}]
    if loading is not None and loading != current.version:
      entries.append({"version": str(loading), "state": "LOADING",
                      "status": {"error_code": "OK", "error_message": ""}})
    for version, error in failed.items():
      if version > current.version and version != loading:
        entries.append({"version": str(version), "state": "END",
                        "status": {"error_code": "UNKNOWN", "error_message": error}})
    return sorted(entries, key=lambda e: -int(e["version"]))

  def poll_once(self) -> bool:
    """Loads and swaps in the newest complete version above the served one; True if it swapped."""
    try:
      versions = loader.list_versions(self.export_dir)
    except OSError as e:  # The dir vanished or is unreadable: keep serving what is loaded.
      logging.warning("cannot list %s: %s; still serving version %d", self.export_dir, e,
                      self._current.version)
      return False
    listed = set(versions)
    with self._lock:  # Versions whose dirs went away are forgotten.
      for version in [v for v in self._failed if v not in listed]:
        del self._failed[version]
    for version in [v for v in self._seen if v not in listed]:
      del self._seen[version]

    now = time.monotonic()
    for version in reversed([v for v in versions if v > self._current.version]):
      signature = loader.files_signature(os.path.join(self.export_dir, str(version)))
      settled = signature is not None and signature == self._seen.get(version)
      self._seen[version] = signature
      if not settled:  # New, or still being written: looked at again next poll.
        continue
      failure = self._failed.get(version)
      if failure is not None and (failure.signature == signature or now < failure.retry_at):
        continue
      start = time.perf_counter()
      try:
        servable = self._load(version)
      except Exception:  # noqa: BLE001  Logged by _load; the served version serves on.
        continue
      self._swap(servable, time.perf_counter() - start)
      return True
    return False

  def _swap(self, servable: Servable, seconds: float) -> None:
    with self._lock:
      previous, self._current = self._current, servable
      for version in [v for v in self._seen if v <= servable.version]:
        del self._seen[version]
    logging.info("swapped version %d -> %d (%s), loaded and warmed up in %.1fs", previous.version,
                 servable.version, servable.version_dir, seconds)
    del previous  # Requests still holding it keep it alive; the collection below frees its cycles.
    _freeze_heap(collect=True)

  def _run(self) -> None:
    while not self._stop.wait(self.poll_seconds):
      try:
        self.poll_once()
      except Exception:  # noqa: BLE001  A poller that dies would silently freeze the version.
        logging.exception("polling %s failed; will retry", self.export_dir)

  def start(self) -> None:
    if self._thread is None:
      self._thread = threading.Thread(target=self._run, name="uma2-version-poller", daemon=True)
      self._thread.start()

  def stop(self) -> None:
    self._stop.set()
    if self._thread is not None:
      self._thread.join(timeout=60)
      self._thread = None

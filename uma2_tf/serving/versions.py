"""The served version and the background poller that swaps in newer ones (`server` runs it).

    manager = ModelManager("exports/uma2_default", "retrieval_model", poll_seconds=2.0)
    manager.start()              # polls in a thread from now on; manager.stop() ends it
    servable = manager.current   # the version one request uses, whatever swaps happen meanwhile
    manager.status()             # TF Serving's model_version_status entries, newest first

The constructor loads the highest version (raising if it cannot); later versions that fail to load
are logged, reported by `status` and never retried, while the loaded one keeps serving.
"""
from __future__ import annotations

import os
import threading
import time

from absl import logging

from uma2_tf.serving import loader
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


class ModelManager:
  """Holds the served version and swaps in newer ones found by polling the export dir."""

  def __init__(self, export_dir: str, variant: str, poll_seconds: float):
    self.export_dir, self.variant, self.poll_seconds = export_dir, variant, poll_seconds
    self._lock = threading.Lock()
    self._failed: dict[int, str] = {}  # version -> why it did not load; never retried
    self._loading: int | None = None
    self._stop = threading.Event()
    self._thread: threading.Thread | None = None
    start = time.perf_counter()
    self._current = load_servable(loader.latest_version(export_dir), variant)
    _freeze_heap()
    logging.info("serving %s version %d (%s) from %s, loaded in %.1fs", variant,
                 self._current.version, self._current.version_dir, export_dir,
                 time.perf_counter() - start)

  @property
  def current(self) -> Servable:
    return self._current  # One reference read: atomic, never a half-swapped state.

  def status(self) -> list[dict]:
    """TF Serving's model_version_status entries, newest first."""
    with self._lock:
      current, failed, loading = self._current, dict(self._failed), self._loading
    entries = [{"version": str(current.version), "state": "AVAILABLE",
                "status": {"error_code": "OK", "error_message": ""}}]
    if loading is not None:
      entries.append({"version": str(loading), "state": "LOADING",
                      "status": {"error_code": "OK", "error_message": ""}})
    for version, error in failed.items():
      if version > current.version:
        entries.append({"version": str(version), "state": "END",
                        "status": {"error_code": "UNKNOWN", "error_message": error}})
    return sorted(entries, key=lambda e: -int(e["version"]))

  def poll_once(self) -> bool:
    """Loads and swaps in the highest version if it is newer; True if it swapped."""
    try:
      versions = loader.list_versions(self.export_dir)
    except OSError as e:  # The dir vanished or is unreadable: keep serving what is loaded.
      logging.warning("cannot list %s: %s; still serving version %d", self.export_dir, e,
                      self._current.version)
      return False
    candidates = [v for v in versions if v > self._current.version and v not in self._failed]
    if not candidates:
      return False
    version = candidates[-1]
    version_dir = os.path.join(self.export_dir, str(version))
    with self._lock:
      self._loading = version
    start = time.perf_counter()
    try:
      servable = load_servable(version_dir, self.variant)
    except Exception as e:  # noqa: BLE001  Whatever broke the new version, the old one serves on.
      logging.error("version %d (%s) failed to load, still serving version %d: %s: %s", version,
                    version_dir, self._current.version, type(e).__name__, e)
      with self._lock:
        self._failed[version] = f"{type(e).__name__}: {e}"
        self._loading = None
      return False
    with self._lock:
      previous, self._current, self._loading = self._current, servable, None
    logging.info("swapped version %d -> %d (%s), loaded and warmed up in %.1fs", previous.version,
                 servable.version, version_dir, time.perf_counter() - start)
    del previous  # Requests still holding it keep it alive; the collection below frees its cycles.
    _freeze_heap(collect=True)
    return True

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

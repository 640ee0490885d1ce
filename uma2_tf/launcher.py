"""Local distributed jobs: one process per task of a cluster on one host, with its TF_CONFIG.

    cluster = launcher.cluster_spec("multi_worker", workers=2, ps=0)
    # cluster == {"worker": ["127.0.0.1:p", ...]}
    status = launcher.launch("multi_worker", workers=2, ps=0, train_args=["--epochs=1"])

`launch` runs `python -m pipelines.train --strategy=... <train_args>` once per task, streams each
process's output with a `[worker 1]` prefix, and stops every process when one fails (or when the
launcher itself is interrupted or sent SIGTERM), so a job never hangs on a dead peer.
`pipelines/launch.py` is its command line (`make train-distributed`).
"""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time


def free_ports(n: int, host: str = "127.0.0.1") -> list[int]:
  """n ports free on `host` now (held together while picked, so they differ)."""
  sockets = [socket.socket() for _ in range(n)]
  try:
    for s in sockets:
      s.bind((host, 0))
    return [s.getsockname()[1] for s in sockets]
  finally:
    for s in sockets:
      s.close()


def cluster_spec(strategy: str, workers: int, ps: int, host: str = "127.0.0.1") -> dict:
  """TF_CONFIG's "cluster" for a local job: {task type: ["host:port", ...]}."""
  if workers < 1:
    raise ValueError(f"--workers must be >= 1, got {workers}")
  sizes = {"worker": workers}
  if strategy == "parameter_server":
    if ps < 1:
      raise ValueError(f"--ps must be >= 1 with --strategy=parameter_server, got {ps}")
    sizes = {"chief": 1, "worker": workers, "ps": ps}
  ports = iter(free_ports(sum(sizes.values()), host))
  return {kind: [f"{host}:{next(ports)}" for _ in range(n)] for kind, n in sizes.items()}


def task_environments(cluster: dict) -> list[tuple[str, dict]]:
  """(label, TF_CONFIG) of every process of the cluster, chief or worker 0 first."""
  order = [kind for kind in ("chief", "worker", "ps") if kind in cluster]
  return [(f"{kind} {i}", {"cluster": cluster, "task": {"type": kind, "index": i}})
          for kind in order for i in range(len(cluster[kind]))]


class Job:
  """The job's processes, their streamed output, and stopping them together."""

  def __init__(self, commands: list[tuple[str, list[str], dict]]):
    self.processes = []
    self._print_lock = threading.Lock()
    self._threads = []
    for label, command, env in commands:
      process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                 start_new_session=True)
      self.processes.append((label, process))
      thread = threading.Thread(target=self._stream, args=(label, process), daemon=True)
      thread.start()
      self._threads.append(thread)

  def _stream(self, label: str, process: subprocess.Popen) -> None:
    for raw in iter(process.stdout.readline, b""):
      line = raw.decode("utf-8", "replace").rstrip("\n")
      with self._print_lock:
        print(f"[{label}] {line}", flush=True)

  def stop(self, grace_seconds: float) -> None:
    """SIGINT to every process still running (and its children), SIGKILL after the grace period.

    Not SIGTERM: in a multi_worker process TensorFlow's coordination service takes SIGTERM as a
    preemption notice and keeps training, so a SIGTERM'd worker runs on until it is killed.
    """
    for _, process in self.processes:
      if process.poll() is None:
        _signal_group(process, signal.SIGINT)
    deadline = time.monotonic() + grace_seconds
    for _, process in self.processes:
      try:
        process.wait(timeout=max(0.0, deadline - time.monotonic()))
      except subprocess.TimeoutExpired:
        _signal_group(process, signal.SIGKILL)
        process.wait()
    for thread in self._threads:
      thread.join(timeout=5)

  def wait(self, must_finish: list[str], grace_seconds: float) -> int:
    """Waits until the processes labelled `must_finish` exit 0, or any process fails.

    Returns 0 on success, else the failed process's exit status (1 if it was killed by a signal).
    """
    try:
      while True:
        for label, process in self.processes:
          code = process.poll()
          if code not in (None, 0):
            with self._print_lock:
              print(f"launch: {label} exited with status {code}; stopping the job", file=sys.stderr,
                    flush=True)
            return code if code > 0 else 1
        if all(process.poll() == 0 for label, process in self.processes if label in must_finish):
          return 0
        time.sleep(0.2)
    except KeyboardInterrupt:
      print("launch: interrupted; stopping the job", file=sys.stderr, flush=True)
      return 130
    finally:
      self.stop(grace_seconds)


def _signal_group(process: subprocess.Popen, sig: int) -> None:
  try:
    os.killpg(process.pid, sig)
  except ProcessLookupError:
    pass


def launch(strategy: str, workers: int, ps: int, train_args: list[str], host: str = "127.0.0.1",
           grace_seconds: float = 10.0) -> int:
  """Runs `pipelines.train train_args` as a local `strategy` job; returns its exit status."""
  if any(a.startswith("--strategy=") or a == "--strategy" for a in train_args):
    raise ValueError("give the strategy to the launcher (--strategy before `--`), "
                     "not to pipelines.train")
  cluster = cluster_spec(strategy, workers, ps, host)
  commands = []
  for label, tf_config in task_environments(cluster):
    env = dict(os.environ, TF_CONFIG=json.dumps(tf_config), PYTHONUNBUFFERED="1")
    commands.append((label, [sys.executable, "-m", "pipelines.train", f"--strategy={strategy}",
                             *train_args], env))
  print(f"launch: {strategy} job on {host}: " + json.dumps(cluster), flush=True)
  must_finish = ["chief 0"] if strategy == "parameter_server" else [label for label, *_ in commands]
  # A launcher stopped by SIGTERM (a scheduler, `kill`) stops its job too instead of orphaning it.
  previous = signal.signal(signal.SIGTERM, _exit_on_sigterm)
  try:
    job = Job(commands)
    # A parameter_server job's worker and ps processes only serve the chief's session and hold
    # nothing to save; blocked in `Server.join`, they would sit out the grace period.
    return job.wait(must_finish, 0.0 if strategy == "parameter_server" else grace_seconds)
  finally:
    signal.signal(signal.SIGTERM, previous)


def _exit_on_sigterm(signum, frame):
  del frame
  raise SystemExit(128 + signum)

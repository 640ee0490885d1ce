"""The `paper` part of `make bench` (not run by default: ~35 min on 2 cores): the user's
verbs at the paper's scale, each stage timed, with its peak memory.

    python -m pipelines.bench --only=paper                                  # every stage
    python -m pipelines.bench --only=paper --paper_stages=export,serve      # a run trained before
    figures = bench_paper.bench_paper(Settings(stages=("export", "serve")), free_port)

Stages, each a child process whose wall time and peak resident memory (the largest process of its
tree, from the kernel's high-water marks) are recorded:
  data    `make data DATASET=paper` (builds it if missing, else checks it: `paper_data_built`)
  train   `make train DATASET=paper RUN_DIR=<--paper_run_dir>`, from scratch: training
          (`paper_train_seconds`), the test day's evaluation (`paper_evaluate_seconds`), the rest
          (reading the logs, the evaluators' set-up); and the run's metrics
  export  `make export`: SavedModels, the ScaNN index and its check against brute force on the
          trained model's user embeddings (`paper_scann_*`, from metadata.json)
  serve   `pipelines.serve` on the export (its memory once loaded), then `pipelines.load_test`:
          `--serve_concurrency` clients for `--min_seconds`, one user of the 1.63M per request
The stage table is also written as markdown beside the figures (`paper_scale.md`).
"""
import dataclasses
import json
import os
import subprocess
import sys
import time
import urllib.request

STAGES = ("data", "train", "export", "serve")
PAPER_USERS = 1_630_000


@dataclasses.dataclass(frozen=True)
class Settings:
  """What the paper part runs (`pipelines/bench.py` fills it from its flags).

  Attributes:
    stages: of `STAGES`, run in that order.
    run_dir: the run the train stage trains from scratch and the export stage exports.
    export_dir: where the export stage writes and the serve stage serves from.
    data_dir: TFDS data dir of the `paper` world.
    report_dir: where paper_scale.md goes.
    concurrency, seconds: clients and duration of the serving load.
  """

  stages: tuple[str, ...] = STAGES
  run_dir: str = "runs/uma2_paper"
  export_dir: str = "exports/uma2_paper"
  data_dir: str = os.path.expanduser("~/tensorflow_datasets")
  report_dir: str = "reports"
  concurrency: int = 8
  seconds: float = 20.0

  def __post_init__(self):
    unknown = [s for s in self.stages if s not in STAGES]
    if unknown:
      raise ValueError(f"--paper_stages: unknown stage(s) {unknown}; stages are {STAGES}")


def _run_stage(cmd: list[str], every_s: float = 0.2) -> dict:
  """Runs `cmd` to completion: wall seconds, and the peak RSS (GB) of the largest process of its
  tree, sampled every `every_s` from each process's own high-water mark (VmHWM).

  Not `wait4`'s ru_maxrss: a child forked from this process (TensorFlow loaded, ~1 GB) reports at
  least this process's size, even once it has exec'ed a small program."""
  start = time.perf_counter()
  process = subprocess.Popen(cmd)
  peak_kib = 0
  while process.poll() is None:
    peak_kib = max([peak_kib] + [_hwm_kib(pid) for pid in _tree(process.pid)])
    time.sleep(every_s)
  if process.returncode:
    raise RuntimeError(f"bench paper: {' '.join(cmd)} exited with {process.returncode}")
  return {"wall_s": round(time.perf_counter() - start, 1), "peak_rss_gb": _gb(peak_kib)}


def _gb(kib: int) -> float:
  return round(kib / 2 ** 20, 2)


def _tree(root: int) -> list[int]:
  """`root` and its descendants, from /proc."""
  parents = {}
  for entry in os.listdir("/proc"):
    if entry.isdigit():
      try:
        with open(f"/proc/{entry}/stat") as f:
          parents[int(entry)] = int(f.read().rsplit(")", 1)[1].split()[1])
      except OSError:  # Gone meanwhile.
        continue
  tree, frontier = [root], [root]
  while frontier:
    frontier = [pid for pid, parent in parents.items() if parent in frontier]
    tree += frontier
  return tree


def _hwm_kib(pid: int) -> int:
  """The process's peak resident memory so far (KiB); 0 if it is gone."""
  try:
    with open(f"/proc/{pid}/status") as f:
      fields = dict(line.split(":", 1) for line in f)
  except OSError:
    return 0
  return int(fields.get("VmHWM", "0 kB").split()[0])


def _make(settings: Settings, target: str, *args: str) -> list[str]:
  return ["make", target, "DATASET=paper", f"DATA_DIR={settings.data_dir}", *args]




def wait_until_serving(server: subprocess.Popen, url: str, timeout_s: float) -> None:
  """Polls `url` until the server answers; RuntimeError if it exits or `timeout_s` passes."""
  deadline = time.time() + timeout_s
  while True:
    try:
      urllib.request.urlopen(url, timeout=2).read()
      return
    except OSError:
      if server.poll() is not None or time.time() > deadline:
        raise RuntimeError(f"bench: the server did not come up at {url} (run `make serve` to "
                           "see why)") from None
      time.sleep(0.5)


def _serve(settings: Settings, port: int) -> tuple[dict, dict]:
  """Serves the export, waits until it answers; its stage figures and the load test's report."""
  start = time.perf_counter()
  server = subprocess.Popen([sys.executable, "-m", "pipelines.serve",
                             f"--export_dir={settings.export_dir}", "--model_name=uma2",
                             f"--port={port}"], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
  try:
    wait_until_serving(server, f"http://127.0.0.1:{port}/v1/models/uma2", timeout_s=600)
    stage = {"wall_s": round(time.perf_counter() - start, 1),
             "peak_rss_gb": _gb(_hwm_kib(server.pid))}
    load = subprocess.run(
        [sys.executable, "-m", "pipelines.load_test",
         f"--url=http://127.0.0.1:{port}/v1/models/uma2:predict",
         f"--concurrency={settings.concurrency}", f"--seconds={settings.seconds}", "--k=100",
         f"--num_users={PAPER_USERS}"], capture_output=True, text=True, check=True)
    stage["peak_rss_gb"] = _gb(_hwm_kib(server.pid))  # After the load as well.
    return stage, json.loads(load.stdout.strip().splitlines()[-1])
  finally:
    server.terminate()
    server.wait(timeout=60)


def _latest_version(export_dir: str) -> str | None:
  versions = [int(v) for v in os.listdir(export_dir) if v.isdigit()] if os.path.isdir(
      export_dir) else []
  return os.path.join(export_dir, str(max(versions))) if versions else None


def bench_paper(settings: Settings, free_port) -> dict:
  """Every stage of `settings.stages`; flat figures `paper_*`."""
  figures, stages = {}, {}
  dataset_dir = os.path.join(os.path.expanduser(settings.data_dir), "uma2_simulated", "paper")
  if "data" in settings.stages:
    figures["paper_data_built"] = int(not os.path.isdir(dataset_dir))
    stages["data"] = _run_stage(_make(settings, "data"))
  if "train" in settings.stages:
    # The Makefile's own arguments for `paper` (make expands the reference), from scratch.
    stages["train"] = _run_stage(_make(settings, "train", f"RUN_DIR={settings.run_dir}",
                                       "TRAIN_ARGS=$(TRAIN_ARGS_paper) --restart"))
  if "export" in settings.stages:
    stages["export"] = _run_stage(_make(settings, "export", f"RUN_DIR={settings.run_dir}",
                                        f"EXPORT_DIR={settings.export_dir}"))
  if "serve" in settings.stages:
    stages["serve"], load = _serve(settings, free_port())
    figures.update({"paper_serve_p50_ms": load.get("p50_ms"),
                    "paper_serve_p99_ms": load.get("p99_ms"), "paper_serve_qps": load["qps"],
                    "paper_serve_errors": load["errors"],
                    "paper_serve_concurrency": settings.concurrency})
  for name, stage in stages.items():
    figures[f"paper_{name}_wall_s"] = stage["wall_s"]
    figures[f"paper_{name}_peak_rss_gb"] = stage["peak_rss_gb"]
  figures.update(_run_figures(settings))
  _write_markdown(figures, settings.report_dir)
  return figures


def _run_figures(settings: Settings) -> dict:
  """The trained run's and the export's own records, where they exist."""
  figures = {}
  metrics_path = os.path.join(settings.run_dir, "metrics.json")
  if os.path.exists(metrics_path):
    with open(metrics_path) as f:
      metrics = json.load(f)
    run = metrics["run"]
    figures.update({"paper_train_seconds": run["train_seconds"],
                    "paper_evaluate_seconds": run.get("evaluate_seconds"),
                    "paper_epochs_run": run["epochs_run"],
                    "paper_steps_per_epoch": run["steps_per_epoch"]})
    for key in ("recall@100", "recall@200", "hitrate@100", "oracle_recall@100"):
      figures[f"paper_{key}"] = round(metrics["model"][key], 4)
    for head, auc in metrics.get("propensity_auc", {}).items():
      figures[f"paper_auc_{head}"] = round(auc, 4)
  version = _latest_version(settings.export_dir)
  if version is not None:
    with open(os.path.join(version, "metadata.json")) as f:
      check = json.load(f).get("scann_check") or {}
    for key in ("recall", "qps_scann_single", "qps_brute_single", "speedup_single",
                "speedup_batch"):
      if key in check:
        figures[f"paper_scann_{key}"] = check[key]
  return figures


def _write_markdown(figures: dict, report_dir: str) -> None:
  lines = ["# `make bench ONLY=paper`", "", "| stage | wall | peak RSS |", "|---|---:|---:|"]
  names = {"serve": "serve (loading until it answers)"}
  for stage in STAGES:
    if f"paper_{stage}_wall_s" in figures:
      wall, rss = figures[f"paper_{stage}_wall_s"], figures[f"paper_{stage}_peak_rss_gb"]
      lines.append(f"| {names.get(stage, stage)} | {wall / 60:.1f} min | {rss:.2f} GB |")
  lines += ["", "| figure | value |", "|---|---:|"]
  lines += [f"| {k} | {v} |" for k, v in sorted(figures.items()) if "_wall_s" not in k
            and "_peak_rss_gb" not in k]
  os.makedirs(report_dir, exist_ok=True)
  path = os.path.join(report_dir, "paper_scale.md")
  with open(path + ".tmp", "w") as f:
    f.write("\n".join(lines) + "\n")
  os.replace(path + ".tmp", path)

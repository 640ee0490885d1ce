"""Benchmarks: prints a table and writes reports/bench.json (one flat key per figure).

    python -m pipelines.bench --data_dir=~/tensorflow_datasets             # every part
    python -m pipelines.bench --data_dir=... --only=sampling               # one part

Each part returns flat {key: number}; the results are merged into the existing bench.json, so a
part run alone updates only its own keys. The machine's CPU count and the versions used are written
with them.
"""
import uma2_tf  # noqa: F401  (before TensorFlow: selects tf_keras)
from uma2_tf.data import batch_keys
from uma2_tf.sources import registry
from uma2_tf.data import samplers

import json
import os
import platform
import time

from absl import app, flags, logging

from pipelines import bench_paper as bench_paper_part

FLAGS = flags.FLAGS
flags.DEFINE_string("data_dir", os.path.expanduser("~/tensorflow_datasets"), "TFDS data dir.")
flags.DEFINE_string("dataset", "uma2_simulated/default", "Dataset the input benchmarks read.")
flags.DEFINE_list("only", [], "Parts to run (default: all but paper). Known: sampling, training, "
                  "retrieval, serving, prepare, paper (`make train DATASET=paper`, export and "
                  "serve, stage by stage: ~35 min on 2 cores).")
flags.DEFINE_string("output", "reports/bench.json", "Where the figures are merged into.")
flags.DEFINE_integer("batch_size", 512, "Positives per batch for the input benchmarks.")
flags.DEFINE_integer("retrieval_queries", 500, "Queries timed per retriever and corpus size.")
flags.DEFINE_integer("serve_concurrency", 8, "Concurrent clients of the serving benchmark.")
flags.DEFINE_float("min_seconds", 20.0, "Each throughput measurement runs at least this long.")
flags.DEFINE_list("paper_stages", list(bench_paper_part.STAGES),
                  f"Stages of the paper part, in order: {', '.join(bench_paper_part.STAGES)}.")
flags.register_validator("paper_stages", lambda stages: set(stages) <= set(bench_paper_part.STAGES),
                         f"--paper_stages: stages are {', '.join(bench_paper_part.STAGES)}")
flags.DEFINE_string("paper_run_dir", "runs/uma2_paper", "Run dir the paper part trains into "
                    "(from scratch, by its train stage) and exports from.")
flags.DEFINE_string("paper_export_dir", "exports/uma2_paper", "Export dir of the paper part.")
flags.DEFINE_integer("prepare_days", 4,
                     "Days of the synthetic RecFlow release the `prepare` part builds.")


def bench_sampling() -> dict:
  """Throughput of the A/B/C sampling pipeline (ss_abc_fixed, 25 negatives) in positives/s."""
  from uma2_tf import profiling

  dataset = registry.load(FLAGS.dataset, FLAGS.data_dir, prepare=True)
  config = samplers.SamplingConfig()
  rate = profiling.input_positives_per_s(dataset, config, FLAGS.batch_size, FLAGS.min_seconds)
  return {"sampling_positives_per_s": round(rate, 1),
          "sampling_negatives_per_positive": config.num_negatives,
          "sampling_batch_size": FLAGS.batch_size}


def bench_training() -> dict:
  """Training throughput of plain GMM and UMA2 (YouTube DNN, ss_abc_fixed, 25 negatives) on the same
  in-memory batches, the UMA2/GMM cost ratio, and the step's GFLOP/s against a matmul peak, all
  measured in this one run.

  The trainer runs the item tower once per distinct item of a batch (`UMA2Model.dedup_items`):
  `train_positives_per_s_*` and `uma2_cost_ratio` time that step. Its FLOPs depend on how many
  items a batch repeats, which the graph profiler cannot count (dynamic shapes), so the FLOP
  figures (`train_step_gflop_*`, `train_gflops*`, `train_share_of_matmul_peak`) are those of the
  same step once per slot (`*_dense`, static shapes), timed alongside.

  Beside them, the softmax samplers' steps (`_in_batch`, `_in_batch_streaming`, `_mixed`: every
  positive against the batch's positives, and B' corpus items for mixed): `in_batch_speedup_vs_gmm`
  and `streaming_estimator_share_of_step` (the estimator's share of an in-batch step)."""
  import numpy as np
  import tf_keras as keras

  from uma2_tf import optimizers, profiling, training
  from uma2_tf.tasks import LossConfig, SoftmaxConfig

  dataset = registry.load(FLAGS.dataset, FLAGS.data_dir, prepare=True)
  sampling_config = samplers.SamplingConfig()
  batches = profiling.fixed_batches(dataset, sampling_config, FLAGS.batch_size, count=16)
  steps, inputs = {}, {}
  for name, use_nsdn in (("gmm", False), ("uma2", True)):
    for suffix, dedup in (("", True), ("_dense", False)):
      config = training.TrainConfig(dataset=FLAGS.dataset, loss=LossConfig(use_nsdn=use_nsdn))
      keras.utils.set_random_seed(0)
      model = training.build_model(config, dataset)
      model.dedup_items = dedup
      model(batches[0])
      steps[name + suffix] = profiling.TrainStep(
          model, optimizers.make(config.optimizer, config.learning_rate))
  # The softmax samplers on the same tower and batch size: one item-tower pass per positive (and
  # per shared corpus item) scores the whole batch. `in_batch_streaming` differs from `in_batch`
  # only by the streaming frequency estimator: their difference is its cost.
  for name, strategy, logq in (("in_batch", "in_batch", "counts"),
                               ("in_batch_streaming", "in_batch", "streaming"),
                               ("mixed", "mixed", "counts")):
    config = training.TrainConfig(
        dataset=FLAGS.dataset, loss=LossConfig(use_nsdn=False),
        sampling=samplers.SamplingConfig(strategy=strategy), softmax=SoftmaxConfig(logq=logq))
    inputs[name] = profiling.fixed_batches(dataset, config.sampling, FLAGS.batch_size, count=16)
    keras.utils.set_random_seed(0)
    model = training.build_model(config, dataset)
    model(inputs[name][0])
    steps[name] = profiling.TrainStep(
        model, optimizers.make(config.optimizer, config.learning_rate))
  # Alternating short timings and keeping each one's fastest cancels the drift (thermal, other
  # processes) that one long timing after the other would put into the ratio.
  seconds = {name: float("inf") for name in steps}
  utilisation = {}
  for _ in range(3):
    for name, step in steps.items():
      with profiling.GpuUtilisation() as gpu:
        seconds[name] = min(seconds[name], step.time(inputs.get(name, batches),
                                                     min_seconds=FLAGS.min_seconds / 3))
      if gpu.mean_percent is not None:
        utilisation.setdefault(name, []).append((gpu.mean_percent, gpu.max_memory_mib))
  results = {"train_device": profiling.device_name()}
  for name, samples in utilisation.items():
    # On a GPU: how busy the step keeps it (nvidia-smi's utilisation: share of time a kernel ran).
    results[f"train_gpu_utilisation_{name}"] = round(max(u for u, _ in samples), 1)
    results[f"train_gpu_memory_mib_{name}"] = round(max(m for _, m in samples), 0)
  for name, step in steps.items():
    results[f"train_positives_per_s_{name}"] = round(FLAGS.batch_size / seconds[name], 1)
    if name.endswith("_dense"):
      flops = step.flops(batches[0])
      results[f"train_step_gflop_{name}"] = round(flops / 1e9, 3)
      results[f"train_gflops_{name}"] = round(flops / seconds[name] / 1e9, 2)
  slots = [np.concatenate([np.asarray(b[batch_keys.POS_ITEM])[:, None],
                           np.asarray(b[batch_keys.NEG_ITEMS])], 1)
           for b in batches]
  distinct_share = np.mean([len(np.unique(x)) / x.size for x in slots])
  results["train_distinct_item_share"] = round(float(distinct_share), 4)
  peak = profiling.matmul_peak_gflops()
  for suffix in ("", "_dense"):
    results[f"uma2_cost_ratio{suffix}"] = round(results[f"train_positives_per_s_gmm{suffix}"] /
                                                results[f"train_positives_per_s_uma2{suffix}"], 4)
  results["in_batch_speedup_vs_gmm"] = round(results["train_positives_per_s_in_batch"] /
                                             results["train_positives_per_s_gmm"], 3)
  results["streaming_estimator_share_of_step"] = round(
      1 - seconds["in_batch"] / seconds["in_batch_streaming"], 4)
  results["mixed_corpus_negatives"] = samplers.SamplingConfig().corpus_negatives
  results["train_gflops"] = results["train_gflops_uma2_dense"]
  results["matmul_peak_gflops"] = round(peak, 2)
  results["train_share_of_matmul_peak"] = round(results["train_gflops"] / peak, 4)
  results["train_batch_size"] = FLAGS.batch_size
  return results


def _clustered(rng, n: int, centres, noise: float = 0.5):
  import numpy as np
  x = centres[rng.integers(0, len(centres), n)] + noise * rng.standard_normal((n, centres.shape[1]))
  return x.astype(np.float32)


def bench_retrieval() -> dict:
  """ScaNN (with the export's default parameters) against exact brute force on 100K and 1M
  32-d items, one query per call as a server makes them: queries/s and ScaNN's recall@100."""
  import numpy as np
  import tensorflow as tf
  import tensorflow_recommenders as tfrs

  from uma2_tf import export

  rng = np.random.default_rng(0)
  centres = rng.standard_normal((2000, 32)).astype(np.float32)
  queries = _clustered(rng, FLAGS.retrieval_queries, centres)
  results = {}
  for label, n in (("100k", 100_000), ("1m", 1_000_000)):
    items = tf.constant(_clustered(rng, n, centres))
    ids = tf.range(1, n + 1, dtype=tf.int64)
    params = export.scann_parameters(n, export.ExportConfig(max_k=100))
    brute = tfrs.layers.factorized_top_k.BruteForce(k=100)
    brute.index(items, ids)
    start = time.perf_counter()
    scann = tfrs.layers.factorized_top_k.ScaNN(
        k=100, num_leaves=params["num_leaves"], num_leaves_to_search=params["num_leaves_to_search"],
        num_reordering_candidates=params["num_reordering_candidates"],
        dimensions_per_block=params["dimensions_per_block"])
    scann.index(items, ids)
    results[f"scann_index_build_s_{label}"] = round(time.perf_counter() - start, 1)
    found = {}
    for name, layer in (("brute", brute), ("scann", scann)):
      search = tf.function(lambda q, layer=layer: layer(q, k=100)[1])
      search(queries[:1])  # Trace.
      found[name], start = [], time.perf_counter()
      for i in range(len(queries)):
        found[name].append(search(queries[i:i + 1]).numpy()[0])
      elapsed = time.perf_counter() - start
      results[f"{name}_queries_per_s_{label}"] = round(len(queries) / elapsed, 1)
    results[f"scann_recall@100_{label}"] = round(float(np.mean(
        [len(set(a) & set(b)) / 100 for a, b in zip(found["scann"], found["brute"])])), 4)
    results[f"scann_speedup_{label}"] = round(results[f"scann_queries_per_s_{label}"] /
                                              results[f"brute_queries_per_s_{label}"], 2)
    results[f"scann_leaves_{label}"] = params["num_leaves"]
    results[f"scann_leaves_to_search_{label}"] = params["num_leaves_to_search"]
    results[f"scann_reorder_{label}"] = params["num_reordering_candidates"]
  return results


def _table_tower(user_table, item_table):
  """A stand-in tower of two embedding tables, to serve a corpus of any size (a `tf.Module`, so
  SavedModel tracks its variables)."""
  import tensorflow as tf

  class TableTower(tf.Module):
    def __init__(self):
      super().__init__()
      self.users, self.items = tf.Variable(user_table), tf.Variable(item_table)

    def user_embedding(self, features):
      return tf.gather(self.users, features["user_id"])

    def item_embedding(self, ids):
      return tf.gather(self.items, ids)

  return TableTower()


def _free_port() -> int:
  import socket
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def bench_serving() -> dict:
  """`make serve` under load: a 1M-item (32-d) ScaNN export served on loopback, k=100, a closed
  loop of `serve_concurrency` clients in a second process (pipelines/load_test.py)."""
  import subprocess
  import sys
  import tempfile

  import numpy as np

  from uma2_tf import export
  from uma2_tf.data import schema as schema_lib

  rng = np.random.default_rng(0)
  centres = rng.standard_normal((2000, 32)).astype(np.float32)
  num_users, num_items = 10_000, 1_000_000
  schema = schema_lib.LogSchema(num_users=num_users + 1, num_items=num_items + 1,
                                user_features={"age": 8}, item_features={"category": 2})
  tower = _table_tower(_clustered(rng, num_users + 1, centres),
                       _clustered(rng, num_items + 1, centres))
  results = {}
  with tempfile.TemporaryDirectory() as export_dir:
    start = time.perf_counter()
    export.write_version(export.ExportConfig(export_dir=export_dir, model_name="bench"), tower,
                         schema, max_history=50)
    results["serve_export_s_1m"] = round(time.perf_counter() - start, 1)
    port = _free_port()
    server = subprocess.Popen([sys.executable, "-m", "pipelines.serve",
                               f"--export_dir={export_dir}", "--model_name=bench",
                               f"--port={port}"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
      bench_paper_part.wait_until_serving(server, f"http://127.0.0.1:{port}/v1/models/bench",
                                          timeout_s=180)
      load = subprocess.run(
          [sys.executable, "-m", "pipelines.load_test",
           f"--url=http://127.0.0.1:{port}/v1/models/bench:predict",
           f"--concurrency={FLAGS.serve_concurrency}", f"--seconds={FLAGS.min_seconds}", "--k=100",
           f"--num_users={num_users}"], capture_output=True, text=True, check=True)
      report = json.loads(load.stdout.strip().splitlines()[-1])
    finally:
      server.terminate()
      server.wait(timeout=30)
  results.update({"serve_p50_ms": report.get("p50_ms"), "serve_p99_ms": report.get("p99_ms"),
                  "serve_qps": report["qps"], "serve_errors": report["errors"],
                  "serve_concurrency": FLAGS.serve_concurrency, "serve_items": num_items})
  return results


def write_synthetic_recflow(directory: str, *, days: int, requests_per_day: int, exposed: int = 6,
                            stage_samples: int = 120, num_users: int = 2000,
                            num_videos: int = 200_000, seed: int = 0) -> tuple:
  """A RecFlow release in the real layout (realshow/ and all_stage/ Feather files) drawn at random,
  for timing the preparation at a chosen size. Returns its dates."""
  import datetime

  import numpy as np
  import pandas as pd

  from uma2_tf.sources import recflow_files

  rng = np.random.default_rng(seed)
  first = datetime.date(2024, 1, 13)
  dates = tuple((first + datetime.timedelta(days=d)).isoformat() for d in range(days))
  video_features = {c: rng.integers(0, n, num_videos) for c, n in (
      ("author_id", num_videos // 20), ("category_level_one", 40), ("category_level_two", 400),
      ("upload_type", 8), ("duration", 600_000))}
  for sub in ("realshow", "all_stage"):
    os.makedirs(os.path.join(directory, sub), exist_ok=True)
  for d, date in enumerate(dates):
    rids = np.arange(requests_per_day, dtype=np.int64) + d * requests_per_day
    users = rng.integers(0, num_users, requests_per_day)
    timestamps = (int(datetime.datetime.fromisoformat(date).timestamp()) * 1000
                  + np.sort(rng.integers(0, 86_400_000, requests_per_day)))
    n = requests_per_day * exposed
    shown = rng.integers(0, num_videos, n)
    realshow = pd.DataFrame({
        "request_id": np.repeat(rids, exposed), "request_timestamp": np.repeat(timestamps, exposed),
        "user_id": np.repeat(users, exposed), "age": np.repeat(users % 7, exposed),
        "gender": np.repeat(users % 2, exposed), "province": np.repeat(users % 30, exposed),
        "video_id": shown, **{c: v[shown] for c, v in video_features.items()},
        "realshow": np.ones(n, np.int64),
        "rerank_index": np.tile(np.arange(exposed), requests_per_day),
        "effective_view": (rng.random(n) < 0.3).astype(np.int64),
        "long_view": np.zeros(n, np.int64), "like": np.zeros(n, np.int64)})
    realshow.to_feather(os.path.join(directory, "realshow", f"{date}.feather"))
    m = requests_per_day * stage_samples
    sampled = rng.integers(0, num_videos, m)
    # One flag per row, realshow excluded.
    stage = rng.integers(0, len(recflow_files.STAGES) - 1, m)
    all_stage = pd.DataFrame({
        "request_id": np.repeat(rids, stage_samples), "video_id": sampled,
        **{c: v[sampled] for c, v in video_features.items()},
        **{s: (stage == i).astype(np.int64) for i, s in enumerate(recflow_files.STAGES)}})
    all_stage.to_feather(os.path.join(directory, "all_stage", f"{date}.feather"))
  return dates


def bench_prepare() -> dict:
  """Preparing RecFlow's layout in memory (`Recflow`) and as a Beam pipeline (`RecflowBeam` on the
  DirectRunner, in one process and in one process per core): stage samples per second on a
  synthetic release of `--prepare_days` days (2,000 requests, 12,000 exposures and 240,000 stage
  samples a day). Skipped (no keys) without the [beam] extra."""
  import shutil
  import tempfile

  import tensorflow_datasets as tfds

  from uma2_tf.sources import recflow

  requests_per_day, stage_samples = 2000, 120
  root = tempfile.mkdtemp(prefix="bench_prepare_")
  try:
    manual = os.path.join(root, "RecFlow")
    dates = write_synthetic_recflow(manual, days=FLAGS.prepare_days,
                                    requests_per_day=requests_per_day, stage_samples=stage_samples)
    config = recflow.RecflowConfig(name="bench", train_dates=dates[:-1], test_dates=dates[-1:])
    samples = len(dates) * requests_per_day * stage_samples
    results = {"prepare_days": len(dates), "prepare_stage_samples": samples,
               "prepare_requests": len(dates) * requests_per_day}
    runs = [("in_memory", recflow.Recflow, None)]
    try:
      from uma2_tf.sources import logs_beam
      from uma2_tf.sources import recflow_beam
      runs += [("beam_direct_1", recflow_beam.RecflowBeam,
                logs_beam.pipeline_options("runner=DirectRunner")),
               ("beam_direct_multi", recflow_beam.RecflowBeam, logs_beam.pipeline_options(
                   f"runner=DirectRunner,direct_num_workers={os.cpu_count()},"
                   "direct_running_mode=multi_processing"))]
    except ImportError:
      logging.warning("bench prepare: apache-beam is not installed; only the in-memory build is "
                      "timed")
    for name, cls, options in runs:
      builder = cls(config=config, data_dir=os.path.join(root, name))
      start = time.perf_counter()
      builder.download_and_prepare(download_config=tfds.download.DownloadConfig(
          manual_dir=manual, beam_options=options))
      elapsed = time.perf_counter() - start
      results[f"prepare_{name}_s"] = round(elapsed, 1)
      results[f"prepare_{name}_stage_samples_per_s"] = round(samples / elapsed)
    return results
  finally:
    shutil.rmtree(root, ignore_errors=True)


def bench_paper() -> dict:
  """`make train DATASET=paper`, export and serve, stage by stage (`pipelines/bench_paper.py`)."""
  settings = bench_paper_part.Settings(
      stages=tuple(FLAGS.paper_stages), run_dir=FLAGS.paper_run_dir,
      export_dir=FLAGS.paper_export_dir, data_dir=FLAGS.data_dir,
      report_dir=os.path.dirname(os.path.abspath(FLAGS.output)),
      concurrency=FLAGS.serve_concurrency, seconds=FLAGS.min_seconds)
  return bench_paper_part.bench_paper(settings, _free_port)


PARTS = {"sampling": bench_sampling, "training": bench_training, "retrieval": bench_retrieval,
         "serving": bench_serving, "prepare": bench_prepare, "paper": bench_paper}
NOT_BY_DEFAULT = ("paper",)  # ~35 min on 2 cores: asked for by name only.


def environment() -> dict:
  import numpy as np
  import tensorflow as tf
  import tensorflow_datasets as tfds

  return {"cpu_count": os.cpu_count(), "platform": platform.platform(),
          "version_python": platform.python_version(), "version_tensorflow": tf.__version__,
          "version_tensorflow_datasets": tfds.__version__, "version_numpy": np.__version__,
          "gpus": len(tf.config.list_physical_devices("GPU"))}


KEYS_BY_PART = "_keys_by_part"


def main(argv):
  del argv
  unknown = [p for p in FLAGS.only if p not in PARTS]
  if unknown:
    raise app.UsageError(f"--only: unknown part(s) {unknown}; known parts are {sorted(PARTS)}")
  parts = FLAGS.only or [p for p in PARTS if p not in NOT_BY_DEFAULT]
  results = {}
  if os.path.exists(FLAGS.output):
    with open(FLAGS.output) as f:
      results = json.load(f)
  # Which part wrote which keys: a part run again replaces all of its figures, so one it no
  # longer reports does not linger from an older run.
  keys_by_part = results.pop(KEYS_BY_PART, {})
  for name in parts:
    logging.info("bench: running %s", name)
    for key in keys_by_part.get(name, []):
      results.pop(key, None)
    figures = PARTS[name]()
    keys_by_part[name] = sorted(figures)
    results.update(figures)
  results.update(environment())
  results["dataset"] = FLAGS.dataset
  os.makedirs(os.path.dirname(os.path.abspath(FLAGS.output)), exist_ok=True)
  tmp = FLAGS.output + ".tmp"
  with open(tmp, "w") as f:
    json.dump({**results, KEYS_BY_PART: keys_by_part}, f, indent=2, sort_keys=True)
  os.replace(tmp, FLAGS.output)
  width = max(len(k) for k in results)
  print(f"| {'figure':<{width}} | value |\n|{'-' * (width + 2)}|-------|")
  for key in sorted(results):
    print(f"| {key:<{width}} | {results[key]} |")
  print(f"written to {FLAGS.output}")


if __name__ == "__main__":
  app.run(main)

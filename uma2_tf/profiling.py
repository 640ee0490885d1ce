"""Measuring a training step: its throughput, its FLOPs, and the machine's matmul peak.

    batches = profiling.fixed_batches(dataset, sampling_config, batch_size=512, count=16)
    step = profiling.TrainStep(model, keras.optimizers.Adam(1e-3))
    seconds = step.time(batches, min_seconds=20)        # mean seconds per step, after warm-up
    flops = step.flops(batches[0])                       # FLOPs of one step (forward + backward)
    peak = profiling.matmul_peak_gflops()                # float32 GFLOP/s of a large matmul
    with profiling.GpuUtilisation() as gpu:              # on a GPU host: nvidia-smi, sampled
      step.time(batches)
    gpu.mean_percent                                     # None without a GPU

Batches are materialised in memory first, so the input pipeline is not part of what is timed. FLOPs
come from TensorFlow's graph profiler over the traced step (matmuls, element-wise ops, the
optimizer's update), with every shape static.
"""
from __future__ import annotations

import uma2_tf  # noqa: F401

import shutil
import subprocess
import threading
import time

import tensorflow as tf

from uma2_tf.data import batch_keys
from uma2_tf.data import samplers


def fixed_batches(dataset, config: samplers.SamplingConfig, batch_size: int,
                  count: int) -> list[dict]:
  """`count` full training batches as constant tensors (static shapes)."""
  ds = samplers.make_training_dataset(dataset, config, batch_size, shuffle=False)
  batches = []
  for batch in ds:
    if int(batch[batch_keys.POS_ITEM].shape[0]) == batch_size:
      batches.append({k: tf.constant(v.numpy()) for k, v in batch.items()})
    if len(batches) == count:
      return batches
  raise ValueError(f"the dataset has fewer than {count} full batches of {batch_size}")


def input_positives_per_s(dataset, config: samplers.SamplingConfig, batch_size: int,
                          min_seconds: float, warmup: int = 20) -> float:
  """Positives/s the sampling pipeline of `config` gives on this host, after `warmup` batches
  (tracing, autotuning, file cache)."""
  it = iter(samplers.make_training_dataset(dataset, config, batch_size=batch_size).repeat())
  for _ in range(warmup):
    next(it)
  positives, start = 0, time.perf_counter()
  while time.perf_counter() - start < min_seconds:
    positives += int(next(it)[batch_keys.POS_ITEM].shape[0])
  return positives / (time.perf_counter() - start)


class TrainStep:
  """One optimisation step of `model.compute_loss`, as a `tf.function` (what `fit` runs)."""

  def __init__(self, model, optimizer):
    self.model, self.optimizer = model, optimizer

    @tf.function
    def step(batch):
      with tf.GradientTape() as tape:
        loss = model.compute_loss(batch, training=True)
      variables = model.trainable_variables
      self.optimizer.apply_gradients(zip(tape.gradient(loss, variables), variables))
      return loss

    self._step = step

  def time(self, batches: list[dict], min_seconds: float = 10.0, warmup: int = 3) -> float:
    """Mean wall seconds per step, cycling over `batches`, for at least `min_seconds`."""
    for i in range(warmup):
      self._step(batches[i % len(batches)]).numpy()
    steps, start = 0, time.perf_counter()
    while True:
      loss = self._step(batches[steps % len(batches)])
      steps += 1
      if steps % len(batches) == 0:
        loss.numpy()  # Sync before reading the clock.
        elapsed = time.perf_counter() - start
        if elapsed >= min_seconds:
          return elapsed / steps

  def flops(self, batch: dict) -> float:
    """Floating-point operations of one step on `batch`, from the graph profiler."""
    graph = self._step.get_concrete_function(batch).graph
    options = tf.compat.v1.profiler.ProfileOptionBuilder.float_operation()
    options["output"] = "none"
    return float(tf.compat.v1.profiler.profile(graph, options=options).total_float_ops)


def matmul_peak_gflops(n: int = 2048, min_seconds: float = 5.0) -> float:
  """float32 GFLOP/s of repeated n x n matmuls: the peak a dense model can hope to reach here."""
  a = tf.random.normal((n, n))
  b = tf.random.normal((n, n))

  @tf.function
  def matmul(x):
    return tf.linalg.matmul(x, b)

  matmul(a).numpy()
  runs, start = 0, time.perf_counter()
  while time.perf_counter() - start < min_seconds:
    matmul(a).numpy()
    runs += 1
  return 2.0 * n ** 3 * runs / (time.perf_counter() - start) / 1e9



class GpuUtilisation:
  """Mean GPU utilisation (%) and peak memory while the block runs, sampled from `nvidia-smi`.

  `mean_percent` / `max_memory_mib` stay None where there is no NVIDIA GPU or no `nvidia-smi`.
  Samples are of the first GPU (the one a single-GPU step runs on).
  """

  def __init__(self, interval_s: float = 0.2):
    self.interval_s = interval_s
    self.samples: list[tuple[float, float]] = []
    self._stop = threading.Event()
    self._thread = None
    self.available = (bool(shutil.which("nvidia-smi"))
                      and bool(tf.config.list_physical_devices("GPU")))

  def __enter__(self):
    if self.available:
      self._thread = threading.Thread(target=self._sample, daemon=True)
      self._thread.start()
    return self

  def __exit__(self, *exc):
    self._stop.set()
    if self._thread is not None:
      self._thread.join()

  def _sample(self):
    while not self._stop.wait(self.interval_s):
      try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=utilization.gpu,memory.used",
                              "--format=csv,noheader,nounits", "--id=0"],
                             capture_output=True, text=True, timeout=5).stdout
        self.samples.append(parse_nvidia_smi(out))
      except (subprocess.SubprocessError, ValueError, OSError):
        continue

  @property
  def mean_percent(self) -> float | None:
    return sum(u for u, _ in self.samples) / len(self.samples) if self.samples else None

  @property
  def max_memory_mib(self) -> float | None:
    return max(m for _, m in self.samples) if self.samples else None


def parse_nvidia_smi(line: str) -> tuple[float, float]:
  """`nvidia-smi --query-gpu=utilization.gpu,memory.used --format=csv,noheader,nounits` ->
  (%, MiB)."""
  utilisation, memory = (float(x) for x in line.strip().splitlines()[0].split(","))
  return utilisation, memory


def device_name() -> str:
  """The accelerator a one-device step runs on: the first GPU's name, else "CPU"."""
  gpus = tf.config.list_physical_devices("GPU")
  if not gpus:
    return "CPU"
  return tf.config.experimental.get_device_details(gpus[0]).get("device_name", "GPU")

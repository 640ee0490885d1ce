"""What a grid of runs costs, measured per cell before it trains (`experiment --cost_only`).

    costs = grid_cost.measure(grid, base, dataset)        # one CellCost per (row, tower)
    grid_cost.write_report(report_dir, costs, seeds=3)    # grid_cost.md, grid_cost.json

Per cell (a row on a tower; its seeds cost the same): the seconds of one training step as a run
takes it (Keras `fit` on the cell's own sampling pipeline, which shares the cores), the seconds of
the step alone on in-memory batches, the FLOPs of that step counted by the graph profiler (once per
slot, static shapes), and the seconds of one validation evaluation of its tower. A run costs at
most `epochs` × (steps per epoch × fit step + one evaluation) plus the set-up every run pays (its
validation evaluator), measured once; early stopping only shortens it, so the sum is the grid's
bound on this machine (backups and checkpoints are not in it). The one-GPU figure is a projection,
not a measurement: the step's FLOPs at `GPU_TFLOPS` × `GPU_UTILISATION`, or the input pipeline's
measured positives/s on this CPU when that is slower (the sampler stays on the host).
"""
from __future__ import annotations

import uma2_tf  # noqa: F401

import dataclasses
import json
import os
import time
from typing import Sequence

import tf_keras as keras

from uma2_tf import atomic_files, optimizers, profiling, run_evaluators, training
from uma2_tf.data import reading, samplers
from uma2_tf.experiment import grid as grid_lib

# The GPU of the projection: an A100's float32 peak (19.5 TFLOP/s, no TF32), at the share of peak a
# model of 128-512-wide layers and batch 512 can be expected to sustain. Assumptions, labelled.
GPU_NAME = "A100 (float32 19.5 TFLOP/s)"
GPU_TFLOPS = 19.5
GPU_UTILISATION = 0.3


@dataclasses.dataclass(frozen=True)
class CellCost:
  """What one run of a cell costs (seconds unless said)."""

  row: str
  tower: str
  step_seconds: float  # In `fit`, with the input pipeline: what a run pays.
  compute_step_seconds: float  # The step alone, on in-memory batches.
  step_gflop: float
  steps_per_epoch: int
  epochs: int
  evaluation_seconds: float
  setup_seconds: float

  @property
  def run_seconds(self) -> float:
    """Upper bound of one run here: every epoch trained and evaluated."""
    return self.setup_seconds + self.epochs * (self.steps_per_epoch * self.step_seconds
                                               + self.evaluation_seconds)

  def gpu_seconds(self, input_positives_per_s: float, batch_size: int) -> float:
    """Projected bound of one run on one GPU (see the module docstring)."""
    step = max(self.step_gflop / (GPU_TFLOPS * 1e3 * GPU_UTILISATION),
               batch_size / input_positives_per_s)
    return self.setup_seconds + self.epochs * self.steps_per_epoch * step


def measure(grid: Sequence[grid_lib.RunSpec], base: training.TrainConfig,
            dataset: reading.BuiltDataset, min_seconds: float = 5.0,
            progress=None) -> tuple[list[CellCost], dict]:
  """Each distinct cell's cost, and what every run shares: {"input_positives_per_s", ...}."""
  cells = list(dict.fromkeys((spec.row, spec.tower) for spec in grid))
  scratch = "/nonexistent"  # Run dirs are never written: only configs are built.
  config0 = grid_lib.RunSpec(*cells[0], 0).train_config(base, scratch)
  holdout = run_evaluators.training_holdout(dataset, config0)
  start = time.perf_counter()
  validation = run_evaluators.validation_evaluator(dataset, config0, holdout)
  setup = time.perf_counter() - start
  positives = training.count_positives(dataset, keep=holdout.train_keep())
  steps_per_epoch = -(-positives // base.batch_size)
  batches, costs, evaluation_seconds = {}, [], {}
  for row, tower in (progress or (lambda x: x))(cells):
    config = grid_lib.RunSpec(row, tower, 0).train_config(base, scratch)
    key = config.sampling
    if key not in batches:
      batches[key] = profiling.fixed_batches(dataset, config.sampling, base.batch_size, count=8)
    keras.backend.clear_session()
    keras.utils.set_random_seed(0)
    model = training.build_model(config, dataset)
    model(batches[key][0])
    step = profiling.TrainStep(model, optimizers.make(config.optimizer, config.learning_rate))
    compute_seconds = step.time(batches[key], min_seconds=min_seconds)
    seconds = _fit_step_seconds(model, config, dataset, holdout, min_seconds)
    model.dedup_items = False  # Static shapes for the profiler: the once-per-slot step.
    optimizer = optimizers.make(config.optimizer, config.learning_rate)
    gflop = profiling.TrainStep(model, optimizer).flops(batches[key][0]) / 1e9
    if tower not in evaluation_seconds and validation is not None:
      start = time.perf_counter()
      validation.model_metrics(model.tower)
      evaluation_seconds[tower] = time.perf_counter() - start
    costs.append(CellCost(row, tower, seconds, compute_seconds, gflop, steps_per_epoch, base.epochs,
                          evaluation_seconds.get(tower, 0.0), setup))
  rate = profiling.input_positives_per_s(dataset, base.sampling, base.batch_size, min_seconds)
  return costs, {"input_positives_per_s": rate,
                 "batch_size": base.batch_size, "train_positives": positives}


def _fit_step_seconds(model, config: training.TrainConfig, dataset, holdout,
                      min_seconds: float) -> float:
  """Seconds per step of Keras `fit` on the cell's own sampling pipeline (after a warm-up fit)."""
  model.compile(optimizer=optimizers.make(config.optimizer, config.learning_rate))
  train = samplers.make_training_dataset(dataset, config.sampling, config.batch_size,
                                         keep=holdout.train_keep()).repeat()
  model.fit(train, epochs=1, steps_per_epoch=5, verbose=0)  # Traces, fills the pipeline.
  steps = 20
  while True:
    start = time.perf_counter()
    model.fit(train, epochs=1, steps_per_epoch=steps, verbose=0)
    elapsed = time.perf_counter() - start
    if elapsed >= min_seconds:
      return elapsed / steps
    steps *= 2


def write_report(report_dir: str, costs: Sequence[CellCost], shared: dict, seeds: int) -> str:
  """grid_cost.md and grid_cost.json; returns the markdown."""
  rate, batch = shared["input_positives_per_s"], shared["batch_size"]
  rows = [{**dataclasses.asdict(c), "run_seconds": c.run_seconds,
           "gpu_seconds": c.gpu_seconds(rate, batch)} for c in costs]
  total = seeds * sum(r["run_seconds"] for r in rows)
  gpu_total = seeds * sum(r["gpu_seconds"] for r in rows)
  runs = len(costs) * seeds
  cells = f"{len(costs)} cell{'s' if len(costs) > 1 else ''}"
  lines = [f"# What the grid costs ({cells} × {seeds} seeds = {runs} runs)",
           "", f"Measured on this host ({os.cpu_count()} cores). A run is bounded by its epochs "
           "(early stopping only shortens it). GPU: a projection from the step's FLOPs on one "
           f"{GPU_NAME} at {GPU_UTILISATION:.0%} of peak, or the host's sampler "
           f"({rate:,.0f} positives/s) where that is slower; not measured.", "",
           "| cell | fit step s | compute step s | step GFLOP | steps/epoch | eval s | run ≤ min "
           "| GPU run ≤ min |", "|---|---:|---:|---:|---:|---:|---:|---:|"]
  for r in rows:
    lines.append(f"| {r['tower']} {r['row']} | {r['step_seconds']:.3f} | "
                 f"{r['compute_step_seconds']:.3f} | {r['step_gflop']:.1f} | "
                 f"{r['steps_per_epoch']} | {r['evaluation_seconds']:.1f} | "
                 f"{r['run_seconds'] / 60:.1f} | {r['gpu_seconds'] / 60:.1f} |")
  lines += ["", "Set-up every run pays (its validation evaluator): "
            f"{costs[0].setup_seconds:.0f} s.",
            f"**Whole grid: ≤ {total / 3600:.1f} h here; projected ≤ {gpu_total / 3600:.1f} h on "
            "one GPU.**", ""]
  os.makedirs(report_dir, exist_ok=True)
  atomic_files.atomic_write_text(os.path.join(report_dir, "grid_cost.json"), json.dumps(
      {"cells": rows, "seeds": seeds, "total_seconds": total, "gpu_total_seconds": gpu_total,
       "gpu": {"name": GPU_NAME, "tflops": GPU_TFLOPS, "utilisation": GPU_UTILISATION},
       **shared}, indent=2))
  markdown = "\n".join(lines)
  atomic_files.atomic_write_text(os.path.join(report_dir, "grid_cost.md"), markdown)
  return markdown

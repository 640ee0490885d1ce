"""One seed's sampler search as an ordinary run directory (`make autosample`).

    results = autosample_run.run(TrainConfig(output_dir="runs/autosample/seed0"), SearchConfig())

The search (`autosample.search`) trains on the training days less the validation split it is
scored on (`--validation`, default the last training day; never the test day). Its model is the
phase whose committed weights score best on the whole validation split's subset; the run dir then
holds what `training.train` would have written for it: config.json (the config of the sampler that
trained those weights last), checkpoints/final, training.json, metrics.json / metrics.md (the test
day, evaluated once), per_user.npz, sampling.json, so `make export` works on it; and beside them
autosample.json (plan, every probe and commit, compute) and autosample_state.json (what a killed
search resumes from, with the phase checkpoints under search/, removed once the results are
written).
"""
from __future__ import annotations

import uma2_tf  # noqa: F401

import dataclasses
import json
import math
import shutil
import time

from absl import logging
import tf_keras as keras

from uma2_tf import atomic_files, distribute, evaluation, run_evaluators, training
from uma2_tf import run_dir as run_dir_lib
from uma2_tf.data import reading
from uma2_tf.experiment import autosample, search_space
from uma2_tf.experiment.autosample_trainer import CandidateTrainer, ValidationScorer
from uma2_tf.run_dir import RunDir
from uma2_tf.sources import registry

RESULT_FILE, STATE_FILE, PHASES_DIR = "autosample.json", "autosample_state.json", "search"
# Strategies whose variables one process can snapshot and restore between probes.
LOCAL_STRATEGIES = ("auto", "default", "one_device", "mirrored")


def check_config(base: training.TrainConfig) -> None:
  """ValueError naming the flag for what the search does not support."""
  if base.strategy not in LOCAL_STRATEGIES:
    raise ValueError(f"--strategy={base.strategy}: the sampler search runs in one process "
                     f"(probes restore the weights between candidates); use one of "
                     f"{', '.join(LOCAL_STRATEGIES)}")
  if base.precision != "float32":
    raise ValueError(f"--precision={base.precision}: the sampler search trains in float32")
  if base.validation == "none":
    raise ValueError("--validation=none: the search scores its probes on a validation split "
                     "carved from the training days; keep one (last_day or users:<share>)")


def run(base: training.TrainConfig, search_config: autosample.SearchConfig, verbose: int = 1,
        evaluator: evaluation.Evaluator | None = None) -> dict:
  """Runs (or resumes, or just reads when finished) the search in `base.output_dir`; returns the
  metrics.json dict. `base`: every setting but the negatives (each candidate's own)."""
  check_config(base)
  candidates = search_space.parse(search_config.candidates)
  configs = [c.train_config(base) for c in candidates]
  run_dir = RunDir(base.output_dir)
  if run_dir.is_finished():
    logging.info("%s: the search is finished; its results are kept", base.output_dir)
    return run_dir.read_json(run_dir_lib.METRICS_JSON)
  atomic_files.check_writable(base.output_dir, "--output_dir")
  dataset = registry.load(base.dataset, base.data_dir)
  with reading.naming_corrupt_shards(dataset):
    return _run(base, search_config, candidates, configs, dataset, run_dir, verbose, evaluator)


def _run(base, search_config, candidates, configs, dataset, run_dir: RunDir, verbose, evaluator):
  strategy = distribute.build_strategy(base.strategy)
  keras.utils.set_random_seed(base.seed)
  users = run_evaluators.held_out_users(dataset, base)
  holdout = run_evaluators.training_holdout(dataset, base, users)
  validation = run_evaluators.validation_evaluator(dataset, base, holdout)
  positives = training.count_positives(dataset, keep=holdout.train_keep())
  if positives == 0:
    raise ValueError(f"{base.dataset}: the train split has no click to train on")
  steps_per_epoch = math.ceil(positives / base.batch_size)
  phases = autosample.plan(search_config, len(candidates), steps_per_epoch)
  scorer = ValidationScorer(validation, base.monitor, search_config.score_users, base.seed)
  logging.info("autosample: %d candidates, %d phases, %d steps (%d per epoch), probes scored on "
               "%d validation users (%s)", len(candidates), len(phases),
               sum(p.probed * p.probe_steps + p.commit_steps for p in phases), steps_per_epoch,
               scorer.num_users, base.monitor)
  trainer = CandidateTrainer(configs, dataset, holdout, strategy, scorer,
                             run_dir.file(PHASES_DIR), seed=base.seed)
  state = autosample.StateFile(run_dir.file(STATE_FILE), {
      "search": dataclasses.asdict(search_config), "train": json.loads(base.to_json())})
  start = time.perf_counter()
  records = _search(trainer, search_config, steps_per_epoch, state, phases, verbose)
  wall_seconds = time.perf_counter() - start  # (this process's part of a resumed search)

  selected = autosample.selected_phase(records)
  names = [c.name for c in candidates]
  winner = names.index(selected["winner"])
  trainer.load_phase(selected["phase"], autosample.consumed_steps(
      records[:selected["phase"] + 1], names))
  model = trainer.models[winner]
  chosen = configs[winner]
  run_dir.write_config(chosen.to_json())
  model.save_weights(run_dir.final_checkpoint)
  compute = autosample.compute(records)
  record = {"train_seconds": compute["train_seconds"], "train_positives": positives,
            "epochs_run": round(compute["steps"] / steps_per_epoch, 3),
            "steps_per_epoch": steps_per_epoch}
  run_dir.write_training_record(record)

  test = run_evaluators.test_evaluator(evaluator, dataset, chosen, users)
  results = test.evaluate(model)
  results["run"] = {**record, "strategy": base.strategy,
                    "replicas": strategy.num_replicas_in_sync, "workers": 1,
                    "precision": base.precision, "validation": base.validation,
                    "weights_sha256": distribute.weights_fingerprint(model),
                    "autosample": {"chosen": selected["winner"], "phase": selected["phase"]}}
  summary = {
      "candidates": names, "search": dataclasses.asdict(search_config),
      "steps_per_epoch": steps_per_epoch, "score_users": scorer.num_users,
      "monitor": base.monitor, "plan": [dataclasses.asdict(p) for p in phases],
      "phases": records, "selected_phase": selected["phase"], "chosen": selected["winner"],
      "compute": compute, "wall_seconds": round(wall_seconds, 1),
      "validation": validation.model_metrics(model.tower),
      "test": results["model"], "seed": base.seed, "tower": base.tower, "dataset": base.dataset}
  atomic_files.atomic_write_text(run_dir.file(RESULT_FILE), json.dumps(summary, indent=2))
  fill_events = _summed(m.fill_events() for m in trainer.models)
  table = evaluation.results_markdown(results, chosen.eval_ks)
  run_dir.write_results(results, table, test.last_per_user, fill_events)
  shutil.rmtree(run_dir.file(PHASES_DIR), ignore_errors=True)
  print(table)
  return results


def _search(trainer, search_config, steps_per_epoch, state, phases, verbose) -> list[dict]:
  """`autosample.search` with a progress bar over the search's training steps."""
  from tqdm import tqdm

  done = state.load()
  total = sum(p.probed * p.probe_steps + p.commit_steps for p in phases)
  initial = autosample.compute(done)["steps"] if done else 0
  if done:
    logging.info("autosample: resuming after phase %d of %d", len(done), len(phases))
  with tqdm(total=total, initial=initial, unit="step", desc="autosample",
            disable=not verbose) as bar:
    def progress(what: str, steps: int) -> None:
      bar.set_postfix_str(what)
      bar.update(steps)

    return autosample.search(trainer, search_config, steps_per_epoch, state, progress)


def _summed(counts) -> dict:
  total: dict = {}
  for c in counts:
    for key, value in c.items():
      total[key] = total.get(key, 0) + value
  return total

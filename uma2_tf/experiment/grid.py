"""The grids of Table 1, of the negative samplers' table and of the ablation table: their cells
(a row on a tower, one seed) and the training runs behind them.

    grid = grid_lib.quick_grid(seeds=(0, 1, 2))  # or full_grid, samplers_grid, ablation_grid(seeds)
    base = TrainConfig(dataset="uma2_simulated/default")
    grid_lib.run_grid(grid, base, "reports/experiment_default")  # resumable: reruns skip done runs

(`from uma2_tf.experiment import grid as grid_lib`; the report on the runs is `experiment.report`.)

A row of Table 1 is a way of treating negatives, trained on one tower:

| row             | negatives (25 per positive)     | loss                                      |
|-----------------|---------------------------------|-------------------------------------------|
| SS-A            | exposed-unclicked only          | plain BCE (the GMM)                       |
| SS-AB           | A and recalled-unexposed        | plain BCE                                 |
| SS-ABC(random)  | uniform over the corpus         | plain BCE                                 |
| SS-ABC(fixed)   | A:B:C = 1:4:20                  | plain BCE                                 |
| UMA²            | A:B:C = 1:4:20                  | NSDN inverse-propensity weights (eq. 2)   |
| UMA²_SOS        | A:B:C = 1:4:20                  | ablation: SOS's fixed per-space weights   |
|                 |                                 | replace the learned propensities          |
| UMA² (self-norm)| A:B:C = 1:4:20                  | ablation: NSDN weights divided by their   |
|                 |                                 | batch mean per space                      |

The competitors are towers (`towers.TOWERS`): FM, YouTube DNN, DAT, MIND, and ESAM on YouTube DNN
and DAT (trained with SS-ABC(fixed), the negatives its domain adaptation needs). A cell's baseline
(`RunSpec.baseline`, what the report compares it with) is the row before it in the chain
SS-A → SS-AB → SS-ABC(random) → SS-ABC(fixed) → UMA², and SS-ABC(fixed) on the same tower for
UMA²_SOS and ESAM, UMA² for the self-normalised ablation.

The negative samplers' table (`samplers_grid`, `experiment --table=samplers`, reported by
`experiment.samplers_table`) puts the trainer's other samplers beside SS-A, SS-ABC(random) (the
uniform sampler), SS-ABC(fixed) and UMA² on YouTube DNN and DAT, every one a plain GMM (no NSDN):

| row             | sampling (`TrainConfig.sampling`, `.softmax`)                            |
|-----------------|--------------------------------------------------------------------------|
| popularity^0.75 | strategy popularity, popularity_alpha 0.75 (25 negatives, BCE)           |
| in-batch        | strategy in_batch, softmax logq none (softmax over the batch's positives) |
| in-batch + logQ | strategy in_batch, softmax logq counts                                   |
| mixed           | strategy mixed (in-batch + corpus_negatives uniform items), logq counts  |
| hybrid          | strategy hybrid, hybrid_share 0.5 from space B, the rest uniform         |

Their baseline is SS-ABC(random). The rows both tables have map to the same config, so with the
same report dir a run is trained once and reported in both.

The ablation table (`ablation_grid`, `experiment --table=ablation`, reported by
`experiment.ablation_table`) splits UMA²'s gain over the GMM in one or more worlds, on any tower but
ESAM's: SS-ABC(random), SS-ABC(fixed), UMA², UMA² (self-norm) and two ablations of its own, both on
UMA²'s negatives (A:B:C = 1:4:20) with the NSDN heads; their baseline is SS-ABC(fixed):

| row                    | loss                                                                  |
|------------------------|-----------------------------------------------------------------------|
| UMA² (multi-task only) | the heads' ER/RE terms, every negative weighted 1 (no IPW): what the  |
|                        | auxiliary tasks give through the embeddings they share with the tower |
| UMA² (own tables)      | UMA² with the heads on their own embedding tables: what the weights   |
|                        | give alone (the auxiliary tasks cannot shape the tower's embeddings)  |

Each world is a grid of its own, run by `run_grid` into `<report_dir>/<world config name>`.

Every run is an ordinary training run (`training.train`) in `<report_dir>/runs/<run id>/`. A run
with `metrics.json` is finished and is never redone; an unfinished one resumes from its
BackupAndRestore state, so a killed experiment restarted with the same command goes on where it
stopped. A run dir whose `config.json` differs from what the grid now asks is an error, not
silently mixed into the report.
"""
from __future__ import annotations

import uma2_tf  # noqa: F401

import dataclasses
import json
import os
import re
import time
from typing import Sequence

from absl import logging

from uma2_tf import atomic_files
from uma2_tf import tasks
from uma2_tf import training
from uma2_tf.models import towers as towers_lib
from uma2_tf.run_dir import RunDir

SS_A, SS_AB, SS_ABC_RANDOM, SS_ABC_FIXED = "SS-A", "SS-AB", "SS-ABC(random)", "SS-ABC(fixed)"
UMA2, UMA2_SOS, UMA2_SELF_NORM = "UMA²", "UMA²_SOS", "UMA² (self-norm)"
UMA2_MULTITASK, UMA2_OWN_TABLES = "UMA² (multi-task only)", "UMA² (own tables)"
MAIN_ROWS = (SS_A, SS_AB, SS_ABC_RANDOM, SS_ABC_FIXED, UMA2)
ABLATION_ROWS = (UMA2_SOS, UMA2_SELF_NORM, UMA2_MULTITASK, UMA2_OWN_TABLES)
# The rows whose model has the NSDN heads.
NSDN_ROWS = (UMA2, UMA2_SELF_NORM, UMA2_MULTITASK, UMA2_OWN_TABLES)
POPULARITY, IN_BATCH, IN_BATCH_LOGQ = "popularity^0.75", "in-batch", "in-batch + logQ"
MIXED, HYBRID = "mixed", "hybrid"
SAMPLER_ROWS = (POPULARITY, IN_BATCH, IN_BATCH_LOGQ, MIXED, HYBRID)
# The REMI table: a multi-interest backbone on the sampled softmax, with IHN and RR on and off.
REMI_BASE, REMI_IHN, REMI_RR, REMI_IHN_RR = "base", "+IHN", "+RR", "+IHN+RR"
REMI_ROWS = (REMI_BASE, REMI_IHN, REMI_RR, REMI_IHN_RR)
REMI_TOWERS = ("mind", "comirec_sa", "comirec_dr")
# IHN's β and RR's λ when the base config leaves them 0: β 1 (the middle of REMI's per-dataset
# {10, 1, 0.1}); λ the reference's 100 on a sum over its batch of 128 users, here a mean.
REMI_BETA, REMI_LAMBDA = 1.0, 100.0 * 128
REMI_KS, REMI_MONITOR = (20, 50), "recall@50"
ROWS = MAIN_ROWS + ABLATION_ROWS + SAMPLER_ROWS + REMI_ROWS
# The negative samplers' table, in its order, and its towers.
SAMPLERS_TABLE_ROWS = (SS_A, SS_ABC_RANDOM, POPULARITY, IN_BATCH, IN_BATCH_LOGQ, MIXED, HYBRID,
                       SS_ABC_FIXED, UMA2)
SAMPLERS_TOWERS = ("youtube_dnn", "dat")
# The ablation table, in its order: the GMM on UMA²'s negatives, then what UMA² adds to it.
ABLATION_TABLE_ROWS = (SS_ABC_RANDOM, SS_ABC_FIXED, UMA2_MULTITASK, UMA2_OWN_TABLES, UMA2,
                       UMA2_SELF_NORM)
# A sampler row's `SamplingConfig` fields and its softmax's logQ (None: the base's softmax).
_SAMPLER_SETTINGS = {
    POPULARITY: ({"strategy": "popularity", "popularity_alpha": 0.75}, None),
    IN_BATCH: ({"strategy": "in_batch"}, "none"),
    IN_BATCH_LOGQ: ({"strategy": "in_batch"}, "counts"),
    MIXED: ({"strategy": "mixed"}, "counts"),
    HYBRID: ({"strategy": "hybrid", "hybrid_share": 0.5, "c_distribution": "uniform"}, None),
}
# The towers of the grid, with the names the paper gives them.
TOWER_NAMES = {"fm": "FM", "youtube_dnn": "YouTubeDNN", "dat": "DAT", "mind": "MIND",
               "esam_youtube_dnn": "ESAM_YTB", "esam_dat": "ESAM_DAT", "comirec_sa": "ComiRec-SA",
               "comirec_dr": "ComiRec-DR"}
# ESAM is itself a way of using non-displayed items, compared with its plain tower.
ESAM_BASE = {"esam_youtube_dnn": "youtube_dnn", "esam_dat": "dat"}
# Slugs shorter than the row's name spelt out.
_SLUGS = {UMA2_MULTITASK: "uma2_multitask", REMI_BASE: "remi_base", REMI_IHN: "remi_ihn",
          REMI_RR: "remi_rr", REMI_IHN_RR: "remi_ihn_rr"}
RUNS_DIR = "runs"
EXPERIMENT_FILE = "experiment.json"


@dataclasses.dataclass(frozen=True)
class RunSpec:
  """One cell of the grid: a row of Table 1 on a tower, with one seed."""

  row: str
  tower: str
  seed: int

  def __post_init__(self):
    if self.row not in ROWS:
      raise ValueError(f"unknown row {self.row!r}; rows are {ROWS}")

  @property
  def row_slug(self) -> str:
    """The row as a name for files and flags: ss_abc_fixed, uma2_sos, ..."""
    if self.row in _SLUGS:
      return _SLUGS[self.row]
    return re.sub(r"[^a-z0-9]+", "_", self.row.lower().replace("²", "2")).strip("_")

  @property
  def run_id(self) -> str:
    return f"{self.tower}__{self.row_slug}__seed{self.seed}"

  @property
  def label(self) -> str:
    """The model's name in the table, as the paper writes it: YouTubeDNN, ESAM_DAT, UMA²_YTB."""
    short = {"youtube_dnn": "YTB"}.get(self.tower, TOWER_NAMES.get(self.tower, self.tower))
    if self.row in REMI_ROWS:
      return short if self.row == REMI_BASE else f"{short} {self.row}"
    return {UMA2: f"UMA²_{short}", UMA2_SOS: f"UMA²_SOS_{short}",
            UMA2_SELF_NORM: f"UMA²_{short} (self-norm)",
            UMA2_MULTITASK: f"UMA²_{short} (multi-task only)",
            UMA2_OWN_TABLES: f"UMA²_{short} (own tables)"}.get(
                self.row, TOWER_NAMES.get(self.tower, self.tower))

  @property
  def label_row(self) -> str:
    """The label with its sampling strategy where the label alone does not say it."""
    return self.label if self.row in (UMA2,) + ABLATION_ROWS + REMI_ROWS \
        else f"{self.label} [{self.row}]"

  @property
  def baseline(self) -> "RunSpec | None":
    """The run this one is compared with (same seed), or None for the chain's first row."""
    if self.tower in ESAM_BASE:
      return RunSpec(SS_ABC_FIXED, ESAM_BASE[self.tower], self.seed)
    if self.row in REMI_ROWS:
      return None if self.row == REMI_BASE else RunSpec(REMI_BASE, self.tower, self.seed)
    previous = {SS_AB: SS_A, SS_ABC_RANDOM: SS_AB, SS_ABC_FIXED: SS_ABC_RANDOM, UMA2: SS_ABC_FIXED,
                UMA2_SOS: SS_ABC_FIXED, UMA2_SELF_NORM: UMA2, UMA2_MULTITASK: SS_ABC_FIXED,
                UMA2_OWN_TABLES: SS_ABC_FIXED,
                **{row: SS_ABC_RANDOM for row in SAMPLER_ROWS}}
    return RunSpec(previous[self.row], self.tower, self.seed) if self.row in previous else None

  def train_config(self, base: training.TrainConfig, report_dir: str) -> training.TrainConfig:
    """The run's config: `base` with this cell's tower, seed, output dir, negatives and loss."""
    if self.row in REMI_ROWS:
      return self._remi_config(base, report_dir)
    sampling_fields, logq = _SAMPLER_SETTINGS.get(
        self.row, ({"strategy": {SS_A: "ss_a", SS_AB: "ss_ab", SS_ABC_RANDOM: "ss_abc_random"}.get(
            self.row, "ss_abc_fixed")}, None))
    softmax = base.softmax if logq is None else dataclasses.replace(base.softmax, logq=logq)
    loss = dataclasses.replace(base.loss, use_nsdn=self.row in NSDN_ROWS,
                               propensity_weights=self.row != UMA2_MULTITASK,
                               weight_normalization="self_normalized" if self.row == UMA2_SELF_NORM
                               else "none")
    if self.row == UMA2_SOS:
      loss = dataclasses.replace(loss, space_weights=(1.0, 1.0, tasks.SOS_RANDOM_WEIGHT))
    return dataclasses.replace(
        base, output_dir=os.path.join(report_dir, RUNS_DIR, self.run_id), tower=self.tower,
        loss=loss, softmax=softmax, seed=self.seed,
        # Own tables: the heads cannot shape the tower's embeddings (without heads it is moot).
        share_embeddings=self.row != UMA2_OWN_TABLES,
        sampling=dataclasses.replace(base.sampling, **sampling_fields, seed=self.seed))


  def _remi_config(self, base: training.TrainConfig, report_dir: str) -> training.TrainConfig:
    """A REMI cell: the sequential protocol, the sampled softmax, the row's IHN and RR, and the
    hard readout (the interest closest to the positive carries the loss, as ComiRec and REMI)."""
    remi = dataclasses.replace(
        base.remi, ihn_beta=(base.remi.ihn_beta or REMI_BETA) if "IHN" in self.row else 0.0,
        rr_lambda=(base.remi.rr_lambda or REMI_LAMBDA) if "RR" in self.row else 0.0)
    return dataclasses.replace(
        base, output_dir=os.path.join(report_dir, RUNS_DIR, self.run_id), tower=self.tower,
        seed=self.seed, remi=remi, protocol="sequential", eval_ks=REMI_KS, monitor=REMI_MONITOR,
        hard_readout=True, loss=dataclasses.replace(base.loss, use_nsdn=False),
        sampling=dataclasses.replace(base.sampling, strategy="sampled", seed=self.seed))


def quick_grid(seeds: Sequence[int] = (0, 1, 2)) -> list[RunSpec]:
  """YouTube DNN: the main chain and the SOS ablation (`experiment --quick`)."""
  return [RunSpec(row, "youtube_dnn", s) for s in seeds
          for row in (SS_A, SS_AB, SS_ABC_RANDOM, SS_ABC_FIXED, UMA2, UMA2_SOS)]


def full_grid(seeds: Sequence[int] = (0, 1, 2)) -> list[RunSpec]:
  """Table 1: every sampling strategy on FM, YouTube DNN, DAT and MIND; ESAM on YTB and DAT;
  UMA² and both ablations on YTB and DAT."""
  specs = []
  for s in seeds:
    for row in (SS_A, SS_AB, SS_ABC_RANDOM, SS_ABC_FIXED):
      specs += [RunSpec(row, tower, s) for tower in ("fm", "youtube_dnn", "dat", "mind")]
    specs += [RunSpec(SS_ABC_FIXED, tower, s) for tower in ESAM_BASE]
    specs += [RunSpec(row, tower, s) for row in (UMA2, UMA2_SOS, UMA2_SELF_NORM)
              for tower in ("youtube_dnn", "dat")]
  return specs


def samplers_grid(seeds: Sequence[int] = (0, 1),
                  towers: Sequence[str] = SAMPLERS_TOWERS) -> list[RunSpec]:
  """The negative samplers' table: `SAMPLERS_TABLE_ROWS` on YouTube DNN and DAT
  (`experiment --table=samplers`)."""
  return [RunSpec(row, tower, s) for s in seeds for tower in towers
          for row in SAMPLERS_TABLE_ROWS]


def ablation_grid(seeds: Sequence[int] = (0, 1),
                  towers: Sequence[str] = ("youtube_dnn",)) -> list[RunSpec]:
  """The ablation table: `ABLATION_TABLE_ROWS` on each tower (`experiment --table=ablation`);
  ValueError for an unknown tower or ESAM's (its domain adaptation is compared with its plain
  tower, not given NSDN heads)."""
  towers = list(dict.fromkeys(towers))  # A tower named twice is one tower.
  unknown = [t for t in towers if t not in towers_lib.TOWERS]
  if unknown:
    raise ValueError(f"unknown tower(s) {', '.join(unknown)}; known: {sorted(towers_lib.TOWERS)}")
  esam = [t for t in towers if t in ESAM_BASE]
  if esam:
    raise ValueError(f"{', '.join(esam)}: ESAM towers are not ablated (as in Table 1, UMA² runs on "
                     "their plain towers: " + ", ".join(ESAM_BASE[t] for t in esam) + ")")
  return [RunSpec(row, tower, s) for s in seeds for tower in towers
          for row in ABLATION_TABLE_ROWS]


def remi_grid(seeds: Sequence[int] = (0, 1),
              towers: Sequence[str] = REMI_TOWERS) -> list[RunSpec]:
  """The REMI table: `REMI_ROWS` on each multi-interest backbone (`experiment --table=remi`);
  ValueError for a tower that is not multi-interest."""
  towers = list(dict.fromkeys(towers))
  single = [t for t in towers if t not in towers_lib.MULTI_INTEREST]
  if single:
    raise ValueError(f"{', '.join(single)}: not a multi-interest tower; the REMI table runs on "
                     f"{', '.join(towers_lib.MULTI_INTEREST)}")
  return [RunSpec(row, tower, s) for s in seeds for tower in towers for row in REMI_ROWS]


def is_finished(output_dir: str) -> bool:
  """Whether the run in `output_dir` is done: it wrote its metrics."""
  return RunDir(output_dir).is_finished()


def _check_config(config: training.TrainConfig) -> None:
  """A run dir written with another config must not be resumed or reported as this one."""
  differ = training.config_differences(config)
  if differ:
    raise ValueError(f"{config.output_dir} was trained with a different config "
                     f"({', '.join(differ)} differ): use a new --report_dir, or delete that run "
                     "dir to redo it")


def check_grid(grid: Sequence[RunSpec], base: training.TrainConfig,
               report_dir: str) -> list[training.TrainConfig]:
  """The runs' configs; ValueError if a run dir holds another config's run (`run_grid` calls it:
  call it first for every grid of an experiment running several)."""
  configs = [spec.train_config(base, report_dir) for spec in grid]
  for config in configs:  # Every mismatch is found before hours of training, not after.
    _check_config(config)
  return configs


def run_grid(grid: Sequence[RunSpec], base: training.TrainConfig, report_dir: str,
             verbose: int = 2, experiment_file: str = EXPERIMENT_FILE) -> None:
  """Trains every run of `grid` that is not finished, in order, one after another; the grid and
  its base config go to `<report_dir>/<experiment_file>`."""
  os.makedirs(report_dir, exist_ok=True)
  configs = check_grid(grid, base, report_dir)
  atomic_files.atomic_write_text(os.path.join(report_dir, experiment_file), json.dumps(
      {"base": json.loads(base.to_json()), "runs": [dataclasses.asdict(s) for s in grid]},
      indent=2))
  todo = [(s, c) for s, c in zip(grid, configs) if not is_finished(c.output_dir)]
  logging.info("experiment: %d runs, %d finished, %d to train", len(grid), len(grid) - len(todo),
               len(todo))
  import tf_keras as keras
  from tqdm import tqdm

  start = time.perf_counter()
  evaluator = None  # Every run evaluates on the same test users: built once.
  for i, (spec, config) in enumerate(tqdm(todo, desc="experiment runs", unit="run"), 1):
    logging.info("run %d/%d: %s (%s, seed %d) -> %s", i, len(todo), spec.label, spec.row, spec.seed,
                 config.output_dir)
    keras.backend.clear_session()  # Runs share the process, not their graphs.
    if evaluator is None:
      from uma2_tf import run_evaluators
      from uma2_tf.sources import registry
      from uma2_tf.data import reading
      dataset = registry.load(config.dataset, config.data_dir)
      with reading.naming_corrupt_shards(dataset):  # It reads the test split now.
        evaluator = run_evaluators.test_evaluator(None, dataset, config)
    training.train(config, verbose=verbose, evaluator=evaluator)
  logging.info("experiment: trained %d runs in %.0f s", len(todo), time.perf_counter() - start)

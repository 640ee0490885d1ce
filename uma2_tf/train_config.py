"""`TrainConfig`: everything a training run depends on, validated when it is made.

    config = TrainConfig(dataset="uma2_simulated/default", output_dir="runs/uma2")
    config = TrainConfig.load("runs/uma2")        # the config a run wrote (config.json)
    config.to_json()

`training.train(config)` runs it; its flags are derived from it (`config_flags`), so this dataclass
is the only copy of every default.
"""
from __future__ import annotations

import dataclasses
import os

from uma2_tf import config_flags, distribute, optimizers
from uma2_tf import run_dir as run_dir_lib
from uma2_tf.data import samplers, splits
from uma2_tf.models import towers
from uma2_tf.run_dir import RunDir
from uma2_tf.tasks import LossConfig, SoftmaxConfig
from uma2_tf.tasks.remi import RemiConfig

PRECISIONS = ("float32", "mixed_float16", "mixed_bfloat16")
DAILY, SEQUENTIAL = "daily", "sequential"
PROTOCOLS = (DAILY, SEQUENTIAL)


@dataclasses.dataclass(frozen=True)
class TrainConfig:
  """Everything a training run depends on. Defaults: UMA²-YouTubeDNN, SS-ABC(fixed), the paper's
  optimiser (Adam, lr 0.001, batch 512).

  Attributes:
    dataset: TFDS name with config.
    data_dir: TFDS data dir.
    output_dir: where the run writes (see `training`'s module docstring).
    strategy: a name of `distribute.STRATEGIES`: `auto` (mirrored over the visible GPUs if any,
      else one device), `default`, `one_device`, `mirrored`, `multi_worker` or `parameter_server`
      (the last two read the cluster from TF_CONFIG; see `uma2_tf.distribute`).
    precision: `float32`, or a Keras mixed-precision policy (`mixed_float16`, `mixed_bfloat16`):
      layers compute in 16 bits, variables and the loss stay float32.
    tower: a name of `towers.TOWERS`.
    num_interests: K, the interests per user of a multi-interest tower (`towers.MULTI_INTEREST`:
      MIND, ComiRec-SA, ComiRec-DR); ignored by the others.
    hard_readout: MIND trains on its interest closest to the positive (ComiRec's and REMI's
      readout, `attention="argmax"`) instead of its label-aware attention; ComiRec's towers
      always do.
    share_embeddings: NSDN heads read the tower's embedding tables (else their own).
    sampling: how negatives are drawn (`sampling.strategy`, `--negatives`).
    loss: the pointwise loss of samplers with per-positive negatives: λ's, propensity floor,
      weight normalisation, NSDN on/off, its propensity weights on/off.
    softmax: the softmax of the in-batch samplers (`in_batch`, `mixed`): logQ, temperature, ...
    remi: REMI's terms: IHN's β on the `sampled` softmax, the routing regulariser's λ on a
      multi-interest tower.
    batch_size: global batch, in positives (each with its negatives): what one optimiser step
      consumes, split evenly over the replicas of a synchronous strategy (`uma2_tf.distribute`).
    learning_rate: the optimiser's.
    optimizer: `adam` (Keras's Adam, fused: the paper's) or `lazy_adam` (embedding rows without a
      gradient in the batch keep their moments and weights; `uma2_tf.optimizers`): for tables of
      millions of rows, where Adam's update of every row each step dominates the step.
    epochs: maximum passes over the training positives.
    early_stopping_patience: epochs without a better `monitor` before stopping (0: never stop).
    evaluate_each_epoch: evaluate on the validation records after every epoch (needed by early
      stopping); False: no per-epoch evaluation (short runs, e.g. `experiment --quick`).
    validation: the training records held out for model selection (`splits`): `last_day` (the
      last training day), `users:<share>` (that share of users' last training request) or `none`.
      Per-epoch evaluation, early stopping and the best weights read only these; the test day is
      evaluated once, on the final model.
    protocol: `daily` (train on the days before the test day, evaluate every user who clicks on
      it: the paper's) or `sequential` (ComiRec / REMI: users split 80/10/10; a held-out user's
      first 80 % clicks are the history, the rest the targets; `sequential_evaluation`). Under
      `sequential` the validation users replace `validation` (`last_day`, the default, or `none`
      to select nothing); use `eval_ks=20,50` and `monitor=recall@50` for the papers' numbers.
    monitor: validation metric EarlyStopping watches and the best weights are chosen by.
    eval_ks: K's of the retrieval metrics.
    backup_every_steps: BackupAndRestore saves every this many steps (mid-epoch resume).
    seed: seeds model initialisation; the sampler has its own in `sampling.seed`.
  """

  dataset: str = "uma2_simulated/default"
  data_dir: str = os.path.expanduser("~/tensorflow_datasets")
  output_dir: str = "runs/uma2_default"
  strategy: str = "auto"
  precision: str = "float32"
  tower: str = "youtube_dnn"
  num_interests: int = 4
  hard_readout: bool = False
  share_embeddings: bool = True
  sampling: samplers.SamplingConfig = samplers.SamplingConfig()
  loss: LossConfig = LossConfig()
  softmax: SoftmaxConfig = SoftmaxConfig()
  remi: RemiConfig = RemiConfig()
  batch_size: int = 512
  learning_rate: float = 1e-3
  optimizer: str = "adam"
  epochs: int = 5
  early_stopping_patience: int = 2
  evaluate_each_epoch: bool = True
  validation: str = "last_day"
  protocol: str = "daily"
  monitor: str = "recall@100"
  eval_ks: tuple[int, ...] = (50, 100, 200)
  backup_every_steps: int = 50
  seed: int = 0

  def __post_init__(self):
    object.__setattr__(self, "data_dir", os.path.expanduser(self.data_dir))
    if self.strategy not in distribute.STRATEGIES:
      raise ValueError(f"strategy must be one of {distribute.STRATEGIES}, got {self.strategy!r}")
    if self.precision not in PRECISIONS:
      raise ValueError(f"precision must be one of {PRECISIONS}, got {self.precision!r}")
    if self.tower not in towers.TOWERS:
      raise ValueError(f"unknown tower {self.tower!r}; known towers: {sorted(towers.TOWERS)}")
    for name in ("batch_size", "epochs", "backup_every_steps", "num_interests"):
      if getattr(self, name) < 1:
        raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
    if self.optimizer not in optimizers.OPTIMIZERS:
      raise ValueError(f"optimizer must be one of {optimizers.OPTIMIZERS}, got "
                       f"{self.optimizer!r}")
    if not self.learning_rate > 0:
      raise ValueError(f"learning_rate must be > 0, got {self.learning_rate}")
    if not self.eval_ks or min(self.eval_ks) < 1:
      raise ValueError(f"eval_ks must be positive integers, got {self.eval_ks}")
    if self.monitor.split("@")[0] not in ("hitrate", "recall", "precision", "oracle_recall"):
      raise ValueError(f"monitor must be e.g. recall@100, got {self.monitor!r}")
    if self.early_stopping_patience and not self.evaluate_each_epoch:
      raise ValueError("early stopping needs evaluate_each_epoch (it watches the per-epoch "
                       "evaluation); set early_stopping_patience=0 to evaluate only at the end")
    splits.parse(self.validation)
    if self.protocol not in PROTOCOLS:
      raise ValueError(f"protocol must be one of {PROTOCOLS}, got {self.protocol!r}")
    if self.protocol == SEQUENTIAL and self.validation not in (splits.LAST_DAY, splits.NONE):
      raise ValueError(f"--protocol=sequential validates on its held-out validation users; "
                       f"--validation={self.validation} would hold out records of the training "
                       f"users as well: leave --validation at last_day or set it to none")
    no_spaces = f"--negatives={self.sampling.strategy} has no spaces A/B/C (its negatives are " \
        "the batch's positives) for "
    if self.sampling.is_softmax and self.loss.use_nsdn:
      raise ValueError(no_spaces + "NSDN's propensity weights to re-weight; add --nsdn=false")
    if self.sampling.is_softmax and self.tower.startswith("esam"):
      raise ValueError(no_spaces + f"--tower={self.tower}'s domain adaptation; use another tower")
    if self.remi.ihn_beta and self.sampling.strategy != "sampled":
      raise ValueError(f"--ihn_beta={self.remi.ihn_beta} re-weights the shared negatives of "
                       f"the sampled softmax; add --negatives=sampled (got "
                       f"--negatives={self.sampling.strategy})")
    if self.hard_readout and self.tower not in towers.MULTI_INTEREST:
      raise ValueError(f"--hard_readout picks one of a multi-interest tower's interests "
                       f"({', '.join(towers.MULTI_INTEREST)}); --tower={self.tower} has one")
    if self.remi.rr_lambda and self.tower not in towers.MULTI_INTEREST:
      raise ValueError(f"--rr_lambda={self.remi.rr_lambda} regularises the routing of a "
                       f"multi-interest tower ({', '.join(towers.MULTI_INTEREST)}); "
                       f"--tower={self.tower} has none")
    selects = self.early_stopping_patience or self.evaluate_each_epoch
    if self.validation == splits.NONE and selects:  # (under either protocol)
      raise ValueError("--validation=none leaves nothing to select a model on: early stopping "
                       "and per-epoch evaluation read the validation split (never the test day); "
                       "set --early_stopping_patience=0 --noevaluate_each_epoch, or keep a "
                       "validation split (--validation=last_day or users:<share>)")

  def to_json(self) -> str:
    return config_flags.to_json(self)

  @classmethod
  def from_json(cls, text: str, path: str = "config.json") -> "TrainConfig":
    """The config a run wrote (`config.json`); unknown keys are an error, missing ones default."""
    return config_flags.from_json(cls, text, path)

  @classmethod
  def load(cls, run_dir: str) -> "TrainConfig":
    run = RunDir(run_dir)
    return cls.from_json(run.read_config_text(), run.file(run_dir_lib.CONFIG))

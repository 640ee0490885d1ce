"""Trains and evaluates a model (`make train`); only wires flags onto `training.TrainConfig`.

Every field of `TrainConfig` is a flag (`--helpfull` lists them with the dataclass's defaults),
nested configs as `--sampling.<field>` and `--loss.<field>`; `--config=<run>/config.json` starts
from a run's own config, and flags given beside it override it.

    python -m pipelines.train --dataset=uma2_simulated/default --output_dir=runs/uma2_default
    python -m pipelines.train --config=runs/uma2_default/config.json --output_dir=runs/again
    python -m pipelines.train --loss.propensity_floor=0.1 --sampling.max_history=20
    python -m pipelines.train --nsdn=false --strategy_name=ss_ab --output_dir=runs/gmm_ss_ab
    python -m pipelines.train --tower=dat --lambdas=1,1,1,0.5,0.5 --epochs=3
    python -m pipelines.train --nsdn=false --space_weights=1,1,0.25 --output_dir=runs/uma2_sos
    python -m pipelines.train --propensity_weights=false --output_dir=runs/uma2_multitask  # no IPW
    python -m pipelines.train --noshare_embeddings --output_dir=runs/uma2_own_tables
    python -m pipelines.train --nsdn=false --negatives=popularity --popularity_alpha=0.75
    python -m pipelines.train --nsdn=false --negatives=in_batch --logq=streaming
    python -m pipelines.train --nsdn=false --negatives=mixed --corpus_negatives=1024
    python -m pipelines.train --nsdn=false --negatives=hybrid --hybrid_share=0.5
    # B: ranking's negatives
    python -m pipelines.train --dataset=recflow/default --b_stages=rank_neg

    python -m pipelines.train --precision=mixed_bfloat16
    TF_CONFIG='{"cluster": ...}' python -m pipelines.train --strategy=multi_worker   # on each host

Restarting a killed run with the same command resumes it (BackupAndRestore in output_dir/backup;
killed after training ended, it only evaluates). An output_dir a run of other flags trained in is
refused, naming the flags that differ; `--restart` discards that run and trains from scratch:

    python -m pipelines.train --output_dir=runs/uma2_default --learning_rate=0.01 --restart
`pipelines.launch` starts a local multi-process job; `uma2_tf.distribute` says what each strategy
does with `--batch_size`.
What the run writes is listed in `uma2_tf.training`.
"""
import uma2_tf  # noqa: F401  (before TensorFlow: selects tf_keras)

import dataclasses
import os
import sys

from absl import app, flags, logging

from uma2_tf import atomic_files, config_flags, run_dir, training
from uma2_tf.data import reading, samplers
from uma2_tf.sources import registry

FLAGS = flags.FLAGS
# Every field of `TrainConfig` is a flag: --dataset, --epochs, --sampling.ratio, --loss.lambdas, ...
config_flags.define(training.TrainConfig)
config_flags.define_config_file_flag()
# The names the CLI had before the configs were nested.
ALIASES = {
    "strategy_name": "sampling.strategy", "ratio": "sampling.ratio",
    "num_negatives": "sampling.num_negatives", "c_distribution": "sampling.c_distribution",
    "b_stages": "sampling.b_stages", "popularity_alpha": "sampling.popularity_alpha",
    "max_history": "sampling.max_history", "lambdas": "loss.lambdas",
    "propensity_floor": "loss.propensity_floor",
    "weight_normalization": "loss.weight_normalization",
    "space_weights": "loss.space_weights", "nsdn": "loss.use_nsdn",
    "propensity_weights": "loss.propensity_weights",
    "negatives": "sampling.strategy", "popularity_source": "sampling.popularity_source",
    "hybrid_share": "sampling.hybrid_share", "corpus_negatives": "sampling.corpus_negatives",
    "logq": "softmax.logq", "temperature": "softmax.temperature",
    "sampled_negatives": "sampling.sampled_negatives", "ihn_beta": "remi.ihn_beta",
    "rr_lambda": "remi.rr_lambda",
}
config_flags.define_aliases(ALIASES)
flags.DEFINE_boolean("restart", False, "Remove what an earlier run left in --output_dir "
                     "(backup, checkpoints, history, results) and train from scratch. Without "
                     "it the run is resumed, or refused if other flags trained it.")


def config_from_flags() -> training.TrainConfig:
  """The `TrainConfig` the flags describe (over `--config`'s file when given); ValueError naming
  the flag on bad values.

  `--seed` seeds the sampler too unless `--sampling.seed` is given, as it always has.
  """
  config = config_flags.resolve(training.TrainConfig)
  if config_flags.present("seed") and not config_flags.present("sampling.seed"):
    config = dataclasses.replace(
        config, sampling=dataclasses.replace(config.sampling, seed=config.seed))
  return config


def serve_cluster(task) -> None:
  """Runs this process as a parameter_server job's worker or ps: serves the cluster until
  stopped."""
  import tensorflow as tf

  from uma2_tf import distribute

  # Workers wait out a ps that is briefly unreachable instead of failing their step at once.
  os.environ.setdefault("GRPC_FAIL_FAST", "use_caller")
  cluster = tf.train.ClusterSpec(distribute.tf_config()["cluster"])
  logging.info("serving the cluster as %s %d", task.type, task.index)
  tf.distribute.Server(cluster, job_name=task.type, task_index=task.index, protocol="grpc",
                       start=True).join()


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments {argv[1:]}")
  from uma2_tf import distribute

  # Everything a user can get wrong is checked before training starts, as one line; an error
  # after that is a bug and keeps its traceback, but for a shard found corrupt on reading it.
  try:
    config = config_from_flags()
    task = distribute.current_task()
    if config.strategy in ("multi_worker", "parameter_server"):
      distribute.check_cluster(config.strategy)
      if config.strategy == "parameter_server" and task.type != "chief":
        serve_cluster(task)
        return 0
    # Before any other TensorFlow op: multi_worker configures the runtime's collectives.
    strategy = distribute.build_strategy(config.strategy)
    training.check_output_dir(config, restart=FLAGS.restart)
    dataset = registry.load(config.dataset, config.data_dir)
    # B asked of logs without a recall log, unknown --b_stages: one line here, not a traceback
    # later.
    samplers.check_config_for_schema(config.sampling, dataset.schema, config.dataset)
    if max(config.eval_ks) >= dataset.schema.num_items:
      raise ValueError(f"--eval_ks: the largest K ({max(config.eval_ks)}) must be below the "
                       f"corpus size of {config.dataset} ({dataset.schema.num_items - 1} items)")
  except (ValueError, FileNotFoundError) as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  try:
    # A progress bar in a terminal; one line per epoch in a log file or a launcher's stream.
    training.train(config, verbose=1 if sys.stdout.isatty() else 2, strategy=strategy, task=task,
                   restart=FLAGS.restart)
  except (reading.CorruptShardError, run_dir.BrokenCheckpointError) as e:
    # Found only once training reads that shard, or resumes from that checkpoint.
    print(f"error: {e}", file=sys.stderr)
    return 2
  except Exception as e:  # noqa: BLE001  A full disk is the machine's state, not a bug.
    full = atomic_files.out_of_space(e)
    if full is None:
      raise
    print(f"error: {full}; free some space and run the same command: it resumes from the last "
          "complete backup", file=sys.stderr)
    return 2
  if task.is_chief:
    logging.info("results in %s", config.output_dir)
  return 0


if __name__ == "__main__":
  app.run(main)

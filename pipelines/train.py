"""Trains and evaluates a model (`make train`); only wires flags onto `training.TrainConfig`.

    python -m pipelines.train --dataset=uma2_simulated/default --output_dir=runs/uma2_default
    python -m pipelines.train --nsdn=false --strategy_name=ss_ab --output_dir=runs/gmm_ss_ab
    python -m pipelines.train --tower=dat --lambdas=1,1,1,0.5,0.5 --epochs=3
    python -m pipelines.train --nsdn=false --space_weights=1,1,0.25 --output_dir=runs/uma2_sos
    python -m pipelines.train --dataset=recflow/default --b_stages=rank_neg   # B: ranking's negatives

    python -m pipelines.train --precision=mixed_bfloat16
    TF_CONFIG='{"cluster": ...}' python -m pipelines.train --strategy=multi_worker   # on each host

Restarting a killed run with the same command resumes it (BackupAndRestore in output_dir/backup).
`pipelines.launch` starts a local multi-process job; `uma2_tf.distribute` says what each strategy
does with `--batch_size`.
What the run writes is listed in `uma2_tf.training`.
"""
import uma2_tf  # noqa: F401  (before TensorFlow: selects tf_keras)

import os
import sys

from absl import app, flags, logging

from uma2_tf.data import sampling
from uma2_tf.models import tasks

FLAGS = flags.FLAGS
flags.DEFINE_string("dataset", "uma2_simulated/default", "TFDS dataset name with config.")
flags.DEFINE_string("data_dir", os.path.expanduser("~/tensorflow_datasets"), "TFDS data dir.")
flags.DEFINE_string("output_dir", "runs/uma2_default", "Where the run writes its results.")
flags.DEFINE_string("strategy", "auto", "tf.distribute strategy: auto, default, one_device, mirrored, "
                    "multi_worker or parameter_server (the last two read TF_CONFIG; see "
                    "uma2_tf.distribute and pipelines.launch).")
flags.DEFINE_string("precision", "float32", "float32, mixed_float16 or mixed_bfloat16 (the loss stays "
                    "float32).")
flags.DEFINE_string("tower", "youtube_dnn", "GMM tower: youtube_dnn, dat, fm, mind, esam_youtube_dnn or "
                    "esam_dat.")
flags.DEFINE_boolean("nsdn", True, "UMA2 (propensity heads and weights); false trains the plain GMM.")
flags.DEFINE_boolean("share_embeddings", True, "NSDN heads share the tower's embedding tables.")
flags.DEFINE_list("lambdas", ["1", "1", "1", "1", "1"], "λ1..λ5 of the loss (A, B, C, ER, RE).")
flags.DEFINE_float("propensity_floor", 0.05, "Propensities are clipped below at this value.")
flags.DEFINE_string("weight_normalization", "none", "none or self_normalized.")
flags.DEFINE_list("space_weights", ["1", "1", "1"],
                  "Static weights of A, B, C negatives without NSDN (--nsdn=false); "
                  "UMA2_SOS is 1,1,0.25 (tasks.SOS_RANDOM_WEIGHT).")
flags.DEFINE_string("strategy_name", "ss_abc_fixed",
                    f"Negative sampling strategy: {', '.join(sampling.STRATEGIES)}.")
flags.DEFINE_list("ratio", ["1", "4", "20"], "A:B:C ratio of ss_abc_fixed.")
flags.DEFINE_integer("num_negatives", 25, "Negatives per positive.")
flags.DEFINE_string("c_distribution", "uniform", "Space C sampling: uniform or popularity.")
flags.DEFINE_list("b_stages", [],
                  "Comma list of pipeline stages whose recalled-unexposed items form space B (datasets "
                  "with stages, e.g. recflow: --b_stages=rank_neg); empty: every recalled-unexposed item.")
flags.DEFINE_integer("batch_size", 512, "Global batch size in positives.")
flags.DEFINE_float("learning_rate", 1e-3, "Adam learning rate.")
flags.DEFINE_integer("epochs", 5, "Maximum epochs.")
flags.DEFINE_integer("early_stopping_patience", 2, "Epochs without improvement before stopping (0: off).")
flags.DEFINE_string("monitor", "recall@100", "Evaluation metric for early stopping and best weights.")
flags.DEFINE_list("eval_ks", ["50", "100", "200"], "K's of the retrieval metrics.")
flags.DEFINE_integer("backup_every_steps", 50, "BackupAndRestore frequency in steps.")
flags.DEFINE_integer("seed", 0, "Seed of the model and the sampler.")


def _numbers(flag: str, values, kind=float) -> tuple:
  try:
    return tuple(kind(v) for v in values)
  except ValueError:
    raise ValueError(f"--{flag}: expected comma-separated numbers, got {','.join(values)!r}") from None


def config_from_flags():
  """The `TrainConfig` the flags describe; raises ValueError naming the flag on bad values."""
  from uma2_tf import training

  def build(flag_names, make):
    try:
      return make()
    except ValueError as e:
      raise ValueError(f"{flag_names}: {e}") from None

  sampling_config = build("--strategy_name/--ratio/--num_negatives/--c_distribution/--b_stages", lambda: sampling.SamplingConfig(
      strategy=FLAGS.strategy_name, num_negatives=FLAGS.num_negatives,
      ratio=_numbers("ratio", FLAGS.ratio, int), c_distribution=FLAGS.c_distribution, seed=FLAGS.seed,
      b_stages=tuple(s.strip() for s in FLAGS.b_stages if s.strip())))
  loss_config = build(
      "--lambdas/--propensity_floor/--weight_normalization/--space_weights/--nsdn",
      lambda: tasks.LossConfig(
          lambdas=_numbers("lambdas", FLAGS.lambdas), propensity_floor=FLAGS.propensity_floor,
          weight_normalization=FLAGS.weight_normalization, use_nsdn=FLAGS.nsdn,
          space_weights=_numbers("space_weights", FLAGS.space_weights)))
  return build("flags", lambda: training.TrainConfig(
      dataset=FLAGS.dataset, data_dir=os.path.expanduser(FLAGS.data_dir), output_dir=FLAGS.output_dir,
      strategy=FLAGS.strategy, precision=FLAGS.precision, tower=FLAGS.tower, share_embeddings=FLAGS.share_embeddings,
      sampling=sampling_config, loss=loss_config, batch_size=FLAGS.batch_size,
      learning_rate=FLAGS.learning_rate, epochs=FLAGS.epochs,
      early_stopping_patience=FLAGS.early_stopping_patience, monitor=FLAGS.monitor,
      eval_ks=_numbers("eval_ks", FLAGS.eval_ks, int), backup_every_steps=FLAGS.backup_every_steps,
      seed=FLAGS.seed))


def serve_cluster(task) -> None:
  """Runs this process as a parameter_server job's worker or ps: serves the cluster until stopped."""
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
  from uma2_tf import distribute, training
  from uma2_tf.data import datasets

  # Everything a user can get wrong is checked before training starts, as one line; an error
  # after that is a bug and keeps its traceback.
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
    dataset = datasets.load(config.dataset, config.data_dir)
    # B asked of logs without a recall log, unknown --b_stages: one line here, not a traceback later.
    sampling.check_config_for_schema(config.sampling, dataset.schema, config.dataset)
    if max(config.eval_ks) >= dataset.schema.num_items:
      raise ValueError(f"--eval_ks: the largest K ({max(config.eval_ks)}) must be below the corpus size "
                       f"of {config.dataset} ({dataset.schema.num_items - 1} items)")
  except (ValueError, FileNotFoundError) as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  # A progress bar in a terminal; one line per epoch in a log file or a launcher's stream.
  training.train(config, verbose=1 if sys.stdout.isatty() else 2, strategy=strategy, task=task)
  if task.is_chief:
    logging.info("results in %s", config.output_dir)
  return 0


if __name__ == "__main__":
  app.run(main)

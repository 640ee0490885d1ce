"""Starts a local distributed training job: one process per task on 127.0.0.1
(`make train-distributed`).

    python -m pipelines.launch --workers=2 -- --dataset=uma2_simulated/tiny --output_dir=runs/mw
    python -m pipelines.launch --strategy=parameter_server --workers=2 --ps=2 -- --epochs=3

Everything after `--` goes to `pipelines.train` unchanged, in every process; the launcher adds
`--strategy` and, per process, the TF_CONFIG that names the cluster and that process's task:

- `multi_worker`: workers 0..N-1 (worker 0 is the chief: it writes the run's files). All train in
  lockstep; the job succeeds when every worker has finished.
- `parameter_server`: a chief (the coordinator: runs `model.fit`, the callbacks and the run's
  files), N workers and P parameter servers (these two only serve the cluster: `pipelines.train`
  starts a `tf.distribute.Server` for them). The job succeeds when the chief has finished; the
  servers are then stopped.

Each process's output is streamed with a `[worker 1]` prefix. If any process fails, the others are
stopped and the launcher exits with that process's status, so a job never hangs on a dead peer.
On a real cluster, start the same `pipelines.train` command on every host with that host's
TF_CONFIG instead (README, "Distributed training").
"""
import sys

from absl import app, flags

from uma2_tf import launcher

FLAGS = flags.FLAGS
flags.DEFINE_enum("strategy", "multi_worker", ["multi_worker", "parameter_server"],
                  "Which tf.distribute strategy the job runs.")
flags.DEFINE_integer("workers", 2, "Worker processes (multi_worker: worker 0 is the chief).")
flags.DEFINE_integer("ps", 2, "Parameter-server processes (parameter_server only).")
flags.DEFINE_string("host", "127.0.0.1", "Address every task listens on.")
flags.DEFINE_float("grace_seconds", 10.0, "How long stopped processes get before they are killed.")


def main(argv):
  try:
    return launcher.launch(FLAGS.strategy, FLAGS.workers, FLAGS.ps, argv[1:], FLAGS.host,
                           FLAGS.grace_seconds)
  except ValueError as e:
    print(f"error: {e}", file=sys.stderr)
    return 2


if __name__ == "__main__":
  app.run(main)

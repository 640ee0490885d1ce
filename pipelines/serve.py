"""Serves an export dir over TF Serving's REST API (`make serve`); see `uma2_tf.serving.server`.

    python -m pipelines.serve --export_dir=exports/uma2_default --model_name=uma2
    python -m pipelines.serve --variant=brute_force_model --port=8502   # exact, stock TF ops only

    curl -d '{"instances": [{"user_id": 5, "history": [31, 7]}], "k": 10}' \
        http://127.0.0.1:8501/v1/models/uma2:predict

Serves the newest version in --export_dir that loads and swaps in a higher one once its files are
all there (checked every --poll_seconds). The ScaNN variant (the default) needs scann[tf]==1.4.2.

What one client may send and hold is bounded (see `uma2_tf.serving.transport`): --max_body_bytes
(413), --max_header_bytes (431), --read_timeout (408 for a request that does not arrive whole),
--idle_timeout (idle connections closed), --max_connections (503 past it). Metrics for Prometheus
are at /monitoring/prometheus/metrics.
"""
from __future__ import annotations

import uma2_tf  # noqa: F401  (before TensorFlow: selects tf_keras)

import os
import sys

from absl import app, flags, logging

FLAGS = flags.FLAGS
flags.DEFINE_string("export_dir", "exports/uma2_default", "Base dir of the model's versions.")
flags.DEFINE_string("model_name", "uma2", "Name in the URL: /v1/models/<model_name>:predict.")
flags.DEFINE_enum("variant", "retrieval_model", ["retrieval_model", "brute_force_model"],
                  "retrieval_model: ScaNN (needs scann); brute_force_model: exact, stock TF ops.")
flags.DEFINE_string("host", "127.0.0.1", "Address to listen on.")
flags.DEFINE_integer("port", 8501, "Port to listen on (TF Serving's REST port by default).")
flags.DEFINE_float("poll_seconds", 2.0, "How often the export dir is checked for a newer version.")
flags.DEFINE_integer("max_batch", 256, "Most users one request may ask for.")
flags.DEFINE_boolean("access_log", False, "Log every request (costs latency under load).")
flags.DEFINE_integer("max_body_bytes", 4 << 20,
                     "Largest request body (4 MiB; a max_batch=256 request of long histories is "
                     "~100 kB). A larger Content-Length gets 413 before its body is read; a "
                     "chunked body is cut off with 413 when it passes the limit.")
flags.DEFINE_integer("max_header_bytes", 16 << 10,
                     "Largest request line plus headers; past it 431 (414 for the URL alone).")
flags.DEFINE_float("read_timeout", 10.0,
                   "Seconds a request has to arrive whole (headers and body) once its first bytes "
                   "came in; then 408 and the connection closes.")
flags.DEFINE_float("idle_timeout", 30.0,
                   "Seconds a connection may sit with no request under way (a new one too) before "
                   "it is closed. Clients' pools should drop idle connections sooner.")
flags.DEFINE_integer("max_connections", 500,
                     "Most open connections; one more is answered 503 and closed. Keep it under "
                     "the process's open-file limit (ulimit -n).")
flags.DEFINE_integer("tf_threads", 1,
                     "TensorFlow's intra- and inter-op threads (0: TensorFlow's default, one per "
                     "core). Concurrency comes from micro-batching and ScaNN's own batch threads; "
                     "on 2 cores more TF threads only contend (p99 25 -> 18 ms, `make bench "
                     "ONLY=serving`). Raise it for the brute-force variant on a big host.")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments {argv[1:]}")
  if not os.path.isdir(FLAGS.export_dir):
    print(f"error: --export_dir={FLAGS.export_dir} does not exist (write one with `make export`)",
          file=sys.stderr)
    return 2
  if FLAGS.tf_threads:
    # Read when TensorFlow initialises (the import below), so every pool it creates is this size.
    os.environ["TF_NUM_INTRAOP_THREADS"] = str(FLAGS.tf_threads)
    os.environ["TF_NUM_INTEROP_THREADS"] = str(FLAGS.tf_threads)
  import uvicorn

  from uma2_tf.serving import monitoring, server, transport

  # What a user can get wrong (empty export dir, scann missing, no version that loads, bad flags)
  # fails here as one line, before the port is opened.
  try:
    limits = transport.Limits(
        max_body_bytes=FLAGS.max_body_bytes, max_header_bytes=FLAGS.max_header_bytes,
        read_timeout=FLAGS.read_timeout, idle_timeout=FLAGS.idle_timeout,
        max_connections=FLAGS.max_connections)
    application = server.create_app(FLAGS.export_dir, FLAGS.model_name, variant=FLAGS.variant,
                                    poll_seconds=FLAGS.poll_seconds, max_batch=FLAGS.max_batch)
  except (FileNotFoundError, ImportError, ValueError) as e:
    print(f"error: {monitoring.escape(e, 5000)}", file=sys.stderr)
    return 2
  logging.info("serving %s at http://%s:%d/v1/models/%s (%s)", FLAGS.export_dir, FLAGS.host,
               FLAGS.port, FLAGS.model_name, limits)
  # ws="none": no WebSocket upgrade (the protocol answers an Upgrade request, then closes).
  # timeout_keep_alive is the protocol's idle_timeout; given here too so uvicorn agrees.
  config = uvicorn.Config(application, host=FLAGS.host, port=FLAGS.port,
                          access_log=FLAGS.access_log, log_level="info",
                          http=transport.http_protocol(limits), ws="none",
                          timeout_keep_alive=FLAGS.idle_timeout)
  monitoring.escape_logs()  # After uvicorn.Config: it installs the handlers of its loggers.
  uvicorn.Server(config).run()
  return 0


if __name__ == "__main__":
  app.run(main)

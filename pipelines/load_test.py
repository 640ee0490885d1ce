"""A bounded HTTP load on a predict endpoint: C concurrent clients for T seconds, latencies out.

    python -m pipelines.load_test --url=http://127.0.0.1:8501/v1/models/uma2:predict \
        --concurrency=8 --seconds=20 --k=100 --num_users=10000

Each client holds one keep-alive connection and sends one user per request, waiting for each answer
before the next (a closed loop, so the load is bounded by the clients). Prints one JSON line:
requests, errors, qps, p50_ms, p90_ms, p99_ms, max_ms.
"""
import http.client
import json
import random
import threading
import time
import urllib.parse

from absl import app, flags

FLAGS = flags.FLAGS
flags.DEFINE_string("url", "http://127.0.0.1:8501/v1/models/uma2:predict", "Predict endpoint.")
flags.DEFINE_integer("concurrency", 8, "Concurrent clients.")
flags.DEFINE_float("seconds", 20.0, "How long the load lasts.")
flags.DEFINE_float("warmup_seconds", 2.0, "Load before measuring starts.")
flags.DEFINE_integer("k", 100, "Items asked per request.")
flags.DEFINE_integer("num_users", 1000, "Requests pick user ids uniformly in 1..num_users.")
flags.DEFINE_integer("seed", 0, "Seed of the user ids.")


def client(url, deadline, measure_from, k, num_users, seed, latencies, errors):
  parsed = urllib.parse.urlparse(url)
  connection = http.client.HTTPConnection(parsed.hostname, parsed.port, timeout=30)
  rng = random.Random(seed)
  while time.perf_counter() < deadline:
    body = json.dumps({"instances": [{"user_id": rng.randint(1, num_users)}], "k": k})
    start = time.perf_counter()
    try:
      connection.request("POST", parsed.path, body, {"Content-Type": "application/json"})
      response = connection.getresponse()
      response.read()
      ok = response.status == 200
    except (OSError, http.client.HTTPException):
      ok = False
      connection.close()
      connection = http.client.HTTPConnection(parsed.hostname, parsed.port, timeout=30)
    if start >= measure_from:
      (latencies if ok else errors).append(time.perf_counter() - start)
  connection.close()


def percentile(sorted_values, q):
  return sorted_values[min(len(sorted_values) - 1, int(q * len(sorted_values)))]


def main(argv):
  del argv
  now = time.perf_counter()
  measure_from = now + FLAGS.warmup_seconds
  deadline = measure_from + FLAGS.seconds
  latencies, errors = [], []
  threads = [threading.Thread(target=client,
                              args=(FLAGS.url, deadline, measure_from, FLAGS.k, FLAGS.num_users,
                                    FLAGS.seed + i, latencies, errors))
             for i in range(FLAGS.concurrency)]
  for t in threads:
    t.start()
  for t in threads:
    t.join()
  ms = sorted(1000 * x for x in latencies)
  report = {"requests": len(ms), "errors": len(errors), "qps": round(len(ms) / FLAGS.seconds, 1),
            "concurrency": FLAGS.concurrency, "k": FLAGS.k}
  if ms:
    report.update({"p50_ms": round(percentile(ms, 0.50), 2),
                   "p90_ms": round(percentile(ms, 0.90), 2),
                   "p99_ms": round(percentile(ms, 0.99), 2), "max_ms": round(ms[-1], 2)})
  print(json.dumps(report))


if __name__ == "__main__":
  app.run(main)

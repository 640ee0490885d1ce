"""Run by test_distributed.py in its own process: a parameter-server job on an in-process cluster
(2 ps, 1 worker, this process the coordinator), then an export of what it trained.

    python tests/ps_job.py DATA_DIR RUN_DIR EXPORT_DIR   -> prints one JSON line
"""
import uma2_tf  # noqa: F401

import json
import sys

import numpy as np
import tensorflow as tf

from uma2_tf.launcher import free_ports
from uma2_tf import distribute, export, training

NUM_PS = 2


def in_process_cluster(num_workers: int, num_ps: int):
  """TensorFlow servers for the workers and ps in this process; a resolver for the coordinator."""
  ports = free_ports(num_workers + num_ps)
  cluster = tf.train.ClusterSpec({"worker": [f"127.0.0.1:{p}" for p in ports[:num_workers]],
                                  "ps": [f"127.0.0.1:{p}" for p in ports[num_workers:]]})
  for kind, n in (("worker", num_workers), ("ps", num_ps)):
    for i in range(n):
      tf.distribute.Server(cluster, job_name=kind, task_index=i, protocol="grpc", start=True)
  return tf.distribute.cluster_resolver.SimpleClusterResolver(cluster, rpc_layer="grpc")


def main(data_dir, run_dir, export_dir):
  strategy = distribute.build_strategy(
    "parameter_server", cluster_resolver=in_process_cluster(1, NUM_PS)
  )
  config = training.TrainConfig(
    dataset="uma2_simulated/tiny",
    data_dir=data_dir,
    output_dir=run_dir,
    strategy="parameter_server",
    epochs=1,
    batch_size=128,
    early_stopping_patience=0,
    evaluate_each_epoch=False,
  )
  # The trainer's model is local to it; build the same one here to read the trained tables back.
  captured = {}
  build = training.build_model
  training.build_model = lambda *a, **k: captured.setdefault("model", build(*a, **k))
  try:
    results = training.train(config, verbose=0, strategy=strategy)
  finally:
    training.build_model = build
  model = captured["model"]
  table = model.tower.embeddings.item_id.embeddings
  # The live item embeddings, computed on the coordinator from the sharded tables.
  live = export.item_embeddings(model.tower, model.tower.embeddings.schema.num_items)[1:]

  version_dir = export.export_run(export.ExportConfig(run_dir=run_dir, export_dir=export_dir))
  exported = np.load(f"{version_dir}/{export.ITEM_EMBEDDINGS}")
  print(json.dumps({
      "recall@100": results["model"]["recall@100"],
      "sharded_variables": results["run"]["sharded_variables"],
      "item_table_shards": [v.device for v in table.variables],
      "item_table_rows": int(tf.concat([v for v in table.variables], axis=0).shape[0]),
      "item_embedding_max_abs_diff": float(np.abs(exported["embeddings"] - live).max()),
      "item_embedding_scale": float(np.abs(live).max()),
  }))


if __name__ == "__main__":
  main(*sys.argv[1:])

"""tf.distribute for the trainer: strategies by name, the cluster from TF_CONFIG, sharded tables.

    strategy = distribute.build_strategy("multi_worker")     # reads TF_CONFIG
    task = distribute.current_task()                         # Task(type="worker", index=1, ...)
    with strategy.scope(), distribute.embedding_tables():     # under parameter_server: sharded
      table = keras.layers.Embedding(10_000_000, 32)

Strategies (`--strategy`):

| name             | what                                                                 |
|------------------|----------------------------------------------------------------------|
| auto             | `mirrored` over the visible GPUs if any, else the default strategy   |
| default          | no distribution (one device)                                         |
| one_device       | the first GPU, else the CPU                                          |
| mirrored         | synchronous data parallel over this host's GPUs (else logical CPUs)  |
| multi_worker     | synchronous data parallel over every worker of TF_CONFIG's cluster   |
|                  | (MultiWorkerMirroredStrategy; each worker mirrors over its own GPUs) |
| parameter_server | asynchronous training: the `chief` coordinates, `worker`s run steps, |
|                  | variables live on the `ps` tasks, embedding tables sharded over them |

Global batch semantics. `batch_size` is the number of positives (each with its negatives) one
optimiser step consumes. Under the synchronous strategies it is split evenly over all replicas
(`replicas = workers x devices per worker`), each replica's loss is its mean divided by the number
of replicas, and the all-reduced gradient is that of the global batch: a run with the same
`batch_size` takes the same steps on 1 or N replicas (tests/test_distributed.py checks 1 against 2).
Scale `learning_rate` yourself if you grow `batch_size` with the replicas. Under `parameter_server`
each worker runs whole steps of `batch_size` on its own and applies them as they finish
(asynchronously); `steps_per_epoch` counts the steps of all workers together.

TF_CONFIG is TensorFlow's own cluster description, one per process:
`{"cluster": {"worker": ["host1:port", "host2:port"]}, "task": {"type": "worker", "index": 0}}`
(plus `"chief"` and `"ps"` lists for `parameter_server`). `pipelines/launch.py` writes them for a
local job on 127.0.0.1.
"""
from __future__ import annotations

import uma2_tf  # noqa: F401

import contextlib
import dataclasses
import json
import os
import threading

import tensorflow as tf

STRATEGIES = ("auto", "default", "one_device", "mirrored", "multi_worker", "parameter_server")
# Task types of TF_CONFIG's cluster each strategy knows.
_CLUSTER_TYPES = {"multi_worker": ("chief", "worker"),
                  "parameter_server": ("chief", "worker", "ps")}


@dataclasses.dataclass(frozen=True)
class Task:
  """This process's place in the cluster.

  Attributes:
    type: "chief", "worker" or "ps" (or "worker" with index 0 outside a cluster).
    index: index among the tasks of its type.
    is_chief: whether this process writes the run's files: the `chief` task, or worker 0 of a
      cluster without one (TensorFlow's convention).
    num_workers: processes that train (chief included under multi_worker).
  """
  type: str = "worker"
  index: int = 0
  is_chief: bool = True
  num_workers: int = 1


def tf_config() -> dict | None:
  """TF_CONFIG parsed and checked, or None when it is not set."""
  raw = os.environ.get("TF_CONFIG", "").strip()
  if not raw:
    return None
  try:
    config = json.loads(raw)
  except json.JSONDecodeError as e:
    raise ValueError(f"TF_CONFIG is not JSON ({e}): {raw[:200]!r}") from None
  cluster, task = config.get("cluster"), config.get("task")
  if not isinstance(cluster, dict) or not cluster:
    raise ValueError(f"TF_CONFIG needs a non-empty \"cluster\" mapping of task type to "
                     f"\"host:port\" lists, got {cluster!r}")
  for kind, addresses in cluster.items():
    if (not isinstance(addresses, list)
        or not all(isinstance(a, str) and ":" in a for a in addresses)):
      raise ValueError(f"TF_CONFIG cluster[{kind!r}] must be a list of \"host:port\", "
                       f"got {addresses!r}")
  if not isinstance(task, dict) or "type" not in task or "index" not in task:
    raise ValueError(f"TF_CONFIG needs \"task\": {{\"type\": ..., \"index\": ...}}, got {task!r}")
  if task["type"] not in cluster or not 0 <= int(task["index"]) < len(cluster[task["type"]]):
    raise ValueError(f"TF_CONFIG task {task} is not in its cluster (types and sizes: "
                     f"{ {k: len(v) for k, v in cluster.items()} })")
  return config


def current_task() -> Task:
  """This process's `Task` from TF_CONFIG (a one-process job when it is not set)."""
  config = tf_config()
  if config is None:
    return Task()
  cluster, task = config["cluster"], config["task"]
  kind, index = task["type"], int(task["index"])
  has_chief = bool(cluster.get("chief"))
  is_chief = kind == "chief" or (not has_chief and kind == "worker" and index == 0)
  # A chief trains beside the workers under multi_worker; with parameter servers it coordinates.
  trainers = (len(cluster.get("worker", []))
              + (0 if cluster.get("ps") else len(cluster.get("chief", []))))
  return Task(type=kind, index=index, is_chief=is_chief, num_workers=trainers)


def check_cluster(name: str) -> dict:
  """TF_CONFIG for strategy `name`, with one clear error when it cannot run that strategy."""
  config = tf_config()
  if config is None:
    raise ValueError(f"--strategy={name} needs TF_CONFIG describing the cluster (see "
                     "uma2_tf.distribute; `python -m pipelines.launch` writes it for a local job)")
  unknown = sorted(set(config["cluster"]) - set(_CLUSTER_TYPES[name]))
  if unknown:
    raise ValueError(f"--strategy={name}: TF_CONFIG cluster has task types {unknown}; "
                     f"it takes {list(_CLUSTER_TYPES[name])}")
  if name == "parameter_server":
    missing = [kind for kind in ("chief", "worker", "ps") if not config["cluster"].get(kind)]
    if missing:
      raise ValueError(f"--strategy=parameter_server: TF_CONFIG cluster has no {missing} task; "
                       "it needs one chief, at least one worker and at least one ps")
  return config


def build_strategy(name: str, *, cluster_resolver=None) -> tf.distribute.Strategy:
  """The strategy called `name` (see the module docstring).

  `cluster_resolver`: for `multi_worker` / `parameter_server`, a resolver to use instead of
  TF_CONFIG's (tests run an in-process cluster this way).
  """
  if name not in STRATEGIES:
    raise ValueError(f"strategy must be one of {STRATEGIES}, got {name!r}")
  if name in ("multi_worker", "parameter_server"):
    # Before anything that starts TensorFlow's runtime (listing devices does): multi_worker
    # configures its collectives, which it can only do at start-up.
    if cluster_resolver is None:
      check_cluster(name)
      cluster_resolver = tf.distribute.cluster_resolver.TFConfigClusterResolver()
    if name == "multi_worker":
      # Each worker mirrors over its own GPUs (NCCL between them), gRPC ring between workers.
      return tf.distribute.MultiWorkerMirroredStrategy(cluster_resolver=cluster_resolver)
    num_ps = cluster_resolver.cluster_spec().num_tasks("ps")
    return tf.distribute.ParameterServerStrategy(
        cluster_resolver, variable_partitioner=EmbeddingTablePartitioner(num_ps))
  gpus = tf.config.list_logical_devices("GPU")
  if name == "auto":
    return tf.distribute.MirroredStrategy() if gpus else tf.distribute.get_strategy()
  if name == "default":
    return tf.distribute.get_strategy()
  if name == "one_device":
    return tf.distribute.OneDeviceStrategy(gpus[0].name if gpus else "/cpu:0")
  if name == "mirrored":
    # Mirrored over the GPUs, or over the logical CPUs where there is none (one by default; more
    # when the host is split with tf.config.set_logical_device_configuration).
    if gpus:
      return tf.distribute.MirroredStrategy([d.name for d in gpus])
    # Between CPU devices, reduce through one device: collective all-reduce across logical CPUs can
    # launch gradient packs in a different order on each replica and abort with a shape mismatch.
    cpus = tf.config.list_logical_devices("CPU")
    return tf.distribute.MirroredStrategy([d.name for d in cpus],
                                          cross_device_ops=tf.distribute.ReductionToOneDevice())
  raise AssertionError(name)


_tables = threading.local()


@contextlib.contextmanager
def embedding_tables():
  """Variables created inside are embedding tables: `EmbeddingTablePartitioner` shards them.

  Keras builds layers lazily, so this wraps where the tables' variables are created (their
  `build`), not where the layers are constructed.
  """
  depth = getattr(_tables, "depth", 0)
  _tables.depth = depth + 1
  try:
    yield
  finally:
    _tables.depth = depth


def in_embedding_tables() -> bool:
  return getattr(_tables, "depth", 0) > 0


class EmbeddingTablePartitioner:
  """Shards embedding tables row-wise over the parameter servers; leaves other variables whole.

  A table of R rows becomes up to `num_shards` `tf.Variable`s of about R / num_shards rows each,
  placed round-robin on the ps tasks (a `ShardedVariable`: lookups go to the shard that holds the
  row, gradients stay sparse per shard, checkpoints store the whole table, so a sharded run's
  checkpoint loads into an unsharded model). Each shard holds at least `min_shard_bytes`: a small
  table (a feature's vocabulary) is not worth one remote read per shard. Dense layers' kernels are
  small and read whole by every step, so they are not split.
  """

  def __init__(self, num_shards: int, min_shard_bytes: int = 16 << 10):
    if num_shards < 1:
      raise ValueError(f"num_shards must be >= 1, got {num_shards}")
    self.num_shards = num_shards
    self.min_shard_bytes = min_shard_bytes

  def __call__(self, shape, dtype, axis=0):
    partitions = [1] * len(shape)
    if in_embedding_tables() and len(shape) == 2:
      size = int(shape[0]) * int(shape[1]) * tf.as_dtype(dtype).size
      partitions[axis] = int(max(1, min(self.num_shards, shape[axis],
                                        size // max(1, self.min_shard_bytes))))
    return partitions


def build_tables(*layers) -> None:
  """Builds Keras `Embedding` layers now, as embedding tables (sharded under parameter_server).

  Call it where the layers are constructed (inside the strategy's scope, as every model is): a
  table built later, lazily at its first call, would miss `embedding_tables()`.
  """
  with embedding_tables():
    for layer in layers:
      if not layer.built:
        layer.build(None)


def sharded_variables(model) -> dict:
  """{the table's path in the model: [rows of each shard]} of its sharded embedding tables."""
  import tf_keras as keras
  from tensorflow.python.distribute import sharded_variable  # ShardedVariable has no public alias

  paths = {}
  for path, layer in model._flatten(predicate=lambda x: isinstance(x, keras.layers.Embedding),
                                    with_path=True):
    # A layer is reachable by several paths (Keras' own tracking lists too): keep the named one.
    name = "/".join(str(p) for p in path)
    if id(layer) not in paths or "_self_tracked" in paths[id(layer)][0]:
      paths[id(layer)] = (name, layer)
  return {name: [int(s.shape[0]) for s in layer.embeddings.variables]
          for name, layer in sorted(paths.values(), key=lambda x: x[0])
          if isinstance(getattr(layer, "embeddings", None), sharded_variable.ShardedVariable)}


def weights_fingerprint(model) -> str:
  """sha256 of the model's trainable weights, in order: equal on every worker of a synchronous job
  that is in step (each logs it at the end of training)."""
  import hashlib

  digest = hashlib.sha256()
  for weight in model.trainable_weights:
    digest.update(weight.numpy().tobytes())
  return digest.hexdigest()

"""Exports a trained run as versioned SavedModels for serving (`make export`).

    paths = export.export_run(ExportConfig(run_dir="runs/uma2_default",
                                           export_dir="exports/uma2_default"))
    # exports/uma2_default/<version>/ with:
    #   query_model/         stock TF ops: user features -> user_embedding          (TF Serving)
    #   retrieval_model/     user features, k -> top-k item_ids, scores, by a ScaNN index
    #                        (needs `import scann` in the loading process: ScaNN's ops are custom)
    #   brute_force_model/   the same signature, exact, stock TF ops only             (TF Serving)
    #   item_embeddings.npz  item_ids [N] (dense), raw_item_ids [N] (as the models return them),
    #                        embeddings [N, d] of the whole corpus
    #   metadata.json        inputs and their vocabularies, max_k, num_interests, embedding_dim,
    #                        ScaNN parameters and `scann_check`, the run's config and metrics,
    #                        dataset, commit
    #   index_check.md       the ScaNN index measured on real users (`index_check`)

Every signature is `serving_default` and takes `user_id` [B], one int64 [B] input per user
feature (its dense value), `history` [B, H] (clicked item ids, oldest first, padded after them);
the retrieval models also take `k`, an int32 scalar (1 <= k <= max_k), and return `item_ids`,
`scores` [B, k] and `oov_ids` [B] (how many of the user's ids the export does not know). The ids
are the logs' raw ones, int64 or string, for a dataset that keeps them, the dense ones (int64,
0-padded) for a simulated world: `metadata.json`'s `ids` says which, and the padding value
(`uma2_tf.raw_ids`). Unknown ids are answered, not refused.

The query model's output is `user_embedding`: float32 [B, d] for a single-vector tower (K = 1,
also a multi-interest tower built with one interest), [B, K, d] for a multi-interest tower with
K > 1 interests (MIND), metadata.json's `num_interests`. The retrieval models answer a K > 1
tower with the same outputs as any other: each interest retrieves its top k from the index, and
the K·k candidates merge inside the graph (`merge_interests`): an item's score is its best
interest's, an item reached by several interests is listed once, equal scores list the lower
dense id first, as `metrics.top_k_items` ranks offline.

The ScaNN index is checked on real queries, the users of the first `check_queries` test requests
(`index_check`: recall@k against exact search, queries/s of both indexes); automatic parameters
are raised until recall reaches `scann_min_recall`, or the export fails, writing nothing.

The version is written in a temporary directory beside the others (a name that is not a number,
so servers ignore it) and renamed into place once complete: a server polling the export dir never
sees half a version.
"""
from __future__ import annotations

import uma2_tf  # noqa: F401

import dataclasses
import json
import os
import shutil
import subprocess
import time

import numpy as np
import tensorflow as tf
import tf_keras as keras

from uma2_tf import atomic_files, evaluation, index_check, raw_ids, training
from uma2_tf import run_dir as run_dir_lib
from uma2_tf.run_dir import RunDir
from uma2_tf.sources import registry
from uma2_tf.data import reading, samplers
from uma2_tf.data import schema as schema_lib
from uma2_tf.serving import loader

# The names of a version's parts are defined once, by the loader a server imports (lightweight).
QUERY_MODEL = loader.QUERY_MODEL
RETRIEVAL_MODEL = loader.RETRIEVAL_MODEL
BRUTE_FORCE_MODEL = loader.BRUTE_FORCE_MODEL
METADATA = loader.METADATA
read_metadata = loader.read_metadata
ITEM_EMBEDDINGS = "item_embeddings.npz"
INDEX_CHECK = "index_check.md"
scann_parameters = index_check.scann_parameters
item_embeddings = evaluation.item_embeddings


@dataclasses.dataclass(frozen=True)
class ExportConfig:
  """What to export and how to index it.

  Attributes:
    run_dir: a training output dir (config.json, checkpoints/final).
    export_dir: the model's base dir; versions are its numbered subdirs.
    version: the version to write; 0 means one more than the highest present.
    model_name: the name servers serve it under.
    max_k: the largest k the retrieval models answer; 0 means min(1000, corpus size).
    scann_leaves: ScaNN partitions; 0 means about sqrt(corpus size).
    scann_leaves_to_search: partitions searched per query (the recall/speed knob); 0 means a
      tenth of them, or more when that would hold fewer than 25K or 2 x scann_reorder items.
    scann_reorder: candidates re-scored exactly; 0 means max(4 * 100, max_k) capped by the corpus.
    scann_min_recall: the least recall@k (k = min(100, max_k)) of ScaNN against exact search on
      real user queries; the check raises automatic parameters until it holds, or fails the
      export. With scann_leaves_to_search or scann_reorder given, it only measures and reports.
    check_queries: how many test requests' users query the index check; 0 skips the check.
    check_seconds: the least time of each of its queries/s measurements.
  """

  run_dir: str = "runs/uma2_default"
  export_dir: str = "exports/uma2_default"
  version: int = 0
  model_name: str = "uma2"
  max_k: int = 0
  scann_leaves: int = 0
  scann_leaves_to_search: int = 0
  scann_reorder: int = 0
  scann_min_recall: float = 0.95
  check_queries: int = 2000
  check_seconds: float = 1.0

  def __post_init__(self):
    for name in ("version", "max_k", "scann_leaves", "scann_leaves_to_search", "scann_reorder",
                 "check_queries"):
      if getattr(self, name) < 0:
        raise ValueError(f"{name} must be >= 0 (0: automatic), got {getattr(self, name)}")
    if not 0 < self.scann_min_recall <= 1:
      raise ValueError(f"scann_min_recall must be in (0, 1], got {self.scann_min_recall}")
    if self.check_seconds <= 0:
      raise ValueError(f"check_seconds must be > 0, got {self.check_seconds}")


def input_signature(schema: schema_lib.LogSchema, max_history: int,
                    ids: raw_ids.IdVocabulary | None = None) -> dict:
  """The serving inputs: user id, user features, history, each in its type in `ids` (int64,
  dense, when None)."""
  ids = ids or raw_ids.IdVocabulary.dense(schema)
  id_dtype = ids.tf_dtype
  spec = {schema_lib.USER_ID: tf.TensorSpec([None], id_dtype, name=schema_lib.USER_ID)}
  for name in schema.user_feature_names:
    dtype = tf.int64 if ids.features[name][0].dtype.kind == "i" else tf.string
    spec[name] = tf.TensorSpec([None], dtype, name=name)
  spec[schema_lib.HISTORY] = tf.TensorSpec([None, max_history], id_dtype, name=schema_lib.HISTORY)
  return spec


def input_metadata(schema: schema_lib.LogSchema, max_history: int,
                   ids: raw_ids.IdVocabulary) -> dict:
  """metadata.json's `inputs`: each one's type and shape, which values it takes (`ids`: raw or
  dense), the value standing for a missing feature or padding the history, and the size of its
  dense vocabulary."""
  inputs = {schema_lib.USER_ID: {"dtype": ids.dtype, "shape": [], "ids": ids.space,
                                 "vocab_size": schema.num_users}}
  for name, size in schema.user_features.items():
    values, missing = ids.features[name]
    inputs[name] = {"dtype": "int64" if values.dtype.kind == "i" else "string", "shape": [],
                    "ids": ids.space, "missing": missing, "vocab_size": size}
  inputs[schema_lib.HISTORY] = {"dtype": ids.dtype, "shape": [max_history], "ids": ids.space,
                                "padding": ids.padding, "vocab_size": schema.num_items}
  return inputs


def merge_interests(scores, ids, k):
  """Merges candidate lists by score: each id once, at its best score; the top k of them.

  The K interests of a user each retrieve their top k; an item's score is its best interest's, so
  the user's top k is among those K·k candidates (an item in it is in its best interest's top k).
  Stock TF ops only, so it runs inside the brute-force SavedModel too.

  Args:
    scores: float [B, M], the candidates' scores (M = K·k, interest-major); NaN marks a slot the
      index could not fill (ScaNN's padding), which never wins over a real score.
    ids: int [B, M], their (dense) item ids.
    k: int scalar, at most this many items per user.
  Returns:
    (scores, ids), [B, min(k, M)] each, by decreasing score, equal scores by lower id first (the
    rule of `metrics.top_k_items`). A slot left without a distinct real candidate has a NaN score,
    as ScaNN marks its own.
  """
  scores, ids = tf.convert_to_tensor(scores), tf.convert_to_tensor(ids)
  lowest = tf.constant(-np.inf, scores.dtype)
  key = tf.where(tf.math.is_nan(scores), lowest, scores)
  # Ordered by id, and within an id by decreasing score: two stable sorts, the minor key first.
  # The first of each run of equal ids then holds that id's best score; the others are dropped.
  order = tf.argsort(key, axis=1, direction="DESCENDING", stable=True)
  order = tf.gather(order, tf.argsort(tf.gather(ids, order, batch_dims=1), axis=1, stable=True),
                    batch_dims=1)
  ids, key = tf.gather(ids, order, batch_dims=1), tf.gather(key, order, batch_dims=1)
  first = tf.concat([tf.ones_like(ids[:, :1], tf.bool), tf.not_equal(ids[:, 1:], ids[:, :-1])],
                    axis=1)
  key = tf.where(first, key, lowest)
  # top_k keeps equal values in index order, here increasing id: ties list the lower id first.
  values, index = tf.math.top_k(key, k=tf.minimum(k, tf.shape(key)[1]), sorted=True)
  values = tf.where(tf.equal(values, lowest), tf.constant(np.nan, scores.dtype), values)
  return values, tf.gather(ids, index, batch_dims=1)


def _user_embedding(tower, dense, num_interests: int):
  """The tower's user embedding: [B, d], or [B, K, d] for K > 1 (a one-interest [B, 1, d] is
  squeezed, so it exports as a single-vector tower)."""
  embedding = tower.user_embedding(dense)
  if embedding.shape.rank == 3 and num_interests == 1:
    embedding = embedding[:, 0]
  return embedding


class _QueryModule(tf.Module):
  def __init__(self, tower, lookup: raw_ids.IdLookup, signature, num_interests: int = 1):
    super().__init__()
    self.tower, self.lookup = tower, lookup

    def serve(features):
      dense, _ = lookup.to_dense(features)
      return {"user_embedding": _user_embedding(tower, dense, num_interests)}

    self.serve = tf.function(serve, input_signature=[signature])


class _RetrievalModule(tf.Module):
  """user features, k -> top-k (item_ids, scores) by `index` (a TFRS top-k layer over dense ids),
  and `oov_ids`, how many of each user's ids the export does not know. With K > 1 interests, each
  searches the index and `merge_interests` combines their results."""

  def __init__(self, tower, lookup: raw_ids.IdLookup, index, signature, max_k: int,
               num_interests: int = 1):
    super().__init__()
    self.tower, self.lookup, self.index = tower, lookup, index

    def serve(features, k):
      k = tf.ensure_shape(k, [])
      tf.debugging.assert_greater(k, 0, message="k must be >= 1")
      tf.debugging.assert_less_equal(k, max_k, message=f"k must be <= max_k={max_k}")
      dense, oov_ids = lookup.to_dense(features)
      queries = _user_embedding(tower, dense, num_interests)
      if num_interests == 1:
        scores, ids = index(queries, k=k)
      else:
        # One search of B·K queries (the indexes take rank-2 queries); rows come back user-major,
        # so [B·K, k] reshapes to each user's K·k candidates.
        users = tf.shape(queries)[0]
        dim = queries.shape[-1] if queries.shape[-1] is not None else tf.shape(queries)[-1]
        scores, ids = index(tf.reshape(queries, [-1, dim]), k=k)
        scores, ids = merge_interests(tf.reshape(scores, [users, -1]),
                                      tf.reshape(ids, [users, -1]), k)
      return {"item_ids": lookup.to_raw_items(ids), "scores": scores, "oov_ids": oov_ids}

    self.serve = tf.function(serve,
                             input_signature=[signature, tf.TensorSpec([], tf.int32, name="k")])


def next_version(export_dir: str) -> int:
  if not os.path.isdir(export_dir):
    return 1
  return max(loader.list_versions(export_dir), default=0) + 1


def _commit() -> str:
  try:
    out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10,
                         cwd=os.path.dirname(os.path.abspath(__file__)))
    return out.stdout.strip() if out.returncode == 0 else "unknown"
  except OSError:
    return "unknown"


def load_trained_model(run_dir: str):
  """(TrainConfig, BuiltDataset, model with the run's final weights)."""

  config = training.TrainConfig.load(run_dir)
  weights = RunDir(run_dir).final_checkpoint
  if not tf.io.gfile.exists(weights + ".index"):
    raise FileNotFoundError(f"{weights}.index does not exist: the run in {run_dir} has not "
                            f"finished")
  run_dir_lib.check_checkpoint(weights)
  dataset = registry.load(config.dataset, config.data_dir)
  model = training.build_model(config, dataset)
  with reading.naming_corrupt_shards(dataset):
    model(next(iter(samplers.make_training_dataset(dataset, config.sampling, 2, shuffle=False))))
  model.load_weights(weights).expect_partial()
  return config, dataset, model


def export_run(config: ExportConfig) -> str:
  """Exports the run's final weights as a new version; returns its directory.

  The exported models are float32 whatever precision the run trained in (its checkpoint's
  variables are float32): a mixed global policy left set in this process would make TFRS's index
  layers cast the queries to 16 bits, which ScaNN rejects.
  """
  policy = keras.mixed_precision.global_policy()
  keras.mixed_precision.set_global_policy("float32")
  try:
    atomic_files.check_writable(config.export_dir, "--export_dir")
    train_config, dataset, model = load_trained_model(config.run_dir)
    run = RunDir(config.run_dir)
    about_run = {
        "run_dir": os.path.abspath(config.run_dir), "dataset": train_config.dataset,
        "dataset_dir": dataset.directory, "config": json.loads(train_config.to_json()),
        "metrics": run.read_json(run_dir_lib.METRICS_JSON) if run.is_finished() else None,
    }
    # Unseen users are answered from their features and history (see `raw_ids`).
    raw_ids.zero_unknown_user_rows(model)
    vocabulary = raw_ids.IdVocabulary.of_dataset(dataset.directory, dataset.schema)
    max_history = train_config.sampling.max_history
    check_users = None
    if config.check_queries:  # Real queries: the test day's (or the last split's) first users.
      split = "test" if "test" in dataset.split_files else list(dataset.split_files)[-1]
      check_users = evaluation.first_request_users(dataset, split, config.check_queries,
                                                   max_history)
    return write_version(config, model.tower, dataset.schema, max_history, about_run, vocabulary,
                         check_users)
  finally:
    keras.mixed_precision.set_global_policy(policy)


def write_version(config: ExportConfig, tower, schema: schema_lib.LogSchema, max_history: int,
                  about: dict | None = None, vocabulary: raw_ids.IdVocabulary | None = None,
                  check_users: dict | None = None) -> str:
  """Writes any tower (`user_embedding(features)`, `item_embedding(ids)`) as one version.

  Args:
    config: where to write and how to index (its `run_dir` is not read here).
    tower: the model to serve; items are ids 1..schema.num_items-1.
    schema: the id spaces and user features of the serving inputs.
    max_history: length of the `history` input.
    about: more metadata (the run, its config and metrics).
    vocabulary: the ids the models take and return (`raw_ids`); the dense ones when None.
    check_users: dense user inputs (as `evaluation.Evaluator.users`) whose embeddings query the
      index check; None (or config.check_queries 0) skips it and keeps the automatic parameters.
  Returns:
    The version's directory.
  """
  import tensorflow_recommenders as tfrs

  num_items = schema.num_items - 1
  params = scann_parameters(num_items, config)
  vocabulary = vocabulary or raw_ids.IdVocabulary.dense(schema)
  signature = input_signature(schema, max_history, vocabulary)
  # How many interests the tower gives a user ([B, d]: one; [B, K, d]: K), which the models are
  # traced for. One padding-only user tells, before anything is written.
  probe = tower.user_embedding({name: tf.zeros([1, *spec.shape[1:]], tf.int64)
                                for name, spec in signature.items()})  # Dense: no lookup.
  if probe.shape.rank not in (2, 3):
    raise ValueError(f"tower {getattr(tower, 'name', type(tower).__name__)}'s user_embedding is "
                     f"{probe.shape}; expected [B, d] or [B, K, d]")
  num_interests = probe.shape[1] if probe.shape.rank == 3 else 1
  version = config.version or next_version(config.export_dir)
  final_dir = os.path.join(config.export_dir, str(version))
  if os.path.exists(final_dir):
    raise FileExistsError(f"{final_dir} exists; versions are immutable, pick another --version")
  os.makedirs(config.export_dir, exist_ok=True)
  tmp_dir = os.path.join(config.export_dir, f".tmp-{version}-{os.getpid()}")
  shutil.rmtree(tmp_dir, ignore_errors=True)
  try:
    start = time.perf_counter()
    table = item_embeddings(tower, schema.num_items)
    embeddings = table[1:]
    ids = np.arange(1, schema.num_items, dtype=np.int64)
    candidates, identifiers = tf.constant(embeddings), tf.constant(ids)
    os.makedirs(tmp_dir)
    np.savez(os.path.join(tmp_dir, ITEM_EMBEDDINGS), item_ids=ids, embeddings=embeddings,
             raw_item_ids=vocabulary.items)

    lookup = raw_ids.IdLookup(vocabulary)
    query = _QueryModule(tower, lookup, signature, num_interests)
    tf.saved_model.save(query, os.path.join(tmp_dir, QUERY_MODEL),
                        signatures={"serving_default": query.serve})

    brute = tfrs.layers.factorized_top_k.BruteForce(k=params["max_k"])
    brute.index(candidates, identifiers)
    brute_module = _RetrievalModule(tower, lookup, brute, signature, params["max_k"],
                                    num_interests)
    tf.saved_model.save(brute_module, os.path.join(tmp_dir, BRUTE_FORCE_MODEL),
                        signatures={"serving_default": brute_module.serve})

    checked = check_users is not None and config.check_queries
    queries = evaluation.user_embeddings(tower, check_users) if checked else None
    scann, params, check = index_check.export_index(params, table, queries, brute, config)
    if check:
      with open(os.path.join(tmp_dir, INDEX_CHECK), "w") as f:
        f.write(index_check.markdown(check))
    scann_module = _RetrievalModule(tower, lookup, scann, signature, params["max_k"],
                                    num_interests)
    tf.saved_model.save(scann_module, os.path.join(tmp_dir, RETRIEVAL_MODEL),
                        signatures={"serving_default": scann_module.serve},
                        options=tf.saved_model.SaveOptions(namespace_whitelist=["Scann"]))

    metadata = {
        "model_name": config.model_name, "version": version,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "commit": _commit(),
        "num_items": num_items, "max_k": params["max_k"], "embedding_dim": int(embeddings.shape[1]),
        "num_interests": num_interests,
        "inputs": input_metadata(schema, max_history, vocabulary), "ids": vocabulary.metadata(),
        "scann": params, **({"scann_check": check} if check else {}),
        "models": {QUERY_MODEL: "stock TF ops", BRUTE_FORCE_MODEL: "stock TF ops, exact",
                   RETRIEVAL_MODEL: "needs `import scann` (scann[tf]==1.4.2) before loading"},
        **(about or {}),
        "export_seconds": round(time.perf_counter() - start, 1),
    }
    with open(os.path.join(tmp_dir, METADATA), "w") as f:
      json.dump(metadata, f, indent=2)
    os.rename(tmp_dir, final_dir)  # Atomic: the version appears complete or not at all.
  except BaseException:
    shutil.rmtree(tmp_dir, ignore_errors=True)
    raise
  return final_dir


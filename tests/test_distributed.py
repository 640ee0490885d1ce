"""Distributed training: strategies from TF_CONFIG, sharded input and tables, real local jobs.

Mirrored with two replicas (two logical CPUs) takes the same step as one device; a 2-worker job on
loopback trains in step, resumes after a kill and matches one process; a parameter-server job
shards its tables and exports them whole.
"""
import json
import os
import signal
import subprocess
import sys

import pytest

SCRIPT = os.path.join(os.path.dirname(__file__), "distributed_step.py")
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_two_replicas_take_the_same_step_as_one_device_and_fit_runs(tiny_data_dir, tmp_path):
  result = subprocess.run(
    [sys.executable, SCRIPT, tiny_data_dir, str(tmp_path)],
    capture_output=True,
    text=True,
    timeout=600,
  )
  assert result.returncode == 0, result.stderr[-3000:]
  report = json.loads(result.stdout.strip().splitlines()[-1])
  assert report["replicas"] == 2
  for name in ("gmm", "uma2"):
    assert report[f"{name}_max_abs_update"] > 0
    # The global batch's gradient, whichever way it is split: the loss terms all-reduce their
    # counts.
    assert report[f"{name}_max_rel_diff"] < 1e-4, report
  assert report["fit_recall@100"] > 0
  assert report["in_batch_recall@100"] > 0
  # One estimator step per global step (not per replica), the same estimates on both replicas.
  assert report["estimator_steps"] == [report["in_batch_steps"]] * 2
  assert report["estimator_replicas_equal"] and report["estimator_items_seen"] > 100
  assert os.path.exists(os.path.join(tmp_path, "metrics.json"))


# --- cluster configuration -------------------------------------------------------------------

def _set_tf_config(monkeypatch, value):
  import json as json_lib
  monkeypatch.setenv("TF_CONFIG", value if isinstance(value, str) else json_lib.dumps(value))


@pytest.mark.parametrize(
  "tf_config, message",
  [
    ("{not json", "TF_CONFIG is not JSON"),
    ({"task": {"type": "worker", "index": 0}}, "non-empty \"cluster\""),
    ({"cluster": {"worker": ["127.0.0.1"]}, "task": {"type": "worker", "index": 0}}, "host:port"),
    ({"cluster": {"worker": ["127.0.0.1:1"]}}, "\"task\""),
    (
      {"cluster": {"worker": ["127.0.0.1:1"]}, "task": {"type": "worker", "index": 1}},
      "not in its cluster",
    ),
  ],
)
def test_a_bad_tf_config_is_one_clear_error(monkeypatch, tf_config, message):
  from uma2_tf import distribute

  _set_tf_config(monkeypatch, tf_config)
  with pytest.raises(ValueError, match=message):
    distribute.current_task()


def test_each_strategy_checks_that_its_cluster_can_run_it(monkeypatch):
  from uma2_tf import distribute

  monkeypatch.delenv("TF_CONFIG", raising=False)
  with pytest.raises(ValueError, match="--strategy=multi_worker needs TF_CONFIG"):
    distribute.check_cluster("multi_worker")
  _set_tf_config(
    monkeypatch, {"cluster": {"worker": ["h:1", "h:2"]}, "task": {"type": "worker", "index": 1}}
  )
  with pytest.raises(ValueError, match=r"no \['chief', 'ps'\] task"):
    distribute.check_cluster("parameter_server")
  _set_tf_config(monkeypatch, {"cluster": {"worker": ["h:1"], "ps": ["h:2"]},
                               "task": {"type": "worker", "index": 0}})
  with pytest.raises(ValueError, match=r"task types \['ps'\]"):
    distribute.check_cluster("multi_worker")


def test_the_chief_is_the_chief_task_or_else_worker_0(monkeypatch):
  from uma2_tf import distribute

  monkeypatch.delenv("TF_CONFIG", raising=False)
  assert distribute.current_task() == distribute.Task("worker", 0, True, 1)
  workers = {"worker": ["h:1", "h:2"]}
  _set_tf_config(monkeypatch, {"cluster": workers, "task": {"type": "worker", "index": 0}})
  assert distribute.current_task() == distribute.Task("worker", 0, True, 2)
  _set_tf_config(monkeypatch, {"cluster": workers, "task": {"type": "worker", "index": 1}})
  assert not distribute.current_task().is_chief
  _set_tf_config(
    monkeypatch, {"cluster": {"chief": ["h:0"], **workers}, "task": {"type": "worker", "index": 0}}
  )
  assert distribute.current_task() == distribute.Task("worker", 0, False, 3)  # the chief trains too
  cluster = {"chief": ["h:0"], "worker": ["h:1"], "ps": ["h:2", "h:3"]}
  _set_tf_config(monkeypatch, {"cluster": cluster, "task": {"type": "chief", "index": 0}})
  assert distribute.current_task() == distribute.Task("chief", 0, True, 1)
  _set_tf_config(monkeypatch, {"cluster": cluster, "task": {"type": "worker", "index": 0}})
  assert not distribute.current_task().is_chief


def test_the_partitioner_shards_only_embedding_tables_worth_sharding():
  import tensorflow as tf

  from uma2_tf import distribute

  partitioner = distribute.EmbeddingTablePartitioner(num_shards=3, min_shard_bytes=1024)
  # 1000 x 32 float32 = 128 KB: three shards; a 512 x 256 kernel outside `embedding_tables`: whole.
  assert partitioner(tf.TensorShape([512, 256]), tf.float32) == [1, 1]
  with distribute.embedding_tables():
    assert partitioner(tf.TensorShape([1000, 32]), tf.float32) == [3, 1]
    assert partitioner(tf.TensorShape([12, 16]), tf.float32) == [1, 1]   # 768 bytes: one shard
    assert partitioner(tf.TensorShape([40, 16]), tf.float32) == [2, 1]   # 2.5 KB: two of >= 1 KB
    assert partitioner(tf.TensorShape([1000]), tf.float32) == [1]       # not a table
  assert not distribute.in_embedding_tables()


def test_launch_writes_one_tf_config_per_process():
  from uma2_tf import launcher

  cluster = launcher.cluster_spec("parameter_server", workers=2, ps=1)
  assert {k: len(v) for k, v in cluster.items()} == {"chief": 1, "worker": 2, "ps": 1}
  addresses = [a for v in cluster.values() for a in v]
  assert len(set(addresses)) == 4 and all(a.startswith("127.0.0.1:") for a in addresses)
  tasks = [(label, c["task"]) for label, c in launcher.task_environments(cluster)]
  assert tasks == [
    ("chief 0", {"type": "chief", "index": 0}),
    ("worker 0", {"type": "worker", "index": 0}),
    ("worker 1", {"type": "worker", "index": 1}),
    ("ps 0", {"type": "ps", "index": 0}),
  ]
  with pytest.raises(ValueError, match="--ps must be >= 1"):
    launcher.cluster_spec("parameter_server", workers=1, ps=0)
  assert list(launcher.cluster_spec("multi_worker", workers=3, ps=2)) == ["worker"]


# --- input sharding ---------------------------------------------------------------------------

@pytest.mark.parametrize("pipelines", [2, 3])
def test_each_worker_reads_its_own_requests_and_together_all(tiny_dataset, pipelines):
  """Whole shards per worker where there are enough shards, else every n-th record: either way
  no request (so no positive) is trained on by two workers in an epoch, and none is left out."""
  import tensorflow as tf

  from uma2_tf.data import schema as schema_lib
  from uma2_tf.data import batch_keys
  from uma2_tf.data import reading
  from uma2_tf.data import samplers

  files = tiny_dataset.split_files["train"]

  def request_ids(ctx):
    ids = []
    for batch in reading.read_requests(files, tiny_dataset.schema, 64, shuffle_buffer=64, seed=3,
                                        input_context=ctx):
      ids.extend(batch[schema_lib.REQUEST_ID].numpy().tolist())
    return ids

  everything = request_ids(None)
  parts = [
    request_ids(tf.distribute.InputContext(pipelines, i, pipelines)) for i in range(pipelines)
  ]
  for i in range(pipelines):
    assert len(parts[i]) == len(set(parts[i])) > 0
    for j in range(i):
      assert not set(parts[i]) & set(parts[j])
  assert sorted(sum(parts, [])) == sorted(everything)

  config = samplers.SamplingConfig()
  positives = [sum(int(b[batch_keys.POS_ITEM].shape[0]) for b in samplers.make_training_dataset(
      tiny_dataset, config, 32, input_context=tf.distribute.InputContext(pipelines, i, pipelines)))
      for i in range(pipelines)]
  total = sum(int(b[batch_keys.POS_ITEM].shape[0])
              for b in samplers.make_training_dataset(tiny_dataset, config, 32))
  assert sum(positives) == total and min(positives) > 0


# --- real jobs --------------------------------------------------------------------------------

def _launch(args, train_args, **kwargs):
  return subprocess.Popen(
    [sys.executable, "-m", "pipelines.launch", *args, "--", *train_args],
    cwd=REPO,
    stdout=subprocess.PIPE,
    stderr=subprocess.STDOUT,
    text=True,
    **kwargs,
  )


def test_a_two_worker_job_trains_in_step_resumes_after_a_kill_and_matches_one_process(
  tiny_data_dir, tmp_path
):
  """2 workers on loopback (pipelines.launch): killed during epoch 2, the same command resumes from
  the backup on both workers (epochs 1, 2, 3 each run once), both end with identical weights, and
  the result is within tolerance of the same training in one process.

  tiny's training days before its validation day (the last one, held out) have 1329 positives: 21
  steps of 64 per epoch, so a backup every 21 steps is one at the end of each epoch and the resumed
  run starts exactly at epoch 2."""
  import csv

  from uma2_tf import training

  out = str(tmp_path / "mw")
  train_args = [
    f"--data_dir={tiny_data_dir}",
    "--dataset=uma2_simulated/tiny",
    f"--output_dir={out}",
    "--epochs=3",
    "--batch_size=64",
    "--backup_every_steps=21",
    "--early_stopping_patience=0",
  ]
  first = _launch(["--workers=2"], train_args)
  seen = []
  for line in first.stdout:
    seen.append(line)
    if line.startswith("[worker 0] Epoch 2/3"):
      first.send_signal(signal.SIGTERM)  # preempted during epoch 2: the launcher stops both workers
      break
  rest, _ = first.communicate(timeout=120)
  assert first.returncode not in (0, None), "".join(seen[-30:]) + rest[-3000:]
  assert os.path.isdir(os.path.join(out, "backup")), (
    os.listdir(out),
    "".join(seen[-10:]),
    rest[-3000:],
  )
  assert not os.path.exists(os.path.join(out, "metrics.json"))

  second = _launch(["--workers=2"], train_args)
  log, _ = second.communicate(timeout=600)
  assert second.returncode == 0, log[-5000:]
  fingerprints = {}
  for line in log.splitlines():
    if "final weights sha256" in line:
      fingerprints[line.split("]")[0] + "]"] = line.rsplit(" ", 1)[1]
  assert set(fingerprints) == {"[worker 0]", "[worker 1]"}
  # Killed on reading worker 0's "Epoch 2/3": under a loaded machine the launcher's output lags
  # and the epoch-2 backup may already be written, so the job resumes at epoch 2 or 3; both
  # workers at the same one, and each epoch runs once (history below).
  resumed = {worker: [epoch for epoch in (2, 3)
                      if f"worker {worker}: resumed from the backup at epoch {epoch}" in log]
             for worker in (0, 1)}
  assert resumed[0] in ([2], [3]) and resumed[1] == resumed[0], (resumed, log[-5000:])
  assert len(set(fingerprints.values())) == 1, fingerprints
  with open(os.path.join(out, "history.csv")) as f:
    assert [int(row["epoch"]) for row in csv.DictReader(f)] == [0, 1, 2]
  with open(os.path.join(out, "metrics.json")) as f:
    distributed = json.load(f)
  assert distributed["run"]["workers"] == 2 and distributed["run"]["replicas"] == 2
  assert distributed["run"]["weights_sha256"] == fingerprints["[worker 0]"]
  assert not os.path.exists(os.path.join(out, "backup"))  # removed once training has finished

  single = training.train(
    training.TrainConfig(
      dataset="uma2_simulated/tiny",
      data_dir=tiny_data_dir,
      output_dir=str(tmp_path / "one"),
      epochs=3,
      batch_size=64,
      early_stopping_patience=0,
    ),
    verbose=0,
  )
  for key in ("recall@100", "hitrate@100"):
    # Same global batch and steps; the workers draw different negatives than one process does.
    assert abs(distributed["model"][key] - single["model"][key]) < 0.08, (
      key,
      distributed["model"],
      single["model"],
    )
  for head in ("er", "re"):
    assert abs(distributed["propensity_auc"][head] - single["propensity_auc"][head]) < 0.08


def test_a_failing_worker_stops_the_whole_job(tiny_data_dir, tmp_path):
  # Worker 1 gets a TF_CONFIG naming a cluster it is not in: it exits at once with status 2;
  # worker 0 would wait for it forever, so the launcher must stop it and report the failure.
  from uma2_tf import launcher

  command = [
    sys.executable,
    "-m",
    "pipelines.train",
    "--strategy=multi_worker",
    "--dataset=uma2_simulated/tiny",
    f"--data_dir={tiny_data_dir}",
    f"--output_dir={tmp_path}",
  ]
  cluster = launcher.cluster_spec("multi_worker", workers=2, ps=0)
  envs = [
    dict(
      os.environ, TF_CONFIG=json.dumps({"cluster": cluster, "task": {"type": "worker", "index": i}})
    )
    for i in (0, 5)
  ]
  job = launcher.Job([(f"worker {i}", command, env) for i, env in enumerate(envs)])
  assert job.wait(["worker 0", "worker 1"], grace_seconds=5) == 2
  assert all(p.poll() is not None for _, p in job.processes)


def test_a_parameter_server_job_shards_tables_and_exports_them_whole(tiny_data_dir, tmp_path):
  result = subprocess.run(
    [
      sys.executable,
      os.path.join(os.path.dirname(__file__), "ps_job.py"),
      tiny_data_dir,
      str(tmp_path / "run"),
      str(tmp_path / "export"),
    ],
    cwd=REPO,
    capture_output=True,
    text=True,
    timeout=600,
  )
  assert result.returncode == 0, result.stderr[-5000:]
  report = json.loads(result.stdout.strip().splitlines()[-1])
  # tiny: 1001 items and 601 users, 32 wide: both id tables sharded over the 2 ps, on different
  # ones.
  assert sorted(report["sharded_variables"].values()) == [[301, 300], [501, 500]]
  assert len(set(report["item_table_shards"])) == 2
  assert all("/job:ps/" in device for device in report["item_table_shards"])
  assert report["item_table_rows"] == 1001
  # The export (an unsharded model loaded from the run's checkpoint) holds the same embeddings.
  assert report["item_embedding_max_abs_diff"] <= 1e-6 * report["item_embedding_scale"]
  assert report["recall@100"] > 0


def test_a_parameter_server_job_runs_from_the_launcher(tiny_data_dir, tmp_path):
  """`make train-distributed STRATEGY=parameter_server`: the chief trains and writes the run, the
  worker and ps processes serve the cluster and are stopped once the chief has finished."""
  out = str(tmp_path / "ps")
  job = _launch(
    ["--strategy=parameter_server", "--workers=1", "--ps=2"],
    [
      f"--data_dir={tiny_data_dir}",
      "--dataset=uma2_simulated/tiny",
      f"--output_dir={out}",
      "--epochs=1",
      "--batch_size=256",
      "--early_stopping_patience=0",
    ],
  )
  log, _ = job.communicate(timeout=600)
  assert job.returncode == 0, log[-5000:]
  assert "serving the cluster as ps 1" in log and "serving the cluster as worker 0" in log
  with open(os.path.join(out, "metrics.json")) as f:
    run = json.load(f)["run"]
  assert run["strategy"] == "parameter_server" and run["epochs_run"] == 1
  assert sorted(run["sharded_variables"].values()) == [[301, 300], [501, 500]]

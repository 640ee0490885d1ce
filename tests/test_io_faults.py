"""I/O faults are one error naming the file: a corrupt or truncated shard, a damaged side file of a
built dataset, a directory a job cannot write into, a broken checkpoint (the resume paths'
checkpoints are in test_resume.py)."""
import uma2_tf  # noqa: F401

import os
import shutil
import subprocess
import sys

import pytest
import tensorflow as tf

from uma2_tf import atomic_files, run_dir, training
from uma2_tf.data import reading
from uma2_tf.sources import registry

TINY = "uma2_simulated/tiny"


def flip_a_byte(path, at=0.5):
  data = bytearray(open(path, "rb").read())
  data[int(len(data) * at)] ^= 0xFF
  open(path, "wb").write(bytes(data))


def truncate(path, share=0.5):
  with open(path, "r+b") as f:
    f.truncate(int(os.path.getsize(path) * share))


def damage(path, how):
  {"flip": flip_a_byte, "truncate": truncate}[how](path)


@pytest.fixture
def data_copy(tiny_data_dir, tmp_path):
  """A copy of the tiny dataset's data dir (every test damages it) and the dataset in it."""
  data_dir = str(tmp_path / "tfds")
  shutil.copytree(tiny_data_dir, data_dir)
  return data_dir, registry.load(TINY, data_dir)


def only_error_line(result):
  return [line for line in result.stderr.splitlines() if line.startswith("error: ")]


@pytest.mark.parametrize("how,reason", [("flip", "corrupted record at"),
                                        ("truncate", "truncated record at")])
def test_a_damaged_shard_is_named_with_its_offset(data_copy, how, reason):
  _, dataset = data_copy
  shard = dataset.split_files["test"][0]
  damage(shard, how)
  files = [f for split in ("train", "test") for f in dataset.split_files[split]]
  path, found = reading.find_corrupt_shard(files)
  assert path == shard and found.startswith(reason)
  with pytest.raises(reading.CorruptShardError, match=f"{shard}: corrupt or truncated.*{reason}"):
    with reading.naming_corrupt_shards(dataset):
      reading.read_requests(dataset.split_files["test"], dataset.schema, 64).reduce(
          0, lambda n, _: n + 1)


def test_intact_shards_are_not_blamed_for_another_data_loss(tiny_dataset):
  assert reading.find_corrupt_shard(tiny_dataset.split_files["train"]) is None
  with pytest.raises(tf.errors.DataLossError, match="a checkpoint's"):
    with reading.naming_corrupt_shards(tiny_dataset):
      raise tf.errors.DataLossError(None, None, "a checkpoint's")


def test_training_on_a_corrupt_shard_exits_with_one_line_naming_it(data_copy, tmp_path):
  data_dir, dataset = data_copy
  shard = dataset.split_files["train"][0]
  flip_a_byte(shard, at=0.7)
  result = subprocess.run(
      [sys.executable, "-m", "pipelines.train", f"--dataset={TINY}", f"--data_dir={data_dir}",
       f"--output_dir={tmp_path / 'run'}", "--epochs=1"], capture_output=True, text=True,
      timeout=300)
  assert result.returncode == 2, result.stderr[-2000:]
  assert "Traceback" not in result.stderr
  (line,) = only_error_line(result)
  assert shard in line and "corrupted record at" in line and dataset.directory in line


@pytest.mark.parametrize("file", ["schema.json", "catalog.npz", "dataset_info.json"])
def test_a_damaged_side_file_is_named(data_copy, file):
  data_dir, dataset = data_copy
  truncate(os.path.join(dataset.directory, file), share=0.3)
  with pytest.raises(reading.CorruptDatasetError,
                     match=f"^{os.path.join(dataset.directory, file)}: unreadable"):
    registry.load(TINY, data_dir)


@pytest.fixture
def a_file(tmp_path):
  path = tmp_path / "a_file"
  path.write_text("not a directory")
  return str(path)


def test_check_writable_names_the_flag_and_leaves_no_trace(a_file, tmp_path):
  with pytest.raises(atomic_files.NotWritableError,
                     match=f"--output_dir: cannot write into {a_file}/run .*not a directory"):
    atomic_files.check_writable(os.path.join(a_file, "run"), "--output_dir")
  atomic_files.check_writable(str(tmp_path / "new" / "run"), "--output_dir")
  assert sorted(os.listdir(tmp_path)) == ["a_file"]  # What the check created is gone.
  atomic_files.check_writable(str(tmp_path), "--output_dir")
  assert sorted(os.listdir(tmp_path)) == ["a_file"]  # No probe left in a dir that was there.


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into a read-only mode dir")
def test_check_writable_refuses_a_read_only_dir(tmp_path):
  read_only = tmp_path / "read_only"
  read_only.mkdir(mode=0o555)
  with pytest.raises(atomic_files.NotWritableError, match="--export_dir: cannot write into"):
    atomic_files.check_writable(str(read_only / "exports"), "--export_dir")


def test_training_into_an_unwritable_dir_is_refused_before_it_starts(tiny_data_dir, a_file):
  config = training.TrainConfig(dataset=TINY, data_dir=tiny_data_dir,
                                output_dir=os.path.join(a_file, "run"), epochs=1)
  with pytest.raises(atomic_files.NotWritableError, match="--output_dir"):
    training.train(config, verbose=0)


@pytest.mark.parametrize("module,flag", [("pipelines.simulate", "--data_dir"),
                                         ("pipelines.experiment", "--report_dir")])
def test_pipelines_refuse_an_unwritable_dir_in_one_line(module, flag, a_file, tiny_data_dir):
  args = {"pipelines.simulate": ["--config=tiny"],
          "pipelines.experiment": [f"--dataset={TINY}", f"--data_dir={tiny_data_dir}", "--quick",
                                   "--towers=youtube_dnn", "--rows=uma2", "--seeds=0"]}[module]
  result = subprocess.run([sys.executable, "-m", module, *args, f"{flag}={a_file}/sub"],
                          capture_output=True, text=True, timeout=300)
  assert result.returncode == 2, result.stderr[-2000:]
  assert "Traceback" not in result.stderr
  (line,) = only_error_line(result)
  assert line.startswith(f"error: {flag}: cannot write into {a_file}/sub")


@pytest.fixture
def checkpoint(tmp_path):
  """A small TensorFlow checkpoint's prefix: two variables of 64 KB each."""
  variables = {"a": tf.Variable(tf.ones([128, 128])), "b": tf.Variable(tf.zeros([128, 128]))}
  return tf.train.Checkpoint(**variables).write(str(tmp_path / "ckpt" / "weights"))


def test_check_checkpoint_reads_an_intact_one(checkpoint):
  run_dir.check_checkpoint(checkpoint)


@pytest.mark.parametrize("file,how,reason", [
    ("data-00000-of-00001", "flip", "Checksum does not match"),
    ("data-00000-of-00001", "truncate", "a data file is truncated"),
    ("index", "truncate", "broken checkpoint"),
    ("index", "remove", "weights.index does not exist"),
])
def test_check_checkpoint_names_a_broken_one(checkpoint, file, how, reason):
  path = f"{checkpoint}.{file}"
  if how == "remove":
    os.remove(path)
  else:
    damage(path, how)
  with pytest.raises(run_dir.BrokenCheckpointError, match=reason) as caught:
    run_dir.check_checkpoint(checkpoint)
  assert str(caught.value).startswith(checkpoint)


def test_a_full_disk_is_recognised_with_the_file_it_stopped_at():
  import errno

  save = tf.errors.ResourceExhaustedError(
      None, None, "{{function_node __wrapped__SaveV2}} "
      "/runs/r/backup/chief/ckpt-1_temp/part-0.data.tempstate64; No space left on device "
      "[Op:SaveV2]")
  assert atomic_files.out_of_space(save) == (
      "no space left on device writing /runs/r/backup/chief/ckpt-1_temp/part-0.data.tempstate64")
  write = OSError(errno.ENOSPC, "No space left on device", "/runs/r/history.csv")
  assert atomic_files.out_of_space(write) == "no space left on device writing /runs/r/history.csv"
  # Anything else, out-of-memory included, is not a full disk.
  assert atomic_files.out_of_space(tf.errors.ResourceExhaustedError(None, None, "OOM when "
                                                                    "allocating tensor")) is None
  assert atomic_files.out_of_space(OSError(errno.EACCES, "denied")) is None


def test_a_shard_cut_at_a_record_boundary_or_missing_is_found_at_load(data_copy):
  import struct

  data_dir, dataset = data_copy
  shard = dataset.split_files["test"][0]
  # Cut after the 10th record: TensorFlow reads the 10 without an error, as if the file ended.
  offset = 0
  with open(shard, "rb") as f:
    data = f.read()
  for _ in range(10):
    (length,) = struct.unpack("<Q", data[offset:offset + 8])
    offset += 8 + 4 + length + 4
  with open(shard, "wb") as f:
    f.write(data[:offset])
  assert int(tf.data.TFRecordDataset(shard).reduce(0, lambda n, _: n + 1)) == 10
  written = dataset.num_records("test")
  with pytest.raises(reading.CorruptShardError, match=f"^{shard}: .*\\(10 records, {written} "
                     "were written\\)"):
    registry.load(TINY, data_dir)
  train = dataset.split_files["train"][0]
  os.remove(train)
  with pytest.raises(reading.CorruptShardError, match=f"^{train}: missing shard"):
    registry.load(TINY, data_dir)

"""Run by test_autosample_run.py in its own process: a sampler search under MirroredStrategy over
two logical CPUs (TensorFlow's devices are fixed at start-up), as it would run over two GPUs.

    python tests/autosample_mirrored.py DATA_DIR OUTPUT_DIR   -> prints one JSON line
"""
import uma2_tf  # noqa: F401

import json
import sys

import tensorflow as tf

cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)

from uma2_tf import training  # noqa: E402
from uma2_tf.experiment import autosample, autosample_run  # noqa: E402


def main(data_dir, output_dir):
  base = training.TrainConfig(dataset="uma2_simulated/tiny", data_dir=data_dir,
                              output_dir=output_dir, batch_size=64, strategy="mirrored")
  search = autosample.SearchConfig(candidates=("uniform", "mixed", "uma2"), budget=3.0, phases=2,
                                   probe_steps=2, score_users=0)
  results = autosample_run.run(base, search, verbose=0)
  summary = json.load(open(f"{output_dir}/{autosample_run.RESULT_FILE}"))
  print(json.dumps({"replicas": results["run"]["replicas"], "phases": summary["phases"],
                    "recall@100": results["model"]["recall@100"]}))


if __name__ == "__main__":
  main(*sys.argv[1:])

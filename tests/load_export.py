"""Run by test_export.py in a fresh process: loads an export's SavedModels and queries them.

    python tests/load_export.py VERSION_DIR QUERIES.npz OUT.npz

The stock-op models are loaded before anything imports scann, which proves they need only stock
TensorFlow; then scann is imported (registering its ops) and the ScaNN model is loaded.
"""
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

version_dir, queries_path, out_path = sys.argv[1:]
with np.load(queries_path) as z:
  features = {k: tf.constant(z[k]) for k in z.files if k != "k"}
  k = tf.constant(int(z["k"]), tf.int32)

out = {}
query = tf.saved_model.load(os.path.join(version_dir, "query_model")).signatures["serving_default"]
out["user_embedding"] = query(**features)["user_embedding"].numpy()
brute = tf.saved_model.load(
    os.path.join(version_dir, "brute_force_model")).signatures["serving_default"]
result = brute(k=k, **features)
out["brute_ids"], out["brute_scores"] = result["item_ids"].numpy(), result["scores"].numpy()
assert "scann" not in sys.modules, "a stock-op model pulled in scann"

import scann  # noqa: E402,F401  (registers the Scann>... ops the retrieval model uses)

retrieval = tf.saved_model.load(
    os.path.join(version_dir, "retrieval_model")).signatures["serving_default"]
result = retrieval(k=k, **features)
out["scann_ids"], out["scann_scores"] = result["item_ids"].numpy(), result["scores"].numpy()
np.savez(out_path, **out)
print("ok")

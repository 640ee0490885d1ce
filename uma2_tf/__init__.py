"""uma2_tf: two-tower retrieval trained on the negatives a real recommender produces (UMA²).

TFRS needs Keras 2, so the package selects `tf_keras` before anything imports TensorFlow
(DESIGN.md §5). Import `uma2_tf` before `tensorflow` in entry points.
"""
import os

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
# TensorFlow's C++ start-up chatter (CPU feature notices) hides the progress bars users need.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

__version__ = "0.1.0"

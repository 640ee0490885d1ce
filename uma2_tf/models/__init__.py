"""Towers (GMM implementations), NSDN propensity heads, the UMA² loss task and the Keras model."""

# Importing `towers` first registers every tower; it also lets a tower module (fm, mind, ...) be
# imported on its own: `towers` imports them at its end, which fails if one is mid-import.
from uma2_tf.models import towers  # noqa: E402,F401

"""Towers (one package, one module per family), NSDN propensity heads and the Keras model."""

"""Towers (GMM implementations), NSDN propensity heads, the UMA² loss task and the Keras model."""

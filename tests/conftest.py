"""Shared fixtures: the `tiny` simulated dataset, built once per test session."""
import uma2_tf  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow is imported)
from uma2_tf.sources import registry

import pytest


@pytest.fixture(scope="session")
def tiny_data_dir(tmp_path_factory):
  """A TFDS data dir holding `uma2_simulated/tiny`, prepared once for the whole session."""
  from uma2_tf.sources import registry

  data_dir = str(tmp_path_factory.mktemp("tfds"))
  registry.builder("uma2_simulated/tiny", data_dir).download_and_prepare()
  return data_dir


@pytest.fixture(scope="session")
def tiny_builder(tiny_data_dir):
  """The prepared TFDS builder of `uma2_simulated/tiny`."""

  return registry.builder("uma2_simulated/tiny", tiny_data_dir)


@pytest.fixture(scope="session")
def tiny_dataset(tiny_data_dir):
  """`reading.BuiltDataset` of `uma2_simulated/tiny`."""

  return registry.load("uma2_simulated/tiny", tiny_data_dir)

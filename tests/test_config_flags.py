"""Flags derived from the config dataclasses: every field reachable, `--config` files, aliases."""
import uma2_tf  # noqa: F401

import dataclasses
import json
import subprocess
import sys

import pytest
from absl import flags

from uma2_tf import config_flags, training
from uma2_tf.data import samplers
from uma2_tf.tasks import LossConfig


def leaf_fields(cls, prefix=""):
  for field in dataclasses.fields(cls):
    value = field.default if field.default is not dataclasses.MISSING else field.default_factory()
    if dataclasses.is_dataclass(value):
      yield from leaf_fields(type(value), prefix + field.name + ".")
    else:
      yield prefix + field.name, value


@pytest.fixture
def train_flags():
  from pipelines import train as train_cli

  def parse(*args):
    train_cli.FLAGS.unparse_flags()
    train_cli.FLAGS(["train", *args])
    return train_cli.config_from_flags()

  yield parse
  train_cli.FLAGS.unparse_flags()


def test_every_train_config_field_is_a_flag_with_the_dataclass_default():
  from pipelines import train as train_cli

  names = dict(leaf_fields(training.TrainConfig))
  assert {
    "evaluate_each_epoch",
    "sampling.max_history",
    "sampling.popularity_alpha",
    "sampling.c_oversample",
    "sampling.requests_per_batch",
    "loss.propensity_floor",
  } <= set(names)
  for name, default in names.items():
    flag = train_cli.FLAGS[name]
    expected = [str(v) for v in default] if isinstance(default, tuple) else default
    assert flag.default == expected, name
    assert flag.help and flag.help != name.replace("_", " "), (
      f"--{name} has no help from the docstring"
    )


def test_help_comes_from_the_docstring():
  docs = config_flags.field_docs(samplers.SamplingConfig)
  assert (
    docs["c_oversample"] == "C candidates drawn per C slot before removing those in the recall set."
  )
  # A description over several lines is joined.
  assert docs["ratio"].startswith("A:B:C proportions") and docs["ratio"].endswith(
    "by largest remainder."
  )


def test_defaults_without_flags(train_flags):
  assert train_flags() == training.TrainConfig()


def test_nested_flags_and_their_old_names_give_the_same_config(train_flags):
  new = train_flags(
    "--sampling.strategy=ss_ab",
    "--sampling.ratio=1,3,0",
    "--loss.use_nsdn=false",
    "--loss.lambdas=1,2,3,4,5",
    "--sampling.max_history=7",
    "--evaluate_each_epoch=false",
    "--early_stopping_patience=0",
  )
  old = train_flags("--strategy_name=ss_ab", "--ratio=1,3,0", "--nonsdn", "--lambdas=1,2,3,4,5",
                    "--max_history=7", "--noevaluate_each_epoch", "--early_stopping_patience=0")
  assert new == old
  assert new.sampling.strategy == "ss_ab" and new.sampling.ratio == (1, 3, 0)
  assert new.loss == LossConfig(use_nsdn=False, lambdas=(1.0, 2.0, 3.0, 4.0, 5.0))
  assert new.sampling.max_history == 7 and not new.evaluate_each_epoch


def test_propensity_weights_flag_and_its_alias(train_flags):
  new = train_flags("--loss.propensity_weights=false")
  assert new == train_flags("--nopropensity_weights") == train_flags("--propensity_weights=false")
  assert new.loss == LossConfig(propensity_weights=False) and new.loss.use_nsdn
  # Nothing to switch off without NSDN: the error names the fields and the flags they come from.
  with pytest.raises(ValueError, match=r"--loss\.\*.*--propensity_weights.*propensity_weights="
                     r"False needs use_nsdn=True"):
    train_flags("--nonsdn", "--nopropensity_weights")


def test_seed_seeds_the_sampler_unless_it_has_its_own(train_flags):
  assert train_flags("--seed=3").sampling.seed == 3
  config = train_flags("--seed=3", "--sampling.seed=5")
  assert (config.seed, config.sampling.seed) == (3, 5)


def test_config_file_reproduces_a_run_exactly_and_flags_override_it(train_flags, tmp_path):
  written = training.TrainConfig(
    dataset="uma2_simulated/tiny",
    data_dir=str(tmp_path / "data"),
    output_dir=str(tmp_path / "run"),
    tower="dat",
    epochs=3,
    eval_ks=(10, 20),
    seed=4,
    sampling=samplers.SamplingConfig(
      strategy="ss_abc_random",
      num_negatives=9,
      seed=11,
      c_distribution="popularity",
      popularity_alpha=-0.5,
    ),
    loss=LossConfig(propensity_floor=0.1, weight_normalization="self_normalized"),
  )
  path = tmp_path / "config.json"
  path.write_text(written.to_json())
  assert train_flags(f"--config={path}") == written
  # A flag beside the file wins; every other value stays the file's.
  again = train_flags(f"--config={path}", "--output_dir=elsewhere", "--loss.propensity_floor=0.2")
  assert again == dataclasses.replace(written, output_dir="elsewhere",
                                      loss=dataclasses.replace(written.loss, propensity_floor=0.2))


def test_config_file_with_an_unknown_field_is_named(train_flags, tmp_path):
  raw = json.loads(training.TrainConfig().to_json())
  raw["loss"]["propensity_flor"] = 0.1
  path = tmp_path / "config.json"
  path.write_text(json.dumps(raw))
  with pytest.raises(
    ValueError, match=r"config.json: unknown field\(s\) \['loss.propensity_flor'\]"
  ):
    train_flags(f"--config={path}")
  path.write_text(json.dumps({"sampling": {"ratio": [1, "x", 3]}}))
  with pytest.raises(ValueError, match=r"sampling.ratio: expected a comma-separated list of int"):
    train_flags(f"--config={path}")


def test_bad_values_name_the_flag(train_flags):
  with pytest.raises(ValueError, match=r"--sampling.ratio \(--ratio\): expected"):
    train_flags("--ratio=1,x,3")
  with pytest.raises(ValueError, match=r"--loss\.\*.*propensity_floor"):
    train_flags("--loss.propensity_floor=0")


def test_misspelt_nested_flag_is_one_clear_error(tmp_path):
  result = subprocess.run(
    [
      sys.executable,
      "-m",
      "pipelines.train",
      f"--output_dir={tmp_path}",
      "--loss.propensity_flor=0.1",
    ],
    capture_output=True,
    text=True,
    timeout=300,
  )
  assert result.returncode != 0
  assert "Unknown command line flag 'loss.propensity_flor'" in result.stderr
  assert "Did you mean: loss.propensity_floor" in result.stderr
  assert "Traceback" not in result.stderr


def test_a_missing_config_file_is_one_error(tmp_path):
  result = subprocess.run([sys.executable, "-m", "pipelines.train",
                           f"--config={tmp_path}/nope/config.json"],
                          capture_output=True, text=True, timeout=300)
  assert result.returncode == 2
  assert f"--config={tmp_path}/nope/config.json: no such file" in result.stderr
  assert "Traceback" not in result.stderr


def test_define_refuses_a_field_type_it_cannot_parse():
  @dataclasses.dataclass(frozen=True)
  class Odd:
    mapping: dict = dataclasses.field(default_factory=dict)

  with pytest.raises(TypeError, match="Odd.mapping"):
    config_flags.define(Odd, flag_values=flags.FlagValues())

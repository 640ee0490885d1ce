"""absl flags derived from a frozen config dataclass, so the dataclass is the only copy of a
default.

    config_flags.define(TrainConfig)                       # --dataset, --loss.propensity_floor, ...
    config_flags.define_aliases({"nsdn": "loss.use_nsdn"}) # a name the CLI had before
    config = config_flags.resolve(TrainConfig)             # defaults <- --config=<json> <- flags

Every field is a flag: a nested dataclass's fields are `--<field>.<subfield>`, tuples are comma
lists, booleans take `--name` / `--noname`. A flag's help is the field's entry in the class
docstring's `Attributes:` section. A flag given on the command line overrides the value of the
config file, which overrides the dataclass default; a misspelt flag is absl's "Unknown command line
flag" error, and a config file with an unknown field is a ValueError naming its path.
"""
from __future__ import annotations

import dataclasses
import json
import re
import typing
from typing import Any, Mapping

from absl import flags

CONFIG_FLAG = "config"
# Target flag -> its aliases (absl cannot tell which name was typed: errors name both).
_ALIASES: dict[str, list[str]] = {}


def field_docs(cls) -> dict[str, str]:
  """Field name -> its description in the class docstring (`name: text`, `a, b: text`)."""
  docs: dict[str, str] = {}
  current: list[str] = []
  for line in (cls.__doc__ or "").splitlines():
    m = re.match(r"^\s{2,6}([a-z_][a-z0-9_]*(?:, [a-z_][a-z0-9_]*)*): (.*)$", line)
    if m:
      current = m.group(1).split(", ")
      for name in current:
        docs[name] = m.group(2).strip()
    elif current and line.strip() and re.match(r"^\s{4,}", line) and not line.strip().endswith(":"):
      for name in current:
        docs[name] += " " + line.strip()
    else:
      current = []
  return docs


def _fields(cls) -> list[tuple[dataclasses.Field, Any]]:
  hints = typing.get_type_hints(cls)
  return [(f, hints[f.name]) for f in dataclasses.fields(cls) if f.init]


def _is_config(kind) -> bool:
  return dataclasses.is_dataclass(kind) and isinstance(kind, type)


def _element_type(kind):
  """For tuple[int, ...] / tuple[int, int, int]: int; None when `kind` is not a tuple."""
  if typing.get_origin(kind) is not tuple:
    return None
  args = [a for a in typing.get_args(kind) if a is not Ellipsis]
  return args[0] if args else str


_DEFINERS = {bool: flags.DEFINE_boolean, int: flags.DEFINE_integer, float: flags.DEFINE_float,
             str: flags.DEFINE_string}


def define(cls, prefix: str = "", flag_values: flags.FlagValues = flags.FLAGS,
           only: tuple[str, ...] = ()) -> list[str]:
  """Defines one flag per field of `cls` (recursively); returns the flag names defined.

  `only`: just these top-level fields (a CLI that sets the others itself); `resolve` then leaves
  the rest at their base values.
  """
  defaults = cls()
  docs = field_docs(cls)
  names = []
  for field, kind in _fields(cls):
    if only and field.name not in only:
      continue
    name = prefix + field.name
    default = getattr(defaults, field.name)
    help_text = docs.get(field.name, field.name.replace("_", " "))
    if _is_config(kind):
      names += define(kind, name + ".", flag_values)
    elif _element_type(kind) is not None:
      flags.DEFINE_list(name, [str(v) for v in default], help_text, flag_values=flag_values)
      names.append(name)
    elif kind in _DEFINERS:
      _DEFINERS[kind](name, default, help_text, flag_values=flag_values)
      names.append(name)
    else:
      raise TypeError(f"{cls.__name__}.{field.name}: no flag for type {kind}")
  return names


def define_aliases(aliases: Mapping[str, str], flag_values: flags.FlagValues = flags.FLAGS) -> None:
  """`--old_name` as another name of `--new.name` (the flags of earlier releases keep working)."""
  for alias, target in aliases.items():
    flags.DEFINE_alias(alias, target, flag_values=flag_values)
    _ALIASES.setdefault(target, []).append(alias)


def _flag_names(name: str) -> str:
  """`--loss.lambdas (--lambdas)`: a flag and the aliases it may have been given as."""
  aliases = _ALIASES.get(name, [])
  return f"--{name}" + (f" ({', '.join('--' + a for a in aliases)})" if aliases else "")


def define_config_file_flag(flag_values: flags.FlagValues = flags.FLAGS) -> None:
  flags.DEFINE_string(CONFIG_FLAG, None, "A config.json a run wrote: its values replace the "
                      "defaults; flags given on the command line override them.",
                      flag_values=flag_values)


def present(name: str, flag_values: flags.FlagValues = flags.FLAGS) -> bool:
  return bool(flag_values[name].present)


def _convert(value, kind, where: str):
  """A flag's or a JSON value as the field's type; ValueError naming `where`."""
  element = _element_type(kind)
  try:
    if element is not None:
      if isinstance(value, str):
        value = [v for v in value.split(",")]
      items = [v.strip() if isinstance(v, str) else v for v in value]
      return tuple(_scalar(v, element) for v in items if v != "")
    return _scalar(value, kind)
  except (TypeError, ValueError):
    expected = f"a comma-separated list of {element.__name__}" if element else kind.__name__
    raise ValueError(f"{where}: expected {expected}, got {value!r}") from None


def _scalar(value, kind):
  if kind is bool:
    if isinstance(value, bool):
      return value
    raise ValueError(value)
  if kind is int:
    if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
      raise ValueError(value)
    return int(value)
  if kind is float:
    if isinstance(value, bool):
      raise ValueError(value)
    return float(value)
  if kind is str:
    if not isinstance(value, str):
      raise ValueError(value)
    return value
  raise TypeError(kind)


def _merge_file(cls, values: dict, raw: Mapping, path: str, prefix: str = "") -> None:
  """Overwrites `values` (field -> value, nested dicts for nested configs) with a config file's."""
  fields = dict((f.name, kind) for f, kind in _fields(cls))
  unknown = sorted(set(raw) - set(fields))
  if unknown:
    raise ValueError(f"{path}: unknown field(s) {[prefix + u for u in unknown]} of {cls.__name__}")
  for name, value in raw.items():
    kind = fields[name]
    if _is_config(kind):
      if not isinstance(value, Mapping):
        raise ValueError(f"{path}: {prefix + name} must be an object, got {value!r}")
      _merge_file(kind, values[name], value, path, prefix + name + ".")
    else:
      values[name] = _convert(value, kind, f"{path}: {prefix + name}")


def _merge_flags(cls, values: dict, flag_values: flags.FlagValues, prefix: str = "") -> None:
  for field, kind in _fields(cls):
    name = prefix + field.name
    if _is_config(kind):
      _merge_flags(kind, values[field.name], flag_values, name + ".")
    elif name in flag_values and flag_values[name].present:
      values[field.name] = _convert(flag_values[name].value, kind, _flag_names(name))


def given_values(cls, prefix: str = "", flag_values: flags.FlagValues = flags.FLAGS) -> dict:
  """The fields of `cls` given on the command line (as `--<prefix><field>`), typed: field -> value.

  For overrides applied to another instance than the defaults (`dataclasses.replace(base, **...)`).
  """
  return {field.name: _convert(flag_values[prefix + field.name].value, kind,
                               _flag_names(prefix + field.name))
          for field, kind in _fields(cls)
          if not _is_config(kind) and flag_values[prefix + field.name].present}


def _build(cls, values: dict, prefix: str = ""):
  kwargs = {}
  for field, kind in _fields(cls):
    kwargs[field.name] = (_build(kind, values[field.name], prefix + field.name + ".")
                          if _is_config(kind) else values[field.name])
  try:
    return cls(**kwargs)
  except ValueError as e:
    if prefix:
      aliases = sorted(a for target, names in _ALIASES.items() if target.startswith(prefix)
                       for a in names)
      where = f"--{prefix}*" + (f" (or {', '.join('--' + a for a in aliases)})" if aliases else "")
    else:
      where = "flags"
    raise ValueError(f"{where}: {e}") from None


def _as_values(config) -> dict:
  """The config's fields as nested dicts (tuples kept), without `dataclasses.asdict`'s deep copy
  turning nested configs into dicts we cannot tell apart from mappings."""
  return {f.name: (_as_values(getattr(config, f.name))
                   if dataclasses.is_dataclass(getattr(config, f.name))
                   else getattr(config, f.name)) for f in dataclasses.fields(config) if f.init}


def _json_object(text: str, where: str) -> Mapping:
  try:
    raw = json.loads(text)
  except json.JSONDecodeError as e:
    raise ValueError(f"{where}: not JSON ({e})") from None
  if not isinstance(raw, Mapping):
    raise ValueError(f"{where}: expected a JSON object, got {type(raw).__name__}")
  return raw


def from_json(cls, text: str, path: str = "config.json"):
  """A config from the JSON a run wrote; unknown fields are an error, missing ones default."""
  values = _as_values(cls())
  _merge_file(cls, values, _json_object(text, path), path)
  return _build(cls, values)


def resolve(cls, flag_values: flags.FlagValues = flags.FLAGS, base=None):
  """The config the command line describes: `base` (or the dataclass defaults), then the file of
  `--config` if that flag is defined and given, then every flag given on the command line."""
  values = _as_values(base if base is not None else cls())
  if CONFIG_FLAG in flag_values and flag_values[CONFIG_FLAG].value:
    import tensorflow as tf

    path = flag_values[CONFIG_FLAG].value
    if not tf.io.gfile.exists(path):
      raise FileNotFoundError(f"--{CONFIG_FLAG}={path}: no such file")
    with tf.io.gfile.GFile(path) as f:
      raw = _json_object(f.read(), f"--{CONFIG_FLAG}={path}")
    _merge_file(cls, values, raw, path)
  _merge_flags(cls, values, flag_values)
  return _build(cls, values)


def to_json(config) -> str:
  return json.dumps(dataclasses.asdict(config), indent=2)


def differing_fields(ours: dict, theirs: dict, prefix: str = "") -> list[str]:
  """The keys whose values differ between two `dataclasses.asdict` dicts of one dataclass, nested
  ones dotted (`loss.weight_normalization`)."""
  names = []
  for key, value in ours.items():
    if isinstance(value, dict) and isinstance(theirs[key], dict):
      names += differing_fields(value, theirs[key], f"{prefix}{key}.")
    elif value != theirs[key]:
      names.append(prefix + key)
  return names

"""Loading configs: dataclass defaults < YAML file < command-line flags, typed and checked.

Unknown keys and badly typed values are user errors that name the file (or flag) and the key; related
fields are checked together (each config's ``problems``) and all problems are reported at once.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import field
from pathlib import Path
from typing import Any

import yaml

from meap.errors import UserError, did_you_mean
from meap.fsutil import atomic_write_text


def help_field(text: str, cli: dict | None = None, **kwargs: Any) -> Any:
    """A dataclass field with its help text (and, for :mod:`meap.config.commands`, its command-line form)."""
    return field(metadata={"help": text, "cli": cli or {}}, **kwargs)


def sections(config_cls: type) -> dict[str, type]:
    """The config's sections: fields that are configs themselves (an experiment's ``train:``), by name."""
    hints = typing.get_type_hints(config_cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(config_cls) if dataclasses.is_dataclass(hints[f.name])}


def config_fields(config_cls: type) -> list[dataclasses.Field]:
    """The fields that are the config's own keys (its sections' keys are ``<section>.<key>``)."""
    nested = sections(config_cls)
    return [f for f in dataclasses.fields(config_cls) if f.name not in nested]


def field_types(config_cls: type) -> dict[str, type]:
    """Key -> its Python type (str, int, float, bool, or a list of str, int or float); a section's keys as
    ``<section>.<key>``, less those the config sets itself for every run (its ``RUN_KEYS``)."""
    hints = typing.get_type_hints(config_cls)
    found = {f.name: hints[f.name] for f in config_fields(config_cls)}
    run_keys = getattr(config_cls, "RUN_KEYS", ())
    for name, section_cls in sections(config_cls).items():
        found.update({f"{name}.{key}": kind for key, kind in field_types(section_cls).items() if key not in run_keys})
    return found


def section_defaults(config_cls: type) -> dict[str, Any]:
    """The config's defaults as its flags show them: each section's from the config's own default of it."""
    defaults = config_cls()
    found = {f.name: f.default for f in config_fields(config_cls)}
    for name in sections(config_cls):
        found.update({f"{name}.{key}": value for key, value in config_to_dict(getattr(defaults, name)).items()})
    return found


def _flag(key: str) -> str:
    return "--" + key.replace("_", "-")


def _closest(key: str, known: list[str], as_flag: bool = False, config_cls: type | None = None) -> str:
    section, _, inner = key.partition(".")
    run_keys = getattr(config_cls, "RUN_KEYS", ())
    if inner and config_cls is not None and section in sections(config_cls) and inner in run_keys:
        return f" (the experiment sets each run's `{inner}` itself)"
    return did_you_mean(key, known, shown=_flag if as_flag else None)


_TRUE, _FALSE = ("true", "1", "yes", "on"), ("false", "0", "no", "off")


def optional_type(expected: type) -> type | None:
    """``X`` of a field typed ``X | None`` (None when the field's type is not optional)."""
    arguments = typing.get_args(expected)
    if typing.get_origin(expected) in (typing.Union, types.UnionType) and type(None) in arguments:
        return next(argument for argument in arguments if argument is not type(None))
    return None


def coerce(key: str, value: Any, expected: type, where: str) -> Any:
    """Convert a YAML value or a command-line string to the field's type, or raise a UserError."""
    inner = optional_type(expected)
    if inner is not None:
        return None if value is None else coerce(key, value, inner, where)
    if typing.get_origin(expected) is list:  # a YAML list, one value, or the values of an nargs="+" flag
        (item_type,) = typing.get_args(expected)
        items = value if isinstance(value, list) else [value]
        try:
            return [coerce(key, item, item_type, where) for item in items]
        except UserError:
            raise UserError(f"{where}: `{key}` expects a list of {item_type.__name__} values, got {value!r}") from None
    if expected is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lower() in _TRUE + _FALSE:
            return value.strip().lower() in _TRUE
    elif expected is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, (str, float)) and not isinstance(value, bool):
            try:
                number = float(value)
            except ValueError:
                number = None
            if number is not None and number.is_integer():
                return int(number)
    elif expected is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                pass
    elif isinstance(value, expected):
        return value
    raise UserError(f"{where}: `{key}` expects {expected.__name__}, got {value!r}")


def parse_value(text: str) -> Any:
    """A KEY=VALUE item's value: an int, a float (``5e5`` too), else YAML (true, null, [1, 2], a string)."""
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def key_values(key: str, items: list[str]) -> tuple[dict[str, Any], list[str]]:
    """``KEY=VALUE`` items as a dict (values by :func:`parse_value`), and the problems of malformed items."""
    bad = [item for item in items if "=" not in item or not item.split("=", 1)[0].strip()]
    if bad:
        return {}, [f"{key}: expected KEY=VALUE items, got {bad[0]!r}"]
    pairs = [item.split("=", 1) for item in items]
    return {name.strip(): parse_value(text) for name, text in pairs}, []


def unknown_option(key: str, config_cls: type) -> UserError:
    """The error for a command-line key that ``config_cls`` does not have, naming the closest one."""
    key = key.lstrip("-").split("=")[0].replace("-", "_")
    known = list(field_types(config_cls))
    return UserError(f"unknown option {_flag(key)}{_closest(key, known, as_flag=True, config_cls=config_cls)}")


def load_config(config_cls: type, path: str | Path | None = None, overrides: dict[str, Any] | None = None):
    """Build ``config_cls`` from its defaults, then a YAML file, then ``overrides`` (e.g. parsed flags)."""
    types_by_key = field_types(config_cls)
    values: dict[str, Any] = {}
    if path is not None:
        values.update(_read_yaml(Path(path), config_cls, types_by_key))
    for key, value in (overrides or {}).items():
        if key not in types_by_key:
            raise unknown_option(key, config_cls)
        values[key] = coerce(key, value, types_by_key[key], _flag(key))
    for first, second in getattr(config_cls, "EXCLUSIVE", ()):  # given together, one would be ignored
        if (overrides or {}).get(first) and (overrides or {}).get(second):
            raise UserError(f"{_flag(first)} and {_flag(second)} exclude each other; give one")
    return checked(build(config_cls, values), path)


def build(config_cls: type, values: dict[str, Any]):
    """``config_cls`` from checked values (a section's keys as ``<section>.<key>``, over the config's own
    default of that section)."""
    own = {key: value for key, value in values.items() if "." not in key}
    for name in sections(config_cls):
        given = {key.split(".", 1)[1]: value for key, value in values.items() if key.startswith(f"{name}.")}
        if given:
            own[name] = dataclasses.replace(getattr(config_cls(), name), **given)
    return config_cls(**own)


def flattened(values: dict[str, Any], config_cls: type, where: str = "") -> dict[str, Any]:
    """A mapping read from YAML with its sections' mappings as ``<section>.<key>`` keys (and old forms in
    today's, by the class's ``upgrade_recipe``)."""
    upgrade = getattr(config_cls, "upgrade_recipe", None)
    values = upgrade(values) if upgrade else values
    found = {}
    for key, value in values.items():
        if key in sections(config_cls):
            if not isinstance(value, dict):
                raise UserError(f"{where}: `{key}` expects a mapping of its keys to values, got {value!r}")
            found.update({f"{key}.{inner}": item for inner, item in value.items()})
        else:
            found[key] = value
    return found


def checked(config, source: Path | str | None = None):
    """``config``, once its ``problems()`` are none (else a one-line :class:`UserError`, naming ``source``)."""
    problems = config.problems()
    if problems:
        raise UserError((f"{source}: " if source is not None else "") + "; ".join(problems))
    return config


def _read_yaml(path: Path, config_cls: type, types_by_key: dict[str, type]) -> dict[str, Any]:
    if not path.is_file():
        raise UserError(f"{path}: config file not found")
    try:
        loaded = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as error:
        line = getattr(getattr(error, "problem_mark", None), "line", None)
        where = f"{path}:{line + 1}" if line is not None else str(path)
        raise UserError(f"{where}: not valid YAML ({getattr(error, 'problem', error)})") from None
    if loaded is None:
        return {}
    if not isinstance(loaded, dict):
        raise UserError(f"{path}: expected a mapping of config keys to values, got {type(loaded).__name__}")
    values = {}
    for key, value in flattened(loaded, config_cls, str(path)).items():
        if key not in types_by_key:
            closest = _closest(str(key), list(types_by_key), config_cls=config_cls)
            raise UserError(f"{path}: unknown key `{key}`{closest}")
        values[key] = coerce(key, value, types_by_key[key], str(path))
    return values


def saved_config(config_cls: type, path: Path) -> dict[str, Any]:
    """A saved config.yaml as a dict, keys added to ``config_cls`` since it was written at their defaults and
    keys since renamed or moved in today's form (the class's ``upgrade_saved``), so a run saved by an older
    meap still resumes."""
    saved = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    if not isinstance(saved, dict):
        return saved
    upgrade = getattr(config_cls, "upgrade_saved", None)
    saved = upgrade(saved) if upgrade else saved
    found = {**config_to_dict(config_cls()), **saved}
    for name in sections(config_cls):
        found[name] = {**config_to_dict(getattr(config_cls(), name)), **(saved.get(name) or {})}
    return found


def config_to_dict(config) -> dict[str, Any]:
    """The config's keys and values (what config.yaml holds; a section as a mapping)."""
    return dataclasses.asdict(config)


def dotted(values: dict[str, Any]) -> dict[str, Any]:
    """A config's dict with each section's keys as ``<section>.<key>``, for comparing two configs key by key."""
    found = {}
    for key, value in values.items():
        if isinstance(value, dict):
            found.update({f"{key}.{inner}": item for inner, item in value.items()})
        else:
            found[key] = value
    return found


def save_config(config, path: Path) -> None:
    atomic_write_text(path, yaml.safe_dump(config_to_dict(config), sort_keys=False))

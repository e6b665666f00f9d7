"""A config dataclass's fields as argparse flags, and an argparse whose errors are meap's one-line errors
(with "did you mean"). Torch-free: ``meap --help`` and an argument error stay instant."""

from __future__ import annotations

import argparse
import dataclasses
import typing

from meap.errors import UserError, did_you_mean


class Parser(argparse.ArgumentParser):
    """argparse whose errors are meap's: one line naming the command, exit status 2 (a UserError)."""

    commands: dict[str, argparse.ArgumentParser] = {}  # prog ("meap eval niah") -> its parser

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("allow_abbrev", False)
        kwargs.setdefault("formatter_class", HelpFormatter)
        super().__init__(*args, **kwargs)
        Parser.commands[self.prog] = self

    def error(self, message: str):
        raise UserError(f"{self.prog}: {message} (see `{self.prog} --help`)")


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Defaults shown where they say something: not None, not a flag's False, not twice."""

    def _get_help_string(self, action):
        text = action.help or ""
        unshown = action.default is None or action.default is False or action.default == argparse.SUPPRESS
        if unshown or "(default" in text:
            return text
        return super()._get_help_string(action)


def unknown_argument(unknown: list[str], parser: argparse.ArgumentParser) -> UserError:
    """``unknown option --x (did you mean `--y`?)`` from the flags of the command that was given."""
    flag = next((arg for arg in unknown if arg.startswith("--")), None)
    if flag is None:
        return UserError(f"{parser.prog}: unexpected argument {unknown[0]!r} (see `{parser.prog} --help`)")
    flag = flag.split("=")[0]
    known = [option for action in parser._actions for option in action.option_strings if option.startswith("--")]
    return UserError(f"unknown option {flag}" + (did_you_mean(flag, known) or f" (see `{parser.prog} --help`)"))


def _metavar(name: str, kind: type) -> str:
    return {int: "N", float: "NUMBER", bool: "BOOL"}.get(kind, "DIR" if name == "output" else name.upper())


def _csv(kind: type):
    def parse(text: str) -> list:
        try:
            return [kind(item) for item in text.split(",") if item.strip()]
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected comma-separated {kind.__name__}s, got {text!r}") from None

    return parse


def add_flags(target, config_cls: type, last: frozenset[str] = frozenset(), typed: bool = False) -> None:
    """One flag per config field (``--key-name VALUE``; the ``cli`` metadata of :mod:`meap.config.commands`
    says where a field looks otherwise), and one per key of each section (``--train.key-name VALUE``). Unset
    flags stay None, so defaults come from the config alone. ``typed``: argparse converts numbers (its own
    error message); else ``load_config`` does."""
    from meap.config.loading import config_fields, field_types, section_defaults, sections

    types, defaults = field_types(config_cls), section_defaults(config_cls)
    exclusive: dict[str, argparse._MutuallyExclusiveGroup] = {}
    own = [(f.name, f) for f in sorted(config_fields(config_cls), key=lambda f: f.name in last)]
    for name, section_cls in sections(config_cls).items():
        own += [(f"{name}.{f.name}", f) for f in dataclasses.fields(section_cls) if f"{name}.{f.name}" in types]
    for key, f in own:
        _add_flag(target, key, f, types[key], defaults.get(key, f.default), exclusive, typed)


def _add_flag(target, key: str, f: dataclasses.Field, kind: type, default, exclusive: dict, typed: bool) -> None:
    from meap.config.loading import optional_type

    cli, text = f.metadata.get("cli", {}), f.metadata.get("help", "")
    kind = optional_type(kind) or kind
    item = typing.get_args(kind)[0] if typing.get_origin(kind) is list else None
    metavar = cli.get("metavar") or _metavar(f.name, item or kind)
    parent = target
    if "exclusive" in cli:
        if cli["exclusive"] not in exclusive:
            exclusive[cli["exclusive"]] = target.add_mutually_exclusive_group()
        parent = exclusive[cli["exclusive"]]
    if cli.get("positional"):
        parent.add_argument(key, nargs="+" if item is not None else None, metavar=metavar, help=text)
        return
    stated = cli.get("switch") or default in ("", None, dataclasses.MISSING) or "(default" in text
    shown = str(default).lower() if isinstance(default, bool) else default
    options = dict(
        dest=key,
        default=None,
        help=text + ("" if stated else f" (default: {shown})"),
        required=bool(cli.get("required")),
    )
    if cli.get("switch"):
        options["action"] = "store_true"
    elif item is not None:
        options.update(type=_csv(item)) if cli.get("comma") else options.update(nargs="+")
        options["metavar"] = metavar
        if cli.get("extend"):  # given again, the items add up
            options["action"] = "extend"
    elif kind is bool:
        options.update(nargs="?", const="true", metavar="BOOL")
    else:
        options.update(metavar=metavar, **({"type": kind} if typed and kind in (int, float) else {}))
    others = [cli[name] for name in ("alias", "short") if name in cli and "." not in key]
    parent.add_argument(f"--{key.replace('_', '-')}", *others, **options)

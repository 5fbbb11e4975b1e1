"""Command-line flags generated from GRPOConfig's fields: one flag per field, with the field's help, type, choices
and default, plus the original's spellings (`--epochs`, `--batch-size`, `--model`, ...) as aliases.

Every flag defaults to "not given" (argparse.SUPPRESS), so only flags the user typed reach the config as overrides.

    parser = argparse.ArgumentParser(argument_default=argparse.SUPPRESS); add_config_flags(parser)
    assert config_overrides(parser.parse_args(["--epochs", "2"])) == {"num_train_epochs": 2.0}    # only what was typed
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import re
import textwrap
import typing

from grpo_tool.settings import FIELD_TYPES, FIELDS
from grpo_tool.trl_options import TRL_ALIASES, parse_option, trl_word_problem

# Where each --help section starts, in field order (the config's # comments).
SECTIONS = {"model_name": "model and backend", "dataset_name": "data", "learning_rate": "GRPO",
            "reward_function_type": "rewards", "logging_steps": "logging and monitoring", "output_dir": "output"}
LIST_METAVARS = {"tools": "SPEC[,SPEC...]", "environments": "[NAME=]FILE.py:CLASS"}
EXCLUSIVE = {"wandb_project": "wandb"}  # fields whose flags share a mutually exclusive group with other flags
UNSET_WORDS = ("none", "null")


def finite_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"{text!r} is not a finite number")
    return value


def positive_number(text: str) -> float:
    value = finite_float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not above 0")
    return value


def whole_number(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None


def positive_whole_number(text: str) -> int:
    value = whole_number(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not 1 or more")
    return value


def or_unset(convert):
    """`convert`, but 'none' / 'null' give None (unset) for fields that may be unset."""
    def parse(text: str):
        return None if text.lower() in UNSET_WORDS else convert(text)

    parse.__name__ = convert.__name__
    return parse


def trl_option(text: str) -> tuple[str, object]:
    try:
        return parse_option(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def value_parser(name: str):
    """(argparse type, metavar) of a field."""
    kind = FIELD_TYPES[name]
    options = set(typing.get_args(kind)) or {kind}
    optional = type(None) in options
    if int in options:
        return (or_unset(whole_number) if optional else whole_number), "N"
    if float in options:
        return (or_unset(finite_float) if optional else finite_float), "X"
    if FIELDS[name].metadata["choices"]:
        return str, None  # argparse shows the choices
    if name.endswith(("model", "model_name", "column")):
        return str, "NAME"
    if name == "eval_checkpoints":
        return str, "all|STEP,..."
    return str, ("PATH" if any(word in name for word in ("dir", "data", "path", "checkpoint")) else "TEXT")


def option_strings(name: str) -> list[str]:
    generated = "--" + name.replace("_", "-")
    return list(dict.fromkeys([*FIELDS[name].metadata["flags"], generated]))


def field_default(name: str):
    field = FIELDS[name]
    return field.default_factory() if field.default is dataclasses.MISSING else field.default


def help_text(name: str) -> str:
    field, default = FIELDS[name], field_default(name)
    if isinstance(default, bool):
        shown = f" (default: {'on' if default else 'off'})"
    else:
        shown = "" if default in (None, [], {}) else f" (default: {default})"
    return field.metadata["help"].replace("%", "%%") + shown


def add_bool_flag(group, name: str) -> None:
    names = option_strings(name)
    negatives = [flag for flag in names if flag.startswith(("--disable-", "--no-"))]
    if not negatives:
        group.add_argument(*names, dest=name, action=argparse.BooleanOptionalAction, default=argparse.SUPPRESS,
                           help=help_text(name))
        return
    positives = [flag for flag in names if flag not in negatives]
    exclusive = group.add_mutually_exclusive_group()
    exclusive.add_argument(*positives, dest=name, action="store_const", const=True, default=argparse.SUPPRESS,
                           help=help_text(name))
    exclusive.add_argument(*negatives, dest=name, action="store_const", const=False, default=argparse.SUPPRESS,
                           help="the opposite of " + positives[0])


def add_trl_aliases(parser: argparse.ArgumentParser) -> None:
    """TRL's flag for a setting of ours (--num-generations for --group-size) works as ours, out of --help's way."""
    for trl_name, ours in TRL_ALIASES.items():
        kind = FIELD_TYPES[ours]
        if kind is bool or set(typing.get_args(kind)) == {bool, type(None)}:
            parser.add_argument("--" + trl_name.replace("_", "-"), dest=ours, action=argparse.BooleanOptionalAction,
                                default=argparse.SUPPRESS, help=argparse.SUPPRESS)
        else:
            parser.add_argument("--" + trl_name.replace("_", "-"), dest=ours, type=value_parser(ours)[0],
                                help=argparse.SUPPRESS)


def trl_flag_problem(flag: str) -> str | None:
    """For a flag we do not have that is TRL's (--max-prompt-length, --lr-scheduler-type): what to give instead."""
    return trl_word_problem(flag.removeprefix("--").replace("-", "_"), flag)


def add_config_flags(parser: argparse.ArgumentParser) -> dict[str, argparse._ActionsContainer]:
    """A flag for every config field, and TRL's spellings of them; returns the mutually exclusive groups named in
    EXCLUSIVE."""
    add_trl_aliases(parser)
    group, exclusive_groups = parser, {}
    for name in FIELDS:
        if name in SECTIONS:
            group = parser.add_argument_group(SECTIONS[name])
        target = group
        if name in EXCLUSIVE:
            target = exclusive_groups.setdefault(EXCLUSIVE[name], group.add_mutually_exclusive_group())
        kind = FIELD_TYPES[name]
        if is_bool_field(name):
            add_bool_flag(target, name)
        elif kind is list:
            target.add_argument(*option_strings(name), dest=name, action="append",
                                metavar=LIST_METAVARS.get(name, "FILE.py:FUNCTION"), help=help_text(name))
        elif kind is dict:
            target.add_argument(*option_strings(name), dest=name, action="append", type=trl_option,
                                metavar="KEY=VALUE", help=help_text(name))
        else:
            convert, metavar = value_parser(name)
            target.add_argument(*option_strings(name), dest=name, type=convert, metavar=metavar,
                                choices=FIELDS[name].metadata["choices"], help=help_text(name))
    return exclusive_groups


def is_bool_field(name: str) -> bool:
    kind = FIELD_TYPES[name]
    return kind is bool or set(typing.get_args(kind)) == {bool, type(None)}


def typed_flag(name: str, written: str) -> str:
    """A setting as the command line spells it: `streaming=true` as --streaming, `use_lora=False` as --no-lora,
    `per_device_train_batch_size=0` as --batch-size 0."""
    flags = option_strings(name)
    if is_bool_field(name) and written.lower() in ("true", "false"):
        negatives = [flag for flag in flags if flag.startswith(("--disable-", "--no-"))]
        positive = next(flag for flag in flags if flag not in negatives)
        if written.lower() == "true":
            return positive
        return negatives[0] if negatives else "--no-" + positive.removeprefix("--")
    return f"{flags[0]} {written}"


def as_typed(message: str, from_file: typing.Collection[str] = ()) -> str:
    """A config error in the words of the command line: `per_device_train_batch_size=0` becomes `--batch-size 0`,
    `streaming=true` --streaming, and a setting named alone (`raise max_seq_length`) its flag. Each mention keeps its
    own value, so advice (`set zero_variance_groups=drop`) names the value it advises, not the one given. Keys a
    config file set keep their names (the file is where they are fixed); names without an underscore (`streaming`,
    `seed`) read as words when alone, so only their `name=value` form becomes a flag."""
    for name in FIELDS:
        if name in from_file:
            continue
        message = re.sub(rf"(?<![\w-]){name}=('[^']*'|[^\s,;:)]+)", lambda found, name=name: typed_flag(name, found[1]),
                         message)
        if "_" in name:
            message = re.sub(rf"(?<![\w-]){name}(?![\w=-])", option_strings(name)[0], message)
    return message


def config_overrides(args: argparse.Namespace) -> dict[str, typing.Any]:
    """The config fields the user gave on the command line, as values of the fields' types."""
    overrides = {name: value for name, value in vars(args).items() if name in FIELDS}
    if "trl_options" in overrides:
        overrides["trl_options"] = dict(overrides["trl_options"])
    return overrides


def shown_default(name: str) -> str:
    default = field_default(name)
    if isinstance(default, bool):
        return "on" if default else "off"
    if default in (None, [], {}):
        return "unset"
    return f"`{default}`"


def shown_flags(name: str) -> str:
    """A field's flags as --help offers them: booleans with their opposite."""
    flags = option_strings(name)
    if is_bool_field(name) and not any(flag.startswith(("--disable-", "--no-")) for flag in flags):
        flags = [spelled for flag in flags for spelled in (flag, "--no-" + flag.removeprefix("--"))]
    return ", ".join(f"`{flag}`" for flag in flags)


def settings_reference() -> str:
    """docs/settings.md, generated: every setting, as a config file's key and as flags, with its default and its help,
    in the sections of --help (tests/test_manual.py keeps the page equal to this)."""
    lines = ["# Every setting", "", *textwrap.wrap(
        "Each setting is a key of a `--config` file (JSON or YAML) and a flag; a flag you give beats the file, which "
        "beats the presets and the modes ([the layers](configuration.md#config)). `none` or `null` unsets a setting "
        "whose default is unset. This page is generated from `GRPOConfig` (`grpo_tool/settings.py`) by "
        "`grpo_tool.flags.settings_reference`, as `--help` is.", 116, break_on_hyphens=False, break_long_words=False)]
    for name in FIELDS:
        if name in SECTIONS:
            lines += ["", f"## {SECTIONS[name][0].upper()}{SECTIONS[name][1:]}", "",
                      "| key | flags | default | what it does |", "|---|---|---|---|"]
        choices = FIELDS[name].metadata["choices"]
        said = FIELDS[name].metadata["help"] + (f" (one of {', '.join(map(str, choices))})" if choices else "")
        lines.append(f"| `{name}` | {shown_flags(name)} | {shown_default(name)} | {said.replace('|', chr(92) + '|')} |")
    return "\n".join(lines) + "\n"

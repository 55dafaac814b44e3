"""Every option that two subcommands share has the same name, syntax and default (cli/options.py)."""

from __future__ import annotations

import argparse
import dataclasses
from collections import defaultdict

import pytest

from lorakit.cli.main import build_parser
from lorakit.cli.options import GROUPS, split_list
from lorakit.train.config import TrainConfig

_FIELD_DEFAULTS = {f.name: f.default for f in dataclasses.fields(TrainConfig)}

# Option strings whose meaning genuinely differs between the commands that have them (why, per entry).
ALLOWED_DIFFERENCES: dict[str, str] = {
    # merge: the type of the saved weights (fp32/bf16/fp16); export: the GGUF weight type (f16, q8_0, ...).
    "--dtype": "the type of the written weights, which each output format defines",
    # combine: the rank of the combined adapter (svd only, no default: it must be chosen).
    "--rank": "combine's rank is the output's, with no default",
    "-r": "combine's rank is the output's, with no default",
    # eval's batch is an evaluation batch: train's --eval-batch-size (which eval also accepts), same default 32.
    "--batch-size": "eval's --batch-size is train's --eval-batch-size",
    # serve has no data set to take the task from (train/eval's auto), so it has its own choices.
    "--task": "serve has no data set to infer the task from",
}
# (command, option) pairs with a command-specific default (why, per entry).
ALLOWED_DEFAULTS: dict[tuple[str, str], str] = {
    ("quickstart", "--max-steps"): "the tour's fixed length (150 steps), not an open-ended training run",
    ("quickstart", "--out"): "the tour writes runs/quickstart",
}


def _subcommands(parser: argparse.ArgumentParser, prefix: str = "") -> dict[str, argparse.ArgumentParser]:
    """Every (nested) subcommand parser by its command line, e.g. ``analyze spectrum``."""
    found: dict[str, argparse.ArgumentParser] = {}
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                found[f"{prefix}{name}"] = sub
                found.update(_subcommands(sub, f"{prefix}{name} "))
    return found


def _default(action: argparse.Action) -> object:
    """The effective default: train SUPPRESSes its defaults (a config file may set them); TrainConfig's apply."""
    if action.default is argparse.SUPPRESS:
        return _FIELD_DEFAULTS.get(action.dest, argparse.SUPPRESS)
    return tuple(action.default) if isinstance(action.default, list) else action.default


def _signature(action: argparse.Action) -> dict[str, object]:
    # argparse's default type is str. `required` is not compared: one command can need an option (merge --adapter) that another takes optionally.
    return {"dest": action.dest, "action": type(action).__name__, "nargs": action.nargs,
            "type": getattr(action.type, "__name__", action.type) or "str", "const": action.const,
            "choices": tuple(action.choices) if action.choices else None, "default": _default(action)}


def option_table() -> dict[str, dict[str, dict[str, object]]]:
    """option string -> command -> signature, over every subcommand of ``lorakit``."""
    table: dict[str, dict[str, dict[str, object]]] = defaultdict(dict)
    for command, parser in _subcommands(build_parser()).items():
        for action in parser._actions:
            if isinstance(action, argparse._HelpAction):
                continue
            for option in action.option_strings:
                table[option][command] = _signature(action)
    return table


def test_shared_options_agree_across_commands():
    table = option_table()
    assert {"inspect", "eval", "serve", "train", "train-many"} <= {c for cs in table.values() for c in cs}
    problems = []
    for option, by_command in sorted(table.items()):
        if len(by_command) < 2 or option in ALLOWED_DIFFERENCES:
            continue
        kept = {c: s for c, s in by_command.items() if (c, option) not in ALLOWED_DEFAULTS}
        for command, sig in by_command.items():
            if (command, option) in ALLOWED_DEFAULTS:  # only its default may differ
                kept[command] = {**sig, "default": None}
        distinct = {repr(s) for s in kept.values()}
        if len(distinct) > 1:
            problems.append(f"{option}: " + "; ".join(f"{c} {s}" for c, s in sorted(kept.items())))
    assert not problems, "options that disagree between commands:\n" + "\n".join(problems)


def test_allow_lists_name_real_options():
    table = option_table()  # an entry for an option no command shares any more must go
    assert all(len(table.get(o, {})) > 1 for o in ALLOWED_DIFFERENCES)
    assert all(c in table.get(o, {}) for c, o in ALLOWED_DEFAULTS)


@pytest.mark.parametrize("command", ["inspect", "train"])
def test_targets_take_spaces_or_commas_alike(command):
    parser = _subcommands(build_parser())[command]
    head = ["minilm"] + (["sst2"] if command == "train" else [])
    spaced = parser.parse_args([*head, "--targets", "query", "value"]).targets
    commas = parser.parse_args([*head, "--targets", "query,value"]).targets
    assert tuple(spaced) == tuple(commas) == ("query", "value")


def test_split_list_keeps_commas_inside_brackets():
    assert split_list(["c_attn[q,v]", "re:.{1,2}_proj,dense"]) == ("c_attn[q,v]", "re:.{1,2}_proj", "dense")


def test_group_names_are_not_field_names():
    assert not set(GROUPS) & set(_FIELD_DEFAULTS)  # a group named like a field would hide the field

"""Command-line options, declared once and shared by every subcommand.

An option that means the same thing in two commands is one :class:`~lorakit.train.config.TrainConfig`
field (its help text, type, choices and default live next to the field); each command's parser is
built from the :data:`GROUPS` of fields it uses, so ``--targets``, ``--alpha``, ``--max-length``,
``--device``... have the same name, syntax and default in ``inspect``, ``eval``, ``serve``, ``train``
and ``train-many``. Options that are not training settings but recur (``--json``) are declared here.
``tests/cli/test_options.py`` walks every parser and fails when two commands disagree.

One format per kind of value: a list option (``--targets``, ``--report-to``, ``--rank-pattern``)
takes its items space- or comma-separated alike (``--targets q v`` = ``--targets q,v``; commas
inside ``[...]``, ``{...}`` or ``(...)`` stay, so ``c_attn[q,v]`` and ``re:.{1,2}`` survive); a yes/no
option has a ``--no-`` form. Values are validated once, by ``TrainConfig`` (which delegates the LoRA
fields to ``LoraSpec``): :func:`check_config_options` sends a command's values through it.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from collections.abc import Mapping, Sequence
from typing import Any

from lorakit.train.config import TrainConfig, field_types, split_list

# Fields shared by several commands, by theme; a command adds the groups (or single fields) it uses.
GROUPS: dict[str, tuple[str, ...]] = {
    "lora": ("targets", "rank", "alpha", "layers"),  # the adapter's shape (train adds dropout, variants...)
    "runtime": ("device", "threads", "progress"),
    "inputs": ("data_root", "max_length"),  # (group names are never field names: "data" is one)
    "generation": ("num_beams", "length_penalty", "no_repeat_ngram_size", "max_new_tokens"),
}
_FIELDS = {f.name: f for f in dataclasses.fields(TrainConfig)}


class ListAction(argparse.Action):
    """``nargs="+"`` whose items may also be comma-separated; stores a tuple (see :func:`split_list`)."""

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: Any,
                 option_string: str | None = None) -> None:
        """Store the flattened items."""
        items = split_list(values)
        if not items:
            parser.error(f"{option_string} needs at least one non-empty item")
        setattr(namespace, self.dest, items)


def _scalar(kind: Any) -> Any:
    """The argparse ``type`` for a field annotation (``int | None`` → int)."""
    args = [a for a in getattr(kind, "__args__", (kind,)) if a is not type(None)]
    base = args[0] if args else kind
    return base if base in (int, float, str) else str


def _shown(value: Any) -> str:
    return " ".join(value) if isinstance(value, tuple) else str(value)


def add_config_options(parser: argparse.ArgumentParser, names: Sequence[str], *, suppress: bool = False,
                       flags: Mapping[str, Sequence[str]] | None = None,
                       helps: Mapping[str, str] | None = None) -> None:
    """Add one option per TrainConfig field in ``names`` (a group name from :data:`GROUPS` adds its fields).

    ``suppress`` leaves unset options out of the namespace (``lorakit train``: a config file may set
    them); otherwise the field's default is the option's. ``flags`` gives a command's extra spellings
    of a field (the first is shown first); ``helps`` replaces a field's help where a command means
    something narrower (the default shown stays the field's).
    """
    types, flags, helps = field_types(), flags or {}, helps or {}
    for name in [n for group in names for n in GROUPS.get(group, (group,))]:
        f, kind = _FIELDS[name], types[name]
        meta = f.metadata
        help_text = helps.get(name, meta.get("help", ""))
        default = argparse.SUPPRESS if suppress else f.default
        if meta.get("positional"):
            parser.add_argument(name, metavar=name.upper(), nargs="?", default=default, help=help_text)
            continue
        spellings = [*flags.get(name, ()), "--" + name.replace("_", "-"), *meta.get("aliases", ())]
        spellings = list(dict.fromkeys(spellings))
        shown = "" if f.default is None else f" (default: {_shown(f.default)})"
        common = {"dest": name, "default": default, "help": help_text + shown}
        if kind is bool:
            parser.add_argument(*spellings, action=argparse.BooleanOptionalAction, **common)
        elif getattr(kind, "__origin__", None) is tuple:
            parser.add_argument(*spellings, nargs="+", action=ListAction, metavar="ITEM", **common)
        else:
            parser.add_argument(*spellings, type=_scalar(kind), choices=meta.get("choices"),
                                metavar=None if meta.get("choices") else name.upper(), **common)


def check_config_options(args: argparse.Namespace, names: Sequence[str]) -> TrainConfig:
    """Validate a command's TrainConfig-field options the one way (``TrainConfig``); returns that config.

    Raises ``ValueError`` naming the option (``options: num_beams must be >= 1, got 0``).
    """
    wanted = [n for group in names for n in GROUPS.get(group, (group,))]
    values = {n: getattr(args, n) for n in wanted if hasattr(args, n)}
    return TrainConfig.from_mapping(values, source="options")


def add_json_option(parser: argparse.ArgumentParser, what: str = "the results") -> None:
    """``--json [FILE]``: write ``what`` as JSON to FILE; no FILE (or ``-``): to stdout instead of the table."""
    parser.add_argument("--json", metavar="FILE", nargs="?", const="-", default=None,
                        help=f"write {what} as JSON to FILE (no FILE or '-': to stdout, instead of the table)")


def one_line_errors(parser: argparse.ArgumentParser) -> None:
    """Make ``parser`` report bad or unknown options as one ``error:`` line with exit code 2."""

    def error(message: str) -> None:
        print(f"error: {message}", file=sys.stderr)
        raise SystemExit(2)

    parse_known = parser.parse_known_args

    def strict_parse_known_args(args: Any = None, namespace: Any = None) -> tuple[argparse.Namespace, list[str]]:
        namespace, extras = parse_known(args, namespace)
        if extras:  # argparse would report these later, with a usage block, from the top parser
            error(f"unknown option {extras[0]!r} (see lorakit {parser.prog.split()[-1]} --help)")
        return namespace, extras

    parser.error = error  # type: ignore[method-assign]
    parser.parse_known_args = strict_parse_known_args  # type: ignore[method-assign]

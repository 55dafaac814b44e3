"""Helpers shared by subcommands: model loading that matches an adapter, tables, JSON output."""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path
from typing import Any

from lorakit.core import LoraSpec
from lorakit.io import AdapterFile

TASK_FOR_PEFT_TYPE = {"SEQ_CLS": "classify", "CAUSAL_LM": "generate"}
_HEAD = re.compile(r"^base_model\.model\.(classifier|score)(\.out_proj)?\.weight$")


def positive_int(text: str) -> int:
    """argparse ``type=``: a whole number >= 1, else a one-line usage error."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def spec_from_args(args: Any) -> LoraSpec:
    """A LoraSpec from the common ``--targets/--rank/--alpha/--layers`` options."""
    targets = tuple(t.strip() for t in args.targets.split(",") if t.strip())
    layers = tuple(int(i) for i in args.layers.split(",")) if getattr(args, "layers", None) else None
    alpha = args.alpha if getattr(args, "alpha", None) is not None else 2.0 * args.rank
    return LoraSpec(r=args.rank, alpha=alpha, targets=targets, layers=layers)


def add_target_options(parser: Any, default_targets: str = "qv") -> None:
    """``--targets``, ``--rank``, ``--alpha``, ``--layers`` as every command spells them."""
    parser.add_argument("--targets", default=default_targets,
                        help="comma-separated presets (qv, attention, ffn, all-linear), module-name suffixes "
                             "(query, mlp.down_proj, c_attn[q,v]) or regexes (re:.*q_proj) [default: %(default)s]")
    parser.add_argument("--rank", "-r", type=int, default=8, help="LoRA rank r [default: %(default)s]")
    parser.add_argument("--alpha", type=float, default=None, help="LoRA alpha (scale alpha/r) [default: 2·rank]")
    parser.add_argument("--layers", default=None, help="only adapt these layer indices, e.g. 0,1,2")


def num_labels_of(adapter: AdapterFile) -> int | None:
    """The number of classes of a classification adapter, read off its saved head."""
    for key, value in adapter.tensors.items():
        if _HEAD.match(key):
            return int(value.shape[0])
    return None


def load_model_for_adapter(model: str, adapter: AdapterFile | None, task: str | None = None):
    """Load ``model`` with the head the adapter was trained with (classifier for SEQ_CLS, LM head...)."""
    from lorakit.models import load_model

    if task is None and adapter is not None:
        task = TASK_FOR_PEFT_TYPE.get(adapter.config.task_type or "")
        if task is None and num_labels_of(adapter):
            task = "classify"
    task = task or "base"
    num_labels = num_labels_of(adapter) if (adapter is not None and task == "classify") else None
    return load_model(model, task=task, num_labels=num_labels)


def print_table(rows: list[dict[str, Any]], columns: list[str], file=None) -> None:
    """A plain aligned text table (numbers right-aligned, thousands separated)."""
    file = file or sys.stdout

    def fmt(v: Any) -> str:
        if isinstance(v, int) and not isinstance(v, bool):
            return f"{v:,}"
        if isinstance(v, float):
            return f"{v:.4g}"
        return str(v)

    cells = [[fmt(r.get(c, "")) for c in columns] for r in rows]
    widths = [max([len(c)] + [len(row[i]) for row in cells]) for i, c in enumerate(columns)]
    print("  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True)), file=file)
    for row in cells:
        print("  ".join(v.rjust(w) if v[:1].isdigit() else v.ljust(w)
                        for v, w in zip(row, widths, strict=True)), file=file)


def write_json(obj: Any, path: str | Path | None) -> None:
    """Dump ``obj`` to ``path`` (or stdout when ``path`` is "-" or None)."""
    text = json.dumps(obj, indent=2, default=str)
    if path in (None, "-"):
        print(text)
    else:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(text + "\n", encoding="utf-8")

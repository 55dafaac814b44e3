"""Helpers shared by subcommands: model loading that matches an adapter, tables, JSON output."""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path
from typing import Any

from lorakit.core import LoraSpec
from lorakit.core.targeting import CLASSIFIER_HEADS
from lorakit.io import AdapterFile
from lorakit.io.atomic import write_atomic
from lorakit.io.config import TASK_OF_PEFT_TYPE
from lorakit.io.keys import PEFT_PREFIX

_HEAD = re.compile(rf"^{re.escape(PEFT_PREFIX)}({'|'.join(CLASSIFIER_HEADS)})(\.out_proj)?\.weight$")


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
    """A LoraSpec from the ``lora`` option group (``--targets/--rank/--alpha/--layers``); LoraSpec validates."""
    from lorakit.train.config import parse_layers

    layers = parse_layers(args.layers) if getattr(args, "layers", None) else None
    return LoraSpec(r=args.rank, alpha=args.alpha, targets=tuple(args.targets), layers=layers)


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
        task = TASK_OF_PEFT_TYPE.get(adapter.config.task_type or "")
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
        write_atomic(path, text + "\n")

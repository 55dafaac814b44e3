"""Merge an adapter into its base model and write a standalone model folder.

The folder holds safetensors weights, config and tokenizer, loadable by transformers'
``from_pretrained`` with no lorakit installed. The adapter may come from lorakit or from PEFT, and
may have been trained on any base precision (``--base-dtype bf16/nf4/...``): the merge always loads
the full-precision base and merges in fp32, then casts to ``--dtype`` if asked.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from lorakit.cli.common import load_model_for_adapter
from lorakit.core import unload
from lorakit.errors import LorakitError
from lorakit.io import load_adapter, read_adapter
from lorakit.models.precision import FLOAT_DTYPES

PROBE = "LoRA freezes the pretrained weights and learns a low-rank update."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``lorakit merge``."""
    parser.add_argument("model", help="embedded model name (minilm, smollm2) or a local Hugging Face folder")
    parser.add_argument("--adapter", required=True, help="adapter folder (PEFT layout)")
    parser.add_argument("--out", required=True, help="output folder for the merged model")
    parser.add_argument("--force", action="store_true", help="write into --out even if it is not empty")
    parser.add_argument("--dtype", choices=tuple(FLOAT_DTYPES), default="fp32",
                        help="type of the saved weights; the merge itself is done in fp32 [default: %(default)s]")


def _outputs(model: torch.nn.Module, batch: dict) -> torch.Tensor:
    with torch.no_grad():
        out = model(**batch)
    for name in ("logits", "last_hidden_state"):
        value = getattr(out, name, None)
        if value is not None:
            return value.float()
    return out[0].float()


def run(args: argparse.Namespace) -> int:
    """Load, merge in fp32 with a finiteness check, compare on a probe input, save."""
    out = Path(args.out)
    if out.exists() and any(out.iterdir()) and not args.force:
        raise LorakitError(f"{out} exists and is not empty (use --force to write into it)")
    adapter = read_adapter(args.adapter)
    loaded = load_model_for_adapter(args.model, adapter)
    model = loaded.model.eval()
    load_adapter(model, adapter)
    encoded = loaded.tokenizer(PROBE, return_tensors="pt")
    batch = {k: v for k, v in encoded.items() if k in ("input_ids", "attention_mask")}
    before = _outputs(model, batch)
    unload(model, merge_first=True)  # fp32 base + fp32 factors: the merge is exact up to fp32 rounding
    model.to(FLOAT_DTYPES[args.dtype])
    after = _outputs(model, batch)
    diff = (after - before).abs().max().item()
    rel = diff / max(before.abs().max().item(), 1e-12)
    from lorakit.models import save_merged

    save_merged(model, loaded.tokenizer, out)
    print(f"merged {args.adapter} into {args.model} -> {out} ({args.dtype})")
    print(f"max abs difference merged vs unmerged on a probe input: {diff:.3e} (relative {rel:.3e})")
    return 0

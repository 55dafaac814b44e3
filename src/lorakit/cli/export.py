"""Merge an adapter into its base model and write one GGUF file (llama.cpp, Ollama, LM Studio).

``lorakit export smollm2 --adapter DIR --gguf model.gguf --dtype q8_0`` loads the base, merges the
adapter with lorakit's merge (fp32, finiteness-checked), and writes the merged model and its
tokenizer with the ``gguf`` package's writer. Llama-architecture models with a byte-level BPE
tokenizer are supported; for the embedded ``smollm2`` the tokenizer metadata of its packaged GGUF
file is copied as is. Without ``--adapter`` the base model alone is exported.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from lorakit.cli.common import load_model_for_adapter
from lorakit.cli.merge import PROBE, _outputs
from lorakit.core import unload
from lorakit.errors import LorakitError
from lorakit.io import load_adapter, read_adapter


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``lorakit export``."""
    from lorakit.models.gguf_export import EXPORT_DTYPES

    parser.add_argument("model", help="embedded model name (smollm2) or a local Hugging Face folder (Llama)")
    parser.add_argument("--adapter", default=None, help="adapter folder (PEFT layout) to merge before exporting")
    parser.add_argument("--gguf", required=True, help="the GGUF file to write")
    parser.add_argument("--dtype", choices=EXPORT_DTYPES, default="f16",
                        help="type of the weight matrices (vectors stay float32) [default: %(default)s]")
    parser.add_argument("--force", action="store_true", help="overwrite --gguf if it exists")


def run(args: argparse.Namespace) -> int:
    """Load, merge (when an adapter is given), write the GGUF file."""
    from lorakit.models.gguf_export import embedded_gguf_source, export_gguf

    out = Path(args.gguf)
    if out.exists() and not args.force:
        raise LorakitError(f"{out} exists (use --force to overwrite it)")
    if out.is_dir():
        raise LorakitError(f"--gguf must be a file path, {out} is a folder")
    adapter = read_adapter(args.adapter) if args.adapter else None
    loaded = load_model_for_adapter(args.model, adapter, task="generate")
    model = loaded.model.eval()
    if adapter is not None:
        load_adapter(model, adapter)
        model.eval()  # the LoRA layers' dropout is created in training mode: the probe must not drop
        encoded = loaded.tokenizer(PROBE, return_tensors="pt")
        batch = {k: v for k, v in encoded.items() if k in ("input_ids", "attention_mask")}
        before = _outputs(model, batch)
        model = unload(model, merge_first=True)
        diff = (_outputs(model, batch) - before).abs().max().item()
        print(f"merged {args.adapter} into {args.model} (max abs difference merged vs unmerged: {diff:.3e})")
    name = f"{Path(str(args.model)).name}{'+' + Path(args.adapter).name if args.adapter else ''}"
    export_gguf(model, loaded.tokenizer, out, dtype=args.dtype, name=name,
                tokenizer_source=embedded_gguf_source(args.model))
    print(f"wrote {out} ({args.dtype}, {out.stat().st_size / 2**20:.1f} MiB)")
    return 0

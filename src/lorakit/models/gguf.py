"""GGUF → Hugging Face safetensors folder, converted once and cached.

transformers reads a GGUF file directly (``from_pretrained(folder, gguf_file=...)``) and dequantizes it to
float32 with the ``gguf`` package, but that takes ~20-30 s for SmolLM2-135M, and transformers 5 leaves a
GGUF "quantizer" attached that refuses ``save_pretrained``. We ask for a plain dense model
(``GgufConfig(dequantize=True)``), save it as safetensors once, and load that folder afterwards (~2 s).
"""

from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path

from lorakit.models.cache import cached_folder

__all__ = ["convert_gguf", "converted_gguf", "gguf_cache_key", "gguf_chat_template"]

logger = logging.getLogger(__name__)

# Bump when the conversion's output changes (dtype, files, fixes), so old cache entries are not reused.
_CONVERSION_VERSION = 1
_HEAD_BYTES = 1 << 20  # the first MiB holds the GGUF header and metadata: enough to tell files apart


def gguf_cache_key(gguf_path: Path) -> str:
    """A short hash of the file's size, its first MiB and the conversion version.

    Content-based rather than mtime-based, so reinstalling the same package keeps the cache valid,
    while a different file (or a newer conversion) gets a fresh entry.
    """
    digest = hashlib.sha256(f"lorakit-gguf-v{_CONVERSION_VERSION}:{gguf_path.stat().st_size}:".encode())
    with open(gguf_path, "rb") as fh:
        digest.update(fh.read(_HEAD_BYTES))
    return digest.hexdigest()[:16]


def converted_gguf(name: str, gguf_path: Path) -> Path:
    """The cached HF folder converted from ``gguf_path`` (converting on first use) under ``models/<name>-<key>``."""
    entry = f"{name}-{gguf_cache_key(gguf_path)}"
    return cached_folder(
        entry,
        lambda out: convert_gguf(gguf_path, out),
        required=("config.json", "model.safetensors", "tokenizer_config.json"),
    )


def convert_gguf(gguf_path: Path, out_dir: Path) -> None:
    """Convert a decoder GGUF file into a float32 safetensors model + tokenizer folder at ``out_dir``."""
    os.environ["HF_HUB_OFFLINE"] = "1"  # before transformers/huggingface_hub read it at import
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from lorakit.models.quiet import quiet_transformers

    kwargs: dict[str, object] = {}
    try:  # transformers >= 5: without this the model stays "GGUF-quantized" and cannot be saved
        from transformers import GgufConfig

        kwargs["quantization_config"] = GgufConfig(dequantize=True)
    except ImportError:  # transformers 4.x always dequantizes GGUF to a plain model
        pass
    logger.info("converting %s to safetensors (once; ~30 s)", gguf_path)
    folder, file = str(gguf_path.parent), gguf_path.name
    with quiet_transformers():
        model = AutoModelForCausalLM.from_pretrained(
            folder, gguf_file=file, local_files_only=True, dtype=torch.float32, **kwargs
        )
        tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=file, local_files_only=True)
        _drop_gguf_quantizer(model)
        if not tokenizer.chat_template:
            # Some transformers versions drop the template when building a tokenizer from GGUF metadata.
            template = gguf_chat_template(gguf_path)
            if template:
                tokenizer.chat_template = template
        model.save_pretrained(out_dir)
        tokenizer.save_pretrained(out_dir)


def gguf_chat_template(gguf_path: Path) -> str | None:
    """The ``tokenizer.chat_template`` string stored in a GGUF file's metadata, or None.

    Slow (~6 s: GGUFReader indexes every tensor), so only used as a fallback.
    """
    from gguf import GGUFReader

    field = GGUFReader(str(gguf_path)).fields.get("tokenizer.chat_template")
    if field is None or not field.data:
        return None
    # A string field keeps its bytes in parts[data[0]]; this layout is stable across gguf releases.
    return bytes(field.parts[field.data[0]]).decode("utf-8")


def _drop_gguf_quantizer(model: object) -> None:
    """Detach a GGUF quantizer left on a model whose weights are already plain float tensors.

    Only a safety net for transformers versions that ignore ``dequantize=True``: if any weight is still
    packed (not floating point) we refuse, since saving it would write garbage.
    """
    quantizer = getattr(model, "hf_quantizer", None)
    if quantizer is None:
        return
    packed = [n for n, p in model.named_parameters() if not p.is_floating_point()]  # type: ignore[attr-defined]
    if packed:
        raise RuntimeError(f"GGUF weights were not dequantized ({len(packed)} packed, e.g. {packed[0]})")
    quantizer.remove_quantization_config(model)

"""Write a (merged) model as a plain Hugging Face folder that loads without lorakit."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from lorakit.errors import LorakitError

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

__all__ = ["save_merged"]

# Module classes from these packages load back with plain transformers; anything else would not.
_PLAIN_MODULE_PREFIXES = ("torch.", "transformers")


def save_merged(
    model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, out_dir: str | os.PathLike[str]
) -> Path:
    """Save ``model`` (safetensors) and ``tokenizer`` into ``out_dir`` and return it as a Path.

    The result loads with ``transformers.AutoModel*.from_pretrained(out_dir)`` and no lorakit installed.
    The model must already be plain: merge/unload LoRA layers first. A module of another library (a
    leftover LoRA layer) raises ValueError naming it, because its weights would be saved under names
    transformers cannot load. Existing files of the same names in ``out_dir`` are overwritten.
    """
    foreign = [
        f"{name or '<root>'} ({type(module).__module__}.{type(module).__qualname__})"
        for name, module in model.named_modules()
        if not type(module).__module__.startswith(_PLAIN_MODULE_PREFIXES)
    ]
    if foreign:
        raise LorakitError(
            f"cannot save a plain Hugging Face model: {len(foreign)} modules are not torch/transformers "
            f"modules (merge and unload the LoRA layers first): {', '.join(foreign[:5])}"
            + (" ..." if len(foreign) > 5 else "")
        )
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    # transformers >= 4.35 writes safetensors by default (5.x only can); no pickle files are produced.
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out

"""lorakit: Low-Rank Adaptation (Hu et al. 2021) for PyTorch and Hugging Face models.

``h = W0·x + (alpha/r)·B·A·x``: inject adapters into any model, train them, save them in PEFT's
layout, merge them away, analyse them and serve many of them over one base model.

The names below are loaded on first use (PEP 562), so that ``import lorakit.core`` loads the core
alone: the import-direction test checks that the core pulls in no other layer.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

# public name -> the module that defines it
_EXPORTS = {
    **{name: "lorakit.core" for name in (
        "LoraLayer", "LoraSpec", "ParameterReport", "disabled", "inject", "mark_trainable", "merge",
        "parameter_report", "select_targets", "unload", "unmerge")},
    **{name: "lorakit.io" for name in ("AdapterConfig", "load_adapter", "read_adapter", "save_adapter")},
}

__all__ = ["__version__", *sorted(_EXPORTS)]


def __getattr__(name: str) -> Any:
    """``lorakit.inject`` etc.: imported from their layer on first access."""
    if name not in _EXPORTS:
        raise AttributeError(f"module 'lorakit' has no attribute {name!r}")
    value = getattr(importlib.import_module(_EXPORTS[name]), name)
    globals()[name] = value  # later accesses skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))

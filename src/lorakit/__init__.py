"""lorakit: Low-Rank Adaptation (Hu et al. 2021) for PyTorch and Hugging Face models.

``h = W0·x + (alpha/r)·B·A·x``: inject adapters into any model, train them, save them in PEFT's
layout, merge them away, analyse them and serve many of them over one base model.
"""

# Register the built-in layer kinds beyond nn.Linear (Embedding, Conv1d/2d, GPT-2's Conv1D) and the
# variants beyond plain LoRA (DoRA, the PiSSA / OLoRA inits) and the target presets in the core's registries.
import lorakit.layer_kinds  # noqa: F401
import lorakit.presets  # noqa: F401
import lorakit.variants  # noqa: F401
from lorakit.core import (
    LoraLayer,
    LoraSpec,
    disabled,
    inject,
    mark_trainable,
    merge,
    select_targets,
    unload,
    unmerge,
)
from lorakit.io import AdapterConfig, load_adapter, read_adapter, save_adapter
from lorakit.report import ParameterReport, parameter_report

__version__ = "0.1.0"

__all__ = [
    "AdapterConfig", "LoraLayer", "LoraSpec", "ParameterReport", "__version__", "disabled", "inject", "load_adapter",
    "mark_trainable", "merge", "parameter_report", "read_adapter", "save_adapter", "select_targets",
    "unload", "unmerge",
]

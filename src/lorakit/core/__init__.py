"""lorakit.core: LoRA layers, variants, targeting, injection, merging and adapter state.

Depends on torch and safetensors only (an import-boundary test keeps it so). The PEFT file layout
(config, read/write) lives in :mod:`lorakit.io`; its names are still reachable here for old code.
"""

from lorakit.core.inject import (
    MergeReport,
    ParameterReport,
    adapter_parameters,
    disabled,
    inject,
    lora_layers,
    mark_trainable,
    merge,
    parameter_report,
    replace_submodule,
    unload,
    unmerge,
)
from lorakit.core.layers import LoraLayer
from lorakit.core.registry import register, supported_types
from lorakit.core.spec import LoraSpec
from lorakit.core.state import check_tensors
from lorakit.core.targeting import PRESETS, Target, select_targets
from lorakit.core.variants import DORA, LORA

_MOVED_TO_IO = {"AdapterConfig", "AdapterFile", "LoraFactors", "adapter_summary", "config_for", "load_adapter",
                "read_adapter", "save_adapter", "write_adapter", "adapter_state_dict",
                "load_adapter_state", "peft_key"}


def __getattr__(name: str):
    # Names that moved to lorakit.io keep working from lorakit.core (imported on first use only).
    if name in _MOVED_TO_IO:
        import lorakit.io

        return getattr(lorakit.io, name)
    raise AttributeError(f"module 'lorakit.core' has no attribute {name!r}")


__all__ = [
    "DORA", "LORA", "PRESETS", "LoraLayer", "LoraSpec", "MergeReport", "ParameterReport", "Target",
    "adapter_parameters", "check_tensors", "disabled", "inject",
    "lora_layers", "mark_trainable", "merge", "parameter_report", "register", "replace_submodule",
    "select_targets", "supported_types", "unload", "unmerge",
]

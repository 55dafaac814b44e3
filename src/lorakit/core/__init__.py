"""lorakit.core: LoRA layers, targeting, injection, merging and the PEFT file layout.

Depends on torch and safetensors only (an import-boundary test keeps it so).
"""

from lorakit.core.inject import (
    MergeReport,
    ParameterReport,
    disabled,
    inject,
    lora_layers,
    mark_trainable,
    merge,
    parameter_report,
    unload,
    unmerge,
)
from lorakit.core.layers import LoraLayer
from lorakit.core.registry import register, supported_types
from lorakit.core.spec import LoraSpec
from lorakit.core.state import LoraFactors, adapter_state_dict, load_adapter_state, peft_key
from lorakit.core.storage import (
    AdapterConfig,
    AdapterFile,
    adapter_summary,
    config_for,
    load_adapter,
    read_adapter,
    save_adapter,
    write_adapter,
)
from lorakit.core.targeting import PRESETS, Target, select_targets

__all__ = [
    "PRESETS", "AdapterConfig", "AdapterFile", "LoraFactors", "LoraLayer", "LoraSpec", "MergeReport",
    "ParameterReport", "Target", "adapter_state_dict", "adapter_summary", "config_for", "disabled", "inject",
    "load_adapter", "load_adapter_state", "lora_layers", "mark_trainable", "merge", "parameter_report",
    "peft_key", "read_adapter", "register", "save_adapter", "select_targets", "supported_types", "unload",
    "unmerge", "write_adapter",
]

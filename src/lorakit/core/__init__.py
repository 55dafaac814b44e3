"""lorakit.core: LoRA layers, variants, targeting, injection, merging.

Depends on torch and safetensors only (an import-boundary test keeps it so); the one lorakit module
it imports from outside is the torch shim :mod:`lorakit._torch`. The PEFT file layout
(config, key names, read/write, tensor checks) lives in :mod:`lorakit.io`.
"""

from lorakit.core.inject import (
    MergeReport,
    adapter_parameters,
    disabled,
    inject,
    lora_layers,
    mark_trainable,
    merge,
    replace_submodule,
    unload,
    unmerge,
)
from lorakit.core.layers import LoraLayer
from lorakit.core.registry import register, supported_types
from lorakit.core.spec import LoraSpec
from lorakit.core.targeting import PRESETS, Target, select_targets
from lorakit.core.variants import LORA, register_variant

__all__ = [
    "LORA", "PRESETS", "LoraLayer", "LoraSpec", "MergeReport", "Target", "adapter_parameters",
    "disabled", "inject", "lora_layers", "mark_trainable", "merge", "register", "register_variant", "replace_submodule",
    "select_targets", "supported_types", "unload", "unmerge",
]

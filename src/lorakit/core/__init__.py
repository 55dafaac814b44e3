"""lorakit.core: LoRA layers, their kinds and variants, targeting, injection, merging.

Depends on torch only (an import-boundary test keeps it so; :mod:`lorakit.errors`,
which imports nothing, is the one lorakit module from outside). Core owns its extensions: the layer
kinds (:mod:`.kinds`), the variants and inits (:mod:`.variants`), the target presets (:mod:`.presets`),
the multi-adapter op (:mod:`.batched`), the parameter report (:mod:`.report`) and the torch shim
(:mod:`._torch`). The built-in kinds and variants are registered once, here, by explicit calls at the
end of this module, not as import side effects. The PEFT file layout lives in :mod:`lorakit.io`.
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
from lorakit.core.kinds import register_builtin_kinds
from lorakit.core.layers import LoraLayer
from lorakit.core.presets import PRESETS
from lorakit.core.registry import register, supported_types
from lorakit.core.report import ParameterReport, parameter_report
from lorakit.core.spec import LoraSpec
from lorakit.core.targeting import Target, select_targets
from lorakit.core.variants import LORA, register_builtin_variants, register_variant

__all__ = [
    "LORA", "PRESETS", "LoraLayer", "LoraSpec", "MergeReport", "ParameterReport", "Target", "adapter_parameters",
    "disabled", "inject", "lora_layers", "mark_trainable", "merge", "parameter_report", "register", "register_variant", "replace_submodule",
    "select_targets", "supported_types", "unload", "unmerge",
]

register_builtin_kinds()
register_builtin_variants()

"""lorakit.io: adapter folders in PEFT's layout (``adapter_config.json`` + ``adapter_model.safetensors``).

Torch + safetensors + :mod:`lorakit.core` only: config parsing and validation, factors read from
files, conversion of lorakit's extras (fused-projection slices, SVD inits) to what PEFT reads.
"""

from lorakit.io.config import CONFIG_NAME, FORMAT_VERSION, AdapterConfig
from lorakit.io.keys import PEFT_PREFIX, adapter_state_dict, check_tensors, load_adapter_state, peft_key
from lorakit.io.storage import (
    PICKLE_SUFFIXES,
    WEIGHTS_NAME,
    AdapterFile,
    LoraFactors,
    adapter_summary,
    config_for,
    load_adapter,
    read_adapter,
    save_adapter,
    targets_for,
    write_adapter,
)

__all__ = [
    "CONFIG_NAME", "FORMAT_VERSION", "PEFT_PREFIX", "PICKLE_SUFFIXES", "WEIGHTS_NAME", "AdapterConfig", "AdapterFile", "LoraFactors",
    "adapter_state_dict", "adapter_summary", "check_tensors", "config_for", "load_adapter", "load_adapter_state", "peft_key",
    "read_adapter", "save_adapter", "targets_for", "write_adapter",
]

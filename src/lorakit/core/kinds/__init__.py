"""The built-in layer kinds, one module each, and :func:`register_builtin_kinds`.

``nn.Linear`` (:mod:`.linear`), ``nn.Embedding``, ``nn.Conv1d/2d``, Hugging Face GPT-2's ``Conv1D``,
bitsandbytes' ``Linear4bit`` / ``Linear8bitLt`` and lorakit's ``PackedLinear``. The last four are
registered by qualified type name, so importing core imports neither transformers, bitsandbytes nor
:mod:`lorakit.models`, and the list of supported types is the same in every process. Each kind declares
its real ``supports`` set; ``tests/core/test_kinds.py`` checks it against what works.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import nn

from lorakit.core.kinds.bnb import QuantizedLinearKind
from lorakit.core.kinds.conv import ConvKind
from lorakit.core.kinds.conv1d_gpt2 import HFConv1DKind
from lorakit.core.kinds.embedding import EmbeddingKind
from lorakit.core.kinds.linear import DENSE, LinearKind
from lorakit.core.kinds.packed import PackedLinearKind
from lorakit.core.registry import register

__all__ = ["DENSE", "ConvKind", "EmbeddingKind", "HFConv1DKind", "LinearKind", "PackedLinearKind",
           "QuantizedLinearKind", "register_builtin_kinds"]


def register_builtin_kinds() -> None:
    """Register every built-in kind in :mod:`lorakit.core.registry`; ``lorakit.core`` calls it once."""
    register(nn.Linear, LinearKind())
    register(nn.Embedding, EmbeddingKind())
    register(nn.Conv1d, ConvKind("conv1d", F.conv1d))
    register(nn.Conv2d, ConvKind("conv2d", F.conv2d))
    register("transformers.pytorch_utils.Conv1D", HFConv1DKind())
    register("bitsandbytes.nn.modules.Linear4bit", QuantizedLinearKind("linear4bit"))
    register("bitsandbytes.nn.modules.Linear8bitLt", QuantizedLinearKind("linear8bit"))
    register("lorakit.models.packed.PackedLinear", PackedLinearKind())

"""Each registered layer kind's ``supports`` set is what really works on it: table-driven over tiny layers.

A feature a kind declares (DoRA, the SVD inits) injects and leaves the output unchanged at step 0;
one it does not declare is refused by the registry check, naming what the kind does support.
"""

from __future__ import annotations

from collections import OrderedDict

import pytest
import torch
from torch import nn

from lorakit.core import LoraSpec, inject, lora_layers, registry

# Which spec asks for which support token.
FEATURES = {"dora": {"dora": True}, "svd-init": {"init": "pissa"}}


def _quantized(name: str) -> nn.Module:
    pytest.importorskip("bitsandbytes")
    from lorakit.models.precision import _quantized_linear

    torch.manual_seed(0)
    return _quantized_linear(nn.Linear(64, 64), name, torch.device("cpu"))


def _hf_conv1d() -> nn.Module:
    pytest.importorskip("transformers")
    from transformers.pytorch_utils import Conv1D

    return Conv1D(6, 8)


def _packed() -> nn.Module:
    from lorakit.models.packed import PackedLinear

    torch.manual_seed(0)
    packed = PackedLinear.of(nn.Linear(8, 6).requires_grad_(False))
    if packed is None:
        pytest.skip("oneDNN has no prepacked fp32 linear kernel here")
    return packed


# kind name -> (a tiny base layer, an input for it)
LAYERS = {
    "linear": (lambda: nn.Linear(8, 6), lambda: torch.randn(2, 8)),
    "embedding": (lambda: nn.Embedding(10, 6), lambda: torch.randint(0, 10, (2, 5))),
    "conv1d": (lambda: nn.Conv1d(3, 4, 3), lambda: torch.randn(2, 3, 7)),
    "conv2d": (lambda: nn.Conv2d(3, 4, 3), lambda: torch.randn(2, 3, 7, 7)),
    "hf_conv1d": (_hf_conv1d, lambda: torch.randn(2, 8)),
    "packed_linear": (_packed, lambda: torch.randn(2, 8)),
    "linear8bit": (lambda: _quantized("int8"), lambda: torch.randn(2, 64)),
    "linear4bit": (lambda: _quantized("nf4"), lambda: torch.randn(2, 64)),
}


@pytest.mark.parametrize("feature", sorted(FEATURES))
@pytest.mark.parametrize("kind_name", sorted(LAYERS))
def test_declared_support_matches_what_works(kind_name: str, feature: str) -> None:
    make_layer, make_input = LAYERS[kind_name]
    torch.manual_seed(0)
    model = nn.Sequential(OrderedDict(layer=make_layer())).eval()
    kind = registry.kind_for(model.layer)
    assert kind is not None and kind.name == kind_name
    x = make_input()
    with torch.no_grad():
        want = model(x).float()
    spec = LoraSpec(r=2, alpha=4, targets=("layer",), **FEATURES[feature])
    if feature in kind.supports:
        inject(model, spec)
        with torch.no_grad():
            got = model(x).float()
        torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)  # step 0 is the base model
    else:
        supported = ", ".join(sorted(kind.supports)) or "plain LoRA only"
        with pytest.raises(ValueError, match=f"{feature} not supported .*it supports: {supported}$"):
            inject(model, spec)
        assert not lora_layers(model)  # refused before anything changed


@pytest.mark.parametrize("name", ["int8", "nf4"])
def test_quantized_kinds_refuse_dora_and_svd_inits(name: str) -> None:
    kind = registry.kind_for(_quantized(name))
    assert {"dora", "svd-init"}.isdisjoint(kind.supports)
    assert {"slices", "serve", "all-linear"} <= kind.supports

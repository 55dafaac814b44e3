"""The linear LoRA path saves the minimum for backward and matches the plain autograd reference."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import lorakit
from lorakit.core import lora_layers
from lorakit.core.lora_linear import dropout_mask


def _layer(dropout: float, dtype=torch.float32):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(16, 24)).to(dtype)
    lorakit.inject(model, lorakit.LoraSpec(r=4, alpha=8, dropout=dropout, targets=("0",)))
    layer = lora_layers(model)["0"]
    with torch.no_grad():  # fp32 masters, as with a low-precision base
        layer.lora_A.data = layer.lora_A.float()
        layer.lora_B.data = torch.randn(layer.lora_B.shape)
    return model.train(), layer


@pytest.mark.parametrize("p", [0.0, 0.3])
def test_gradients_equal_the_plain_reference(p):
    model, layer = _layer(p)
    x = torch.randn(3, 5, 16, requires_grad=True)
    torch.manual_seed(7)
    model(x).square().sum().backward()
    got = [x.grad.clone(), layer.lora_A.grad.clone(), layer.lora_B.grad.clone()]
    x.grad = layer.lora_A.grad = layer.lora_B.grad = None
    torch.manual_seed(7)
    xd = x * dropout_mask(x, p) / (1 - p) if p else x
    ref = F.linear(x, layer.weight, layer.bias) + F.linear(F.linear(xd, layer.lora_A), layer.lora_B) * layer.scaling
    ref.square().sum().backward()
    for g, want in zip(got, [x.grad, layer.lora_A.grad, layer.lora_B.grad], strict=True):
        torch.testing.assert_close(g, want, rtol=1e-6, atol=1e-6)


def _saved(model, x):
    saved = []

    def pack(t):
        saved.append(t)
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = model(x)
    return out, [t for t in saved if t.numel() == x.numel()]


@pytest.mark.parametrize("p, dtype", [(0.0, torch.float32), (0.3, torch.float32), (0.0, torch.bfloat16)])
def test_no_extra_input_sized_float_tensor_is_saved(p, dtype):
    model, layer = _layer(p, dtype)
    x = torch.randn(4, 8, 16, dtype=dtype, requires_grad=True)
    out, big = _saved(model, x)
    assert out.dtype == dtype
    extra = [t for t in big if t.data_ptr() != x.data_ptr()]
    assert all(t.dtype == torch.bool for t in extra), [(t.dtype, t.shape) for t in extra]
    assert len(extra) == (1 if p else 0)
    out.float().sum().backward()
    assert layer.lora_A.grad.dtype == torch.float32 and layer.lora_B.grad.abs().sum() > 0

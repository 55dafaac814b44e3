"""oneDNN-prepacked frozen Linears (models/packed.py): same outputs, same parameters."""

from __future__ import annotations

import torch
from torch import nn

from lorakit.models.packed import PackedLinear, pack_frozen_linears
from tests.conftest import tiny_llama


def test_packed_model_keeps_its_parameters_and_outputs():
    model = tiny_llama().eval().requires_grad_(False)
    ids = torch.randint(3, 100, (3, 7), generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        before = model(ids).logits
    params = dict(model.named_parameters(remove_duplicate=False))
    linears = sum(type(m) is nn.Linear for m in model.modules())
    assert pack_frozen_linears(model, batch_hint=3) == linears
    assert not any(type(m) is nn.Linear for m in model.modules())
    after_params = dict(model.named_parameters(remove_duplicate=False))
    assert after_params.keys() == params.keys() and all(after_params[k] is params[k] for k in params)
    assert isinstance(model.lm_head, PackedLinear)
    with torch.inference_mode():
        torch.testing.assert_close(model(ids).logits, before, rtol=1e-5, atol=1e-5)


def test_trainable_linears_and_gradients_take_the_plain_path():
    layer = nn.Linear(8, 4)
    model = nn.Sequential(layer)
    assert pack_frozen_linears(model) == 0 and model[0] is layer  # trainable: left alone
    layer.requires_grad_(False)
    assert pack_frozen_linears(model) == 1
    x = torch.randn(2, 8, requires_grad=True)
    model(x).sum().backward()  # an input that needs gradients goes through F.linear
    torch.testing.assert_close(x.grad, layer.weight.sum(0).expand(2, 8))

"""The private torch APIs in ``lorakit/core/_torch.py``: if a torch release changes one, this fails loudly."""

from __future__ import annotations

import torch
from torch import nn

from lorakit.core import _torch


def test_own_parameter_registers_directly():
    holder, p = nn.Module(), nn.Parameter(torch.ones(2))
    _torch.own_parameter(holder, "weight", p)
    assert dict(holder.named_parameters()) == {"weight": p}


def test_conv_forward_matches_the_module():
    conv = nn.Conv2d(2, 3, 3, padding=1, padding_mode="reflect")
    x = torch.randn(1, 2, 5, 5)
    torch.testing.assert_close(_torch.conv_forward(conv, x, conv.weight, conv.bias), conv(x), rtol=0, atol=0)


def test_foreach_ops():
    dst, src = [torch.zeros(2), torch.zeros(3)], [torch.ones(2), torch.full((3,), 2.0)]
    _torch.foreach_copy_(dst, src)
    _torch.foreach_mul_(dst, [3.0, 0.5])
    assert dst[0].tolist() == [3.0, 3.0] and dst[1].tolist() == [1.0, 1.0, 1.0]
    norms = _torch.foreach_norm([torch.tensor([3.0, 4.0]), torch.tensor([float("nan")])])
    assert norms[0].item() == 5.0 and torch.isnan(norms[1])


def test_mkldnn_packed_linear_matches_f_linear():
    weight, bias = torch.randn(24, 16), torch.randn(24)
    packed = _torch.mkldnn_pack_linear(weight, 4)
    assert packed is not None  # oneDNN ships with every CPU build of torch lorakit installs
    for shape in [(4, 16), (1, 16), (3, 7, 16)]:  # any row count, not only the hint
        x = torch.randn(shape)
        expected = torch.nn.functional.linear(x, weight, bias)
        torch.testing.assert_close(_torch.mkldnn_linear(x, packed, bias), expected, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(_torch.mkldnn_linear(x, packed, None), expected - bias, rtol=1e-5, atol=1e-5)
    assert _torch.mkldnn_pack_linear(torch.randn(3, 3, dtype=torch.float64)) is None  # no fp64 kernel

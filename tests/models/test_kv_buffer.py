"""BufferedLayer (in-place KV appends) against transformers' DynamicLayer (torch.cat appends)."""

from __future__ import annotations

import torch
from transformers.cache_utils import DynamicLayer

from lorakit.models.kv_buffer import MIN_SPARE, BufferedLayer


def kv(rows: int, n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(rows, 2, n, 4, generator=g), torch.randn(rows, 2, n, 4, generator=g)


def test_appends_match_dynamic_layer_across_growth_and_surgery():
    ours, ref = BufferedLayer(), DynamicLayer()
    steps = [7] + [1] * (MIN_SPARE + 5)  # a prefill, then decode steps past the first capacity
    for i, n in enumerate(steps):
        k, v = kv(3, n, i)
        got, want = ours.update(k, v), ref.update(k, v)
        for a, b in zip(got, want, strict=True):
            torch.testing.assert_close(a, b, rtol=0, atol=0)
        assert ours.get_seq_length() == ref.get_seq_length()
    # Surgery as the engine does it: assign keys first, then values (values still read the old length).
    for layer in (ours, ref):
        layer.keys = torch.cat([layer.keys, layer.keys[:1]])
        layer.values = torch.cat([layer.values, layer.values[:1]])
        layer.keys = layer.keys.index_select(0, torch.tensor([3, 0, 2]))[:, :, 5:]
        layer.values = layer.values.index_select(0, torch.tensor([3, 0, 2]))[:, :, 5:]
    for i in range(3):
        k, v = kv(3, 1, 100 + i)
        for a, b in zip(ours.update(k, v), ref.update(k, v), strict=True):
            torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_of_wraps_a_filled_dynamic_layer():
    ref = DynamicLayer()
    ref.update(*kv(2, 5, 0))
    ours = BufferedLayer.of(ref)
    assert ours.get_seq_length() == 5
    k, v = kv(2, 1, 1)
    for a, b in zip(ours.update(k, v), ref.update(k, v), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert ours._kbuf.shape[-2] > 6  # the append grew the buffer with spare room

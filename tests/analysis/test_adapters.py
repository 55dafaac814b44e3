"""Module-by-module analyses on real adapter files (lorakit-saved, read back through the core)."""

from __future__ import annotations

import pytest
import torch

import lorakit
from lorakit.analysis import amplification
from lorakit.analysis.adapters import amplification_by_module, base_matrix, select_modules, spectrum_by_module
from lorakit.core import lora_layers
from lorakit.io import read_adapter


def _saved(model, spec, folder):
    lorakit.inject(model, spec)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for layer in lora_layers(model).values():
            layer.lora_B.copy_(torch.randn(layer.lora_B.shape, generator=g) * 0.1)
    return read_adapter(lorakit.save_adapter(model, folder))


def test_amplification_uses_the_base_layout_of_gpt2_conv1d_and_fused_slices(tmp_path):
    pytest.importorskip("transformers")
    from tests.conftest import tiny_gpt2

    # c_attn: fused q,k,v (Conv1D weight stored (in, out) = 32x96, LoRA on the q and v slices only);
    # c_proj: a square Conv1D, where a wrongly oriented W would go unnoticed by any shape check.
    adapter = _saved(tiny_gpt2(), lorakit.LoraSpec(r=2, alpha=4, targets=("qv", "attn.c_proj")), tmp_path / "g")
    factors = adapter.factors()
    base = tiny_gpt2()
    results, notes = amplification_by_module(base, factors)
    assert not notes and set(results) == set(factors)
    for path in ("transformer.h.0.attn.c_attn", "transformer.h.1.attn.c_proj"):
        W = base.get_submodule(path).weight  # (in, out)
        want = amplification(W.T, factors[path].delta_weight(), rank=factors[path].rank)
        assert results[path].amplification == pytest.approx(want.amplification, rel=1e-6)
        assert base_matrix(base.get_submodule(path)).shape == (W.shape[1], W.shape[0])
    assert results["transformer.h.0.attn.c_attn"].rank == 4  # two slices of rank 2, stored as one pair


def test_select_modules_and_spectra():
    f = {"layer.0.q": object(), "layer.1.q": object(), "layer.0.v": object()}
    assert list(select_modules(f, r"\.q$")) == ["layer.0.q", "layer.1.q"]
    assert select_modules(f, None) == f
    with pytest.raises(ValueError, match="matches none of the 3"):
        select_modules(f, "dense")
    with pytest.raises(ValueError, match="not a valid regular expression"):
        select_modules(f, "(")
    one = type("F", (), {"A": torch.eye(2, 5), "B": torch.eye(3, 2), "scaling": 3.0})()
    assert spectrum_by_module({"m": one})["m"].singular_values.tolist() == [3.0, 3.0]

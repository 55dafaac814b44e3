"""Frozen-base precision: bf16 / fp16 / int8 / nf4 forward against fp32, LoRA on quantized layers, errors."""

from __future__ import annotations

import sys

import pytest
import torch

from lorakit.core import LoraSpec, inject, registry
from lorakit.models import precision
from lorakit.models.precision import (
    check_base_dtype,
    default_base_dtype,
    finish_base_precision,
    load_dtype,
    resolve_base_dtype,
)

CPU = torch.device("cpu")
# Relative error ||logits - logits_fp32|| / ||logits_fp32|| of a tiny random Llama. bf16 keeps 8 bits of
# mantissa, fp16 11; int8 is row-wise absmax (bf16 activations), nf4 a 4-bit normal-float code per 64 weights.
TOLERANCE = {"bf16": 1e-2, "fp16": 2e-3, "int8": 2e-2, "nf4": 0.15}  # measured: 0.005, 0.0006, 0.008, 0.10


def _tiny_llama():
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=101, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=True)
    return LlamaForCausalLM(cfg).eval()


def _in_precision(reference, name: str):
    model = type(reference)(reference.config)
    model.load_state_dict(reference.state_dict())
    model = model.to(load_dtype(name, CPU)).eval()
    inject(model, LoraSpec(r=4, alpha=8, targets=("qv",)))
    report = finish_base_precision(model, name, CPU)
    return model, report


@pytest.mark.parametrize("name", ["bf16", "fp16", "int8", "nf4"])
def test_low_precision_base_forward_is_close_to_fp32(name: str) -> None:
    reference = _tiny_llama()
    ids = torch.randint(0, 101, (2, 16), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        want = reference(ids).logits
    model, report = _in_precision(reference, name)
    with torch.no_grad():
        got = model(ids).logits.float()
    error = float((got - want).norm() / want.norm())
    assert error < TOLERANCE[name], error
    assert error > 0  # it really ran in low precision
    assert report["base_dtype"] == name
    lora = model.model.layers[0].self_attn.q_proj
    assert lora.lora_A.dtype == torch.float32 and lora.lora_B.dtype == torch.float32
    if name in ("int8", "nf4"):
        # 7 Linear layers per block, all frozen; the tied LM head stays as it is.
        assert report["quantized_linears"] == 14
        assert lora.kind is registry.kind_for(lora.base)
        assert lora.kind.name == {"int8": "linear8bit", "nf4": "linear4bit"}[name]
        assert type(model.lm_head) is torch.nn.Linear
        assert model.lm_head.weight is model.model.embed_tokens.weight


@pytest.mark.parametrize("name", ["bf16", "nf4"])
def test_lora_on_a_low_precision_base_trains_in_fp32(name: str) -> None:
    model, _ = _in_precision(_tiny_llama(), name)
    lora = model.model.layers[1].self_attn.v_proj
    with torch.no_grad():
        lora.lora_B.normal_(std=0.1)
    model.train()
    ids = torch.randint(0, 101, (2, 12), generator=torch.Generator().manual_seed(2))
    model(ids, labels=ids).loss.backward()
    for p in (lora.lora_A, lora.lora_B):
        assert p.grad is not None and p.grad.dtype == torch.float32 and float(p.grad.abs().sum()) > 0
    frozen = [p for p in model.parameters() if not p.requires_grad]
    assert all(p.grad is None for p in frozen)
    # ΔW is B·A, as for nn.Linear: the quantized kind computes the LoRA path like Linear.
    torch.testing.assert_close(lora.delta_weight(), lora.lora_B @ lora.lora_A * lora.scaling)


def test_quantizing_a_dora_layer_is_refused_before_anything_changes() -> None:
    pytest.importorskip("bitsandbytes")
    model = torch.nn.Sequential(torch.nn.Linear(64, 64), torch.nn.Linear(64, 64))
    inject(model, LoraSpec(r=2, alpha=4, targets=("0", "1"), dora=True))
    with pytest.raises(ValueError, match="'0' .*dora not supported .*it supports: all-linear, serve, slices"):
        precision.quantize_frozen_linears(model, "nf4", CPU)
    assert all(type(m.base) is torch.nn.Linear for m in (model[0], model[1]))  # none was quantized


def test_trainable_head_is_upcast_and_fed_fp32() -> None:
    head = torch.nn.Linear(8, 3).to(torch.bfloat16)
    body = torch.nn.Linear(8, 8).to(torch.bfloat16)
    model = torch.nn.Sequential(body, head)
    body.requires_grad_(False)
    report = finish_base_precision(model, "bf16", CPU)
    assert head.weight.dtype == torch.float32 and body.weight.dtype == torch.bfloat16
    assert report["fp32_trainable_modules"] == 1
    out = model(torch.randn(2, 8, dtype=torch.bfloat16))
    assert out.dtype == torch.float32


def test_default_follows_native_bf16(monkeypatch) -> None:
    monkeypatch.setattr(precision, "_cpu_flags", lambda: frozenset({"avx2", "avx512_bf16"}))
    assert default_base_dtype(CPU) == "bf16" and resolve_base_dtype("auto", CPU) == "bf16"
    monkeypatch.setattr(precision, "_cpu_flags", lambda: frozenset({"avx2"}))
    assert default_base_dtype(CPU) == "fp32"
    assert resolve_base_dtype("fp16", CPU) == "fp16"


def test_dtypes_the_machine_cannot_run_raise(monkeypatch) -> None:
    with pytest.raises(ValueError, match="one of fp32, bf16, fp16, int8, nf4"):
        check_base_dtype("fp8", CPU)
    monkeypatch.setitem(sys.modules, "bitsandbytes", None)  # as if not installed
    with pytest.raises(ValueError, match="bitsandbytes, which is not installed"):
        check_base_dtype("nf4", CPU)
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="no CUDA device"):
            check_base_dtype("bf16", torch.device("cuda"))


def test_bf16_on_a_cpu_without_native_bf16_is_honoured_with_a_warning(monkeypatch, caplog) -> None:
    from lorakit.models import precision

    monkeypatch.setattr(precision, "native_bf16", lambda device: False)
    with caplog.at_level("WARNING", logger="lorakit.models.precision"):
        assert precision.resolve_base_dtype("bf16", torch.device("cpu")) == "bf16"
        assert precision.resolve_base_dtype("auto", torch.device("cpu")) == "fp32"
    assert len(caplog.records) == 1 and "emulated" in caplog.records[0].getMessage()

"""Variants against PEFT (the oracle), both ways, on a tiny Llama: DoRA, rsLoRA, PiSSA, OLoRA."""

from __future__ import annotations

import warnings

import pytest
import torch

import lorakit
from lorakit.core import lora_layers
from tests.conftest import tiny_gpt2, tiny_llama

peft = pytest.importorskip("peft")

IDS = torch.tensor([[5, 17, 33, 60, 2, 9, 11, 3], [7, 8, 9, 10, 11, 12, 13, 14]])
TARGETS = ["q_proj", "v_proj", "down_proj"]


def _logits(model):
    with torch.no_grad():
        return model(input_ids=IDS).logits


def _perturb(model, seed=3):
    """Stand-in for training: move every adapter tensor (B, A, magnitudes) by a seeded amount."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in sorted(model.named_parameters()):
            if any(k in name for k in ("lora_A", "lora_B", "lora_embedding", "lora_magnitude")):
                p.add_(torch.randn(p.shape, generator=gen) * 0.2)


def _peft(model, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return peft.get_peft_model(model, peft.LoraConfig(r=4, lora_alpha=8, target_modules=TARGETS, **kw))


def _peft_load(make, folder):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return peft.PeftModel.from_pretrained(make(), folder).eval()


@pytest.mark.parametrize("kw", [dict(use_dora=True), dict(use_rslora=True), dict(use_dora=True, use_rslora=True)],
                         ids=["dora", "rslora", "dora-rslora"])
def test_peft_writes_lorakit_loads_and_merges(kw, tmp_path):
    pm = _peft(tiny_llama(), **kw)
    _perturb(pm)
    pm.eval()
    expected = _logits(pm)
    pm.save_pretrained(tmp_path / "pa")
    model = tiny_llama().eval()
    lorakit.load_adapter(model, tmp_path / "pa")
    assert (_logits(model) - expected).abs().max().item() <= 1e-5
    report = lorakit.merge(model)
    assert report.max_rel_diff < 1e-5
    merged = lorakit.unload(model).state_dict()
    want = pm.merge_and_unload().state_dict()
    assert merged.keys() == want.keys()
    assert max((merged[k] - want[k]).abs().max().item() for k in want) <= 1e-5


def test_lorakit_dora_loads_in_peft_and_unmerges(tmp_path):
    model = tiny_llama()
    base = _logits(model)
    lorakit.inject(model, lorakit.LoraSpec(r=4, alpha=8, targets=tuple(TARGETS), dora=True))
    assert (_logits(model) - base).abs().max().item() <= 1e-6  # m = ‖W0‖ at init: the base model
    assert {n.rsplit(".", 1)[-1] for n, p in model.named_parameters() if p.requires_grad} == {
        "lora_A", "lora_B", "lora_magnitude"}
    _perturb(model)
    model.eval()
    expected = _logits(model)
    lorakit.save_adapter(model, tmp_path / "ad")
    assert (_logits(_peft_load(tiny_llama, tmp_path / "ad")) - expected).abs().max().item() <= 1e-5
    lorakit.merge(model)
    assert (_logits(model) - expected).abs().max().item() <= 1e-5
    lorakit.unmerge(model)
    assert (_logits(model) - expected).abs().max().item() <= 1e-5


def test_dora_on_gpt2_conv1d_round_trips_through_peft(tmp_path):
    model = tiny_gpt2()
    lorakit.inject(model, lorakit.LoraSpec(r=2, alpha=4, targets=("mlp.c_fc",), dora=True))
    _perturb(model)
    model.eval()
    expected = _logits(model)
    lorakit.save_adapter(model, tmp_path / "ad")
    assert (_logits(_peft_load(tiny_gpt2, tmp_path / "ad")) - expected).abs().max().item() <= 1e-5


@pytest.mark.parametrize("init", ["pissa", "olora"])
def test_svd_init_matches_peft_and_saves_relative_to_the_original_base(init, tmp_path):
    model = tiny_llama()
    base = _logits(model)
    lorakit.inject(model, lorakit.LoraSpec(r=4, alpha=8, targets=tuple(TARGETS), init=init))
    assert (_logits(model) - base).abs().max().item() <= 1e-4  # W0 = W_res + s·B0·A0
    pm = _peft(tiny_llama(), init_lora_weights=init)
    ours = {p: m for p, m in lora_layers(model).items()}
    for name, module in pm.named_modules():
        if hasattr(module, "lora_A") and isinstance(module.lora_A, torch.nn.ModuleDict):
            path = name.removeprefix("base_model.model.")
            torch.testing.assert_close(ours[path].lora_A, module.lora_A["default"].weight, rtol=1e-5, atol=1e-5)
            torch.testing.assert_close(ours[path].lora_B, module.lora_B["default"].weight, rtol=1e-5, atol=1e-5)
            torch.testing.assert_close(ours[path].weight, module.base_layer.weight, rtol=1e-5, atol=1e-5)
    _perturb(model)
    model.eval()
    expected = _logits(model)
    lorakit.save_adapter(model, tmp_path / "ad")
    cfg = lorakit.read_adapter(tmp_path / "ad").config
    assert (cfg.r, cfg.lora_alpha) == (8, 16)  # rank 2r, same scale: an ordinary LoRA
    assert (_logits(_peft_load(tiny_llama, tmp_path / "ad")) - expected).abs().max().item() <= 1e-5
    again = tiny_llama().eval()
    lorakit.load_adapter(again, tmp_path / "ad")
    assert (_logits(again) - expected).abs().max().item() <= 1e-5
    lorakit.unload(model, merge_first=False)  # the original base back, not the residual
    assert (_logits(model) - base).abs().max().item() <= 1e-4


def test_peft_pissa_converted_adapter_loads_in_lorakit(tmp_path):
    pm = _peft(tiny_llama(), init_lora_weights="pissa")
    pm.save_pretrained(tmp_path / "init")
    _perturb(pm)
    pm.eval()
    expected = _logits(pm)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pm.save_pretrained(tmp_path / "lora", path_initial_model_for_weight_conversion=str(tmp_path / "init"))
    model = tiny_llama().eval()  # the original base, not the residual
    lorakit.load_adapter(model, tmp_path / "lora")
    assert (_logits(model) - expected).abs().max().item() <= 1e-5

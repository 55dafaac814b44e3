"""Parity with PEFT (the test oracle) both ways, on tiny BERT, Llama and GPT-2 built from configs."""

from __future__ import annotations

import warnings

import pytest
import torch

import lorakit
from lorakit.core import lora_layers
from tests.conftest import tiny_bert, tiny_gpt2, tiny_llama

peft = pytest.importorskip("peft")

IDS = torch.tensor([[5, 17, 33, 60, 2, 9, 11, 3], [7, 8, 9, 10, 11, 12, 13, 14]])


def _out(model, ids=IDS):
    with torch.no_grad():
        out = model(input_ids=ids)
    return out.logits if hasattr(out, "logits") and out.logits is not None else out.last_hidden_state


def _randomize(model, seed=3):
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name or "lora_embedding_B" in name:
                p.copy_(torch.randn(p.shape, generator=gen) * 0.3)


CASES = [
    ("bert-qv", lambda: tiny_bert(), ("qv",), ["query", "value"], None),
    ("bert-cls-all-linear", lambda: tiny_bert(num_labels=3), ("all-linear",), "all-linear", ["classifier"]),
    ("llama-attention", tiny_llama, ("attention",), ["q_proj", "k_proj", "v_proj", "o_proj"], None),
    ("llama-ffn", tiny_llama, ("ffn",), ["gate_proj", "up_proj", "down_proj"], None),
]


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_lorakit_adapter_loads_in_peft(case, tmp_path):
    _, make, targets, _, to_save = case
    model = make()
    spec = lorakit.LoraSpec(r=4, alpha=8, targets=targets, modules_to_save=tuple(to_save or ()))
    lorakit.inject(model, spec)
    _randomize(model)
    if to_save:
        with torch.no_grad():
            model.classifier.weight.add_(1.0)
    expected = _out(model)
    lorakit.save_adapter(model, tmp_path / "ad")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pm = peft.PeftModel.from_pretrained(make(), tmp_path / "ad").eval()
    got = _out(pm)
    assert (got - expected).abs().max().item() <= 1e-5


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_peft_adapter_loads_in_lorakit(case, tmp_path):
    _, make, _, peft_targets, to_save = case
    pm = peft.get_peft_model(make(), peft.LoraConfig(r=4, lora_alpha=8, target_modules=peft_targets,
                                                     modules_to_save=to_save)).eval()
    _randomize(pm)
    if to_save:
        with torch.no_grad():
            for n, p in pm.named_parameters():
                if "modules_to_save" in n:
                    p.add_(1.0)
    expected = _out(pm)
    pm.save_pretrained(tmp_path / "pa")
    model = make()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        targets = lorakit.load_adapter(model, tmp_path / "pa")
    n_peft = sum(1 for _, m in pm.named_modules() if m.__class__.__name__ == "Linear" and hasattr(m, "lora_A"))
    assert len(targets) == n_peft
    assert (_out(model) - expected).abs().max().item() <= 1e-5


def test_rank_and_alpha_patterns_round_trip_through_peft(tmp_path):
    model = tiny_llama()
    spec = lorakit.LoraSpec(r=4, alpha=8, targets=("attention",), rank_pattern={"q_proj": 2},
                            alpha_pattern={"re:.*layers\\.1\\.self_attn\\.v_proj": 3.0}, rslora=True)
    lorakit.inject(model, spec)
    _randomize(model)
    assert {m.r for p, m in lora_layers(model).items() if p.endswith("q_proj")} == {2}
    expected = _out(model)
    lorakit.save_adapter(model, tmp_path / "ad")
    pm = peft.PeftModel.from_pretrained(tiny_llama(), tmp_path / "ad").eval()
    assert (_out(pm) - expected).abs().max().item() <= 1e-5
    again = tiny_llama()
    lorakit.load_adapter(again, tmp_path / "ad")
    assert (_out(again) - expected).abs().max().item() == 0


def test_gpt2_fused_c_attn_q_v_slices(tmp_path):
    model = tiny_gpt2()
    base = _out(model)
    targets = lorakit.inject(model, lorakit.LoraSpec(r=2, alpha=4, targets=("qv",)))
    assert [t.path for t in targets] == ["transformer.h.0.attn.c_attn", "transformer.h.1.attn.c_attn"]
    assert all(t.slices == (3, (0, 2)) for t in targets)
    assert targets[0].num_params == 2 * 2 * (32 + 32)  # r·(d + k) for q and for v
    _randomize(model)
    layer = lora_layers(model)["transformer.h.0.attn.c_attn"]
    delta = layer.delta_weight()  # (in, out) like Conv1D's weight; the k third must be untouched
    assert delta[:, 32:64].abs().max() == 0 and delta[:, :32].abs().max() > 0 and delta[:, 64:].abs().max() > 0
    expected = _out(model)
    assert (expected - base).abs().max() > 1e-4
    lorakit.save_adapter(model, tmp_path / "ad")
    pm = peft.PeftModel.from_pretrained(tiny_gpt2(), tmp_path / "ad").eval()
    assert (_out(pm) - expected).abs().max().item() <= 1e-5
    again = tiny_gpt2()
    lorakit.load_adapter(again, tmp_path / "ad")
    assert lora_layers(again)["transformer.h.0.attn.c_attn"].slices == (3, (0, 2))
    assert (_out(again) - expected).abs().max().item() == 0
    report = lorakit.merge(again)
    assert report.max_rel_diff < 1e-5
    assert (_out(again) - expected).abs().max().item() <= 1e-5

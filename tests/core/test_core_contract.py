"""What the core promises beyond the math: eval mode is kept, inject is all-or-nothing, the dry run
refuses what inject refuses, unknown modes raise, and nothing outside the registry names a kind."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
from torch import nn

import lorakit
from lorakit.core import lora_layers, mark_trainable, select_targets
from tests.conftest import tiny_llama

SRC = Path(__file__).resolve().parents[2] / "src" / "lorakit"


def test_adapter_with_dropout_loaded_into_eval_model_is_deterministic(tmp_path):
    model = tiny_llama()
    lorakit.inject(model, lorakit.LoraSpec(r=4, alpha=8, dropout=0.3, targets=("attention",)))
    with torch.no_grad():
        for layer in lora_layers(model).values():
            layer.lora_B.normal_(0, 0.3)
    lorakit.save_adapter(model, tmp_path / "ad")
    again = tiny_llama().eval()
    lorakit.load_adapter(again, tmp_path / "ad")
    assert not any(layer.training for layer in lora_layers(again).values())
    ids = torch.tensor([[1, 5, 9, 2, 7]])
    with torch.no_grad():
        first, second = again(ids).logits, again(ids).logits
    assert torch.equal(first, second)
    assert lorakit.merge(again).max_rel_diff < 1e-5


def test_inject_is_all_or_nothing():
    model = nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 4))
    state = {k: v.clone() for k, v in model.state_dict().items()}
    flags = [p.requires_grad for p in model.parameters()]
    with pytest.raises(ValueError, match="modules_to_save"):  # fails after the layers were built
        lorakit.inject(model, lorakit.LoraSpec(targets=("0", "1"), modules_to_save=("nothing",)))
    assert not lora_layers(model) and [p.requires_grad for p in model.parameters()] == flags
    targets = select_targets(model, lorakit.LoraSpec(r=2, targets=("0", "1"), init="pissa"))
    bad = [targets[0], targets[1].__class__(**{**targets[1].__dict__, "path": "0.weight"})]
    with pytest.raises((TypeError, AttributeError)):  # the second target is no layer at all
        lorakit.inject(model, lorakit.LoraSpec(r=2, targets=("0", "1"), init="pissa"), bad)
    assert not lora_layers(model)
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())  # PiSSA touched no weight


@pytest.mark.parametrize("conv, match", [(nn.Conv2d(4, 4, 3, groups=2), "grouped"),
                                         (nn.Conv2d(4, 4, 3, padding=1, padding_mode="reflect"), "padding_mode")])
def test_dry_run_refuses_what_inject_refuses(conv, match):
    model = nn.Sequential(conv)
    with pytest.raises(ValueError, match=match):
        select_targets(model, lorakit.LoraSpec(targets=("0",)))


@pytest.mark.parametrize("spec, match", [(dict(targets=("0",), dora=True), "dora"),
                                          (dict(targets=("0",), init="olora"), "svd-init")])
def test_dry_run_refuses_variants_a_kind_does_not_support(spec, match):
    with pytest.raises(ValueError, match=match):
        select_targets(nn.Sequential(nn.Embedding(10, 4)), lorakit.LoraSpec(**spec))


def test_unknown_bias_mode_raises():
    model = nn.Sequential(nn.Linear(4, 4))
    with pytest.raises(ValueError, match="bias must be one of"):
        mark_trainable(model, bias="some")


def test_no_kind_name_comparisons_outside_the_registry():
    """What a layer kind supports is asked of the kind (``kind.supports``), never read off its name."""
    names = "|".join(("linear", "hf_conv1d", "embedding", "conv1d", "conv2d"))
    pattern = re.compile(rf"(==|!=|\bin)\s*[(\[{{]?\s*[\"']({names})[\"']|[\"']({names})[\"']\s*(==|!=|in\b)|\.kind\.name\s*(==|!=|in\b)")
    hits = [f"{p.relative_to(SRC)}:{n}" for p in SRC.rglob("*.py") if p.name != "registry.py"
            for n, line in enumerate(p.read_text().splitlines(), 1) if "kind" in line.lower() and pattern.search(line)]
    assert not hits, hits

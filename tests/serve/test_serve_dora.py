"""DoRA adapters in mixed batches: each row scales its own columns (norms precomputed at load) and
equals the adapter run alone (lorakit core and PEFT), next to plain-LoRA and base rows."""

from __future__ import annotations

import warnings

import pytest
import torch

import lorakit
from lorakit.core import lora_layers
from lorakit.serve import AdapterBank, LoraServer
from tests.conftest import tiny_llama
from tests.serve.conftest import make_adapter
from tests.serve.reference import greedy_alone, single_model

peft = pytest.importorskip("peft")
TOL = 1e-4


@pytest.fixture(scope="module")
def dora_adapters(tmp_path_factory):
    """peft_dora (written by PEFT), lk_dora (lorakit, rsLoRA), plain (a LoRA) in one folder."""
    root = tmp_path_factory.mktemp("dora")
    gen = torch.Generator().manual_seed(5)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pm = peft.get_peft_model(tiny_llama(), peft.LoraConfig(r=4, lora_alpha=8, use_dora=True,
                                                               target_modules=["q_proj", "v_proj", "up_proj"]))
    with torch.no_grad():
        for name, p in sorted(pm.named_parameters()):
            if "lora_" in name:
                p.add_(torch.randn(p.shape, generator=gen) * 0.3)
    pm.save_pretrained(root / "peft_dora")
    model = tiny_llama()
    lorakit.inject(model, lorakit.LoraSpec(r=2, alpha=4, targets=("attention",), dora=True, rslora=True))
    with torch.no_grad():
        for layer in lora_layers(model).values():
            for p in layer.adapter_parameters().values():
                p.add_(torch.randn(p.shape, generator=gen) * 0.3)
    lorakit.save_adapter(model, root / "lk_dora")
    make_adapter(tiny_llama, root / "plain", seed=9, r=4, alpha=8, targets=("qv",))
    return root, pm.eval()


def test_mixed_batch_rows_equal_each_adapter_alone(dora_adapters):
    root, pm = dora_adapters
    names = [None, "peft_dora", "plain", "lk_dora", "peft_dora", None]
    model = tiny_llama()
    bank = AdapterBank(model, max_loaded=4)
    for name in ("peft_dora", "lk_dora", "plain"):
        bank.load(name, root / name)
    ids = torch.randint(3, 100, (1, 9), generator=torch.Generator().manual_seed(0))
    with torch.inference_mode(), bank.batch([bank.slot(n) for n in names]):
        mixed = model(ids.repeat(len(names), 1)).logits
    with torch.inference_mode():
        peft_alone = pm(input_ids=ids).logits[0]
        alone = {n: single_model(tiny_llama, None if n is None else root / n)(ids).logits[0] for n in set(names)}
    assert (alone["lk_dora"] - alone[None]).abs().max() > 1e-2 and (peft_alone - alone[None]).abs().max() > 1e-2
    for i, name in enumerate(names):
        assert (mixed[i] - alone[name]).abs().max() < TOL, name
    assert (mixed[1] - peft_alone).abs().max() < TOL


def test_greedy_text_equals_peft(dora_adapters, tokenizer):
    root, pm = dora_adapters
    server = LoraServer(tiny_llama(), tokenizer, name="tiny", adapters_dir=root, max_batch=4)
    prompts = ["hello world", "a", "the quick brown fox", "LoRA"]
    rows = ["peft_dora", "plain", "peft_dora", None]
    results = server.generate(prompts, rows, max_tokens=10)
    for prompt, adapter, result in zip(prompts, rows, results, strict=True):
        if adapter != "peft_dora":
            continue
        tokens, _ = greedy_alone(pm, tokenizer(prompt)["input_ids"], 10)
        assert result.text == tokenizer.decode(tokens, skip_special_tokens=True)


def test_dora_row_with_a_base_bias(tmp_path):
    """Layers with a bias: the DoRA row computes c ⊙ (W0·x + s·B·A·x) + b, not c ⊙ (… + b)."""
    def make():
        torch.manual_seed(0)
        return torch.nn.Sequential(torch.nn.Linear(8, 6), torch.nn.Tanh(), torch.nn.Linear(6, 5))

    model = make()
    lorakit.inject(model, lorakit.LoraSpec(r=2, alpha=4, targets=("0", "2"), dora=True))
    with torch.no_grad():
        for layer in lora_layers(model).values():
            for p in layer.adapter_parameters().values():
                p.add_(torch.randn(p.shape) * 0.5)
    lorakit.save_adapter(model, tmp_path / "ad")
    x = torch.randn(3, 8)
    want = model.eval()(x)
    served = make()
    bank = AdapterBank(served)
    bank.load("d", tmp_path / "ad")
    with torch.inference_mode(), bank.batch([0, -1, 0]):
        got = served(x)
    assert (got[0] - want[0]).abs().max() < 1e-5 and (got[2] - want[2]).abs().max() < 1e-5
    assert (got[1] - make()(x)[1]).abs().max() < 1e-6

"""Serving on oneDNN-prepacked Linears (models/packed.py): the bank wraps them, results are unchanged."""

from __future__ import annotations

import torch

from lorakit.core.registry import kind_for
from lorakit.models.packed import PackedLinear, pack_frozen_linears
from lorakit.serve import AdapterBank, LoraServer
from tests.conftest import tiny_llama
from tests.serve.reference import single_model


def test_bank_wraps_packed_linears_and_mixed_rows_match_alone(llama_adapters):
    model = tiny_llama().eval().requires_grad_(False)
    pack_frozen_linears(model, batch_hint=4)
    bank = AdapterBank(model, max_loaded=4)
    names = ["qv4", "all4rs", "ffn16"]
    for name in names:
        bank.load(name, llama_adapters / name)
    q = model.model.layers[0].self_attn.q_proj
    assert isinstance(q.base, PackedLinear) and kind_for(q.base).name == "packed_linear"
    ids = torch.randint(3, 100, (1, 9), generator=torch.Generator().manual_seed(1))
    rows = [None, *names]
    with torch.inference_mode(), bank.batch([bank.slot(n) for n in rows]):
        mixed = model(ids.repeat(len(rows), 1)).logits
    for i, name in enumerate(rows):
        with torch.inference_mode():
            ref = single_model(tiny_llama, None if name is None else llama_adapters / name)(ids).logits[0]
        assert (mixed[i] - ref).abs().max() < 1e-4, name


def test_from_pretrained_packs_on_cpu_and_generates_the_same_text(tiny_llama_dir, tokenizer):
    packed = LoraServer.from_pretrained(str(tiny_llama_dir), dtype="fp32")
    plain = LoraServer.from_pretrained(str(tiny_llama_dir), dtype="fp32", pack=False)
    assert packed.precision["packed_linears"] > 0 and plain.precision["packed_linears"] == 0
    prompts = ["hello world", "xyz", "the quick brown fox"]
    a = [c.text for c in packed.generate(prompts, max_tokens=8)]
    b = [c.text for c in plain.generate(prompts, max_tokens=8)]
    assert a == b

"""The adapter bank: loading, refusals, LRU eviction, pins, rank groups, no merging, clean close."""

from __future__ import annotations

import json
import os
import time

import pytest
import torch

import lorakit
from lorakit.io import read_adapter, write_adapter
from lorakit.serve import AdapterBank, AdapterFolder, AdapterNotFound, BankFull, check_name
from lorakit.serve.lora_batch import BankLinear
from tests.conftest import tiny_bert, tiny_llama
from tests.serve.conftest import make_adapter


def _logits(model, ids, bank=None, slots=None):
    with torch.inference_mode():
        if bank is None:
            return model(ids).logits
        with bank.batch(slots):
            return model(ids).logits


def test_base_weights_never_change_and_close_restores_the_model(llama_adapters):
    model = tiny_llama()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    bank = AdapterBank(model, max_loaded=2)
    bank.load("qv8", llama_adapters / "qv8")
    assert set(model.state_dict()) == set(before)  # base keys keep their names
    ids = torch.arange(3, 10).unsqueeze(0)
    _logits(model, ids, bank, [bank.slot("qv8")])
    for key, value in model.state_dict().items():
        assert torch.equal(value, before[key]), key  # nothing merged
    bank.close()
    assert not any(isinstance(m, BankLinear) for m in model.modules())
    assert torch.equal(_logits(model, ids), _logits(tiny_llama(), ids))


def test_rank_groups_do_not_pad_to_the_largest_rank(llama_adapters):
    model = tiny_llama()
    bank = AdapterBank(model, max_loaded=4)
    for name in ("qv4", "qv8", "all4rs"):
        bank.load(name, llama_adapters / name)
    q = model.get_submodule("model.layers.0.self_attn.q_proj")
    assert isinstance(q, BankLinear)
    assert {r: g.At.shape[2] for r, g in q.groups.items()} == {4: 4, 8: 8}
    assert q.groups[4].used == 2 and q.groups[8].used == 1
    # The expand operands of a batch are gathered per rank group present, each at its own rank.
    with bank.batch([bank.slot("qv4"), bank.slot("qv8"), -1]) as rows:
        plan = q._make_plan(rows)
    assert sorted(At.shape[2] for _, _, At, _ in plan.lora) == [4, 8]


def test_load_time_is_small(llama_adapters):
    bank = AdapterBank(tiny_llama(), max_loaded=4)
    file = read_adapter(llama_adapters / "qv8")
    bank.load_file("warm", file)
    start = time.perf_counter()
    info = bank.load_file("qv8", file)
    assert (time.perf_counter() - start) * 1000 < 200  # generous on a shared CI machine; real figure in benchmarks
    assert info.ready_ms > 0 and info.rank == 8 and info.modules == 4


def test_lru_eviction_and_pins(llama_adapters):
    bank = AdapterBank(tiny_llama(), max_loaded=2)
    bank.load("qv4", llama_adapters / "qv4")
    bank.load("qv8", llama_adapters / "qv8")
    bank.acquire("qv4")  # qv4 becomes most recent and pinned
    bank.release("qv4")
    bank.load("attn2", llama_adapters / "attn2")  # evicts qv8, the least recently used
    assert bank.names() == ["qv4", "attn2"] and bank.evictions == 1
    bank.acquire("qv4")
    bank.acquire("attn2")
    with pytest.raises(BankFull):
        bank.load("ffn16", llama_adapters / "ffn16")
    with pytest.raises(ValueError, match="in use"):
        bank.unload("attn2")
    bank.release("attn2")
    bank.load("ffn16", llama_adapters / "ffn16")
    assert bank.names() == ["qv4", "ffn16"]


def test_evicted_slot_is_reused_cleanly(llama_adapters):
    model = tiny_llama()
    bank = AdapterBank(model, max_loaded=1)
    ids = torch.arange(3, 10).unsqueeze(0)
    bank.load("all4rs", llama_adapters / "all4rs")
    bank.load("qv8", llama_adapters / "qv8")  # same slot, fewer modules: nothing of all4rs may remain
    ref = tiny_llama()
    lorakit.load_adapter(ref, llama_adapters / "qv8")
    assert (_logits(model, ids, bank, [bank.slot("qv8")]) - _logits(ref, ids)).abs().max() < 1e-5


def test_refusals_leave_the_bank_unchanged(llama_adapters, tmp_path):
    model = tiny_llama()
    bank = AdapterBank(model, max_loaded=2)
    # Targets that match no module of the base.
    make_adapter(tiny_bert, tmp_path / "bert", seed=1, r=2, targets=("query",))
    with pytest.raises(ValueError, match="matches no module"):
        bank.load("bert", tmp_path / "bert")
    # A tensor of the wrong shape.
    file = read_adapter(llama_adapters / "qv4")
    key = next(k for k in file.tensors if k.endswith("lora_A.weight"))
    bad = dict(file.tensors, **{key: torch.zeros(3, 5)})
    write_adapter(tmp_path / "shape", file.config, bad)
    with pytest.raises(ValueError, match="shape mismatch"):
        bank.load("shape", tmp_path / "shape")
    # Non-finite values.
    nan = dict(file.tensors, **{key: torch.full_like(file.tensors[key], float("nan"))})
    write_adapter(tmp_path / "nan", file.config, nan)
    with pytest.raises(ValueError, match="non-finite"):
        bank.load("nan", tmp_path / "nan")
    # bias="all" changes every bias: cannot share a base.
    make_adapter(tiny_llama, tmp_path / "biasall", seed=2, r=2, targets=("qv",), bias="all")
    with pytest.raises(ValueError, match="bias='all'"):
        bank.load("biasall", tmp_path / "biasall")
    # Embedding LoRA is not a batched matmul pair.
    make_adapter(tiny_llama, tmp_path / "emb", seed=3, r=2, targets=("embed_tokens",))
    with pytest.raises(ValueError, match="cannot serve"):
        bank.load("emb", tmp_path / "emb")
    with pytest.raises(ValueError, match="invalid adapter name"):
        bank.load("../x", llama_adapters / "qv4")
    bank.load("qv4", llama_adapters / "qv4")
    with pytest.raises(ValueError, match="already loaded"):
        bank.load("qv4", llama_adapters / "qv4")
    assert bank.names() == ["qv4"]
    assert not any(isinstance(m, BankLinear) and m.slots - {bank.slot("qv4")} for m in model.modules())


@pytest.mark.parametrize("name", ["..", ".", "", "a/b", "../qv4", "/etc", "%2e%2e", "a b", "x" * 200, "qv4\x00",
                                  "ü", None, 3])
def test_bad_names_are_refused(name):
    with pytest.raises(ValueError):
        check_name(name)


def test_folder_stays_inside_its_root(llama_adapters, tmp_path):
    root = tmp_path / "adapters"
    root.mkdir()
    outside = tmp_path / "outside"
    make_adapter(tiny_llama, outside, seed=5, r=2, targets=("qv",))
    os.symlink(outside, root / "escape")
    os.symlink(llama_adapters / "qv4", root / "also_outside")
    (root / "linked").symlink_to(root / "real", target_is_directory=True)
    make_adapter(tiny_llama, root / "real", seed=6, r=2, targets=("qv",))
    (root / "empty").mkdir()
    (root / "notes.json").write_text(json.dumps({}))
    folder = AdapterFolder(root)
    assert folder.available() == ["linked", "real"]
    for name in ("escape", "also_outside", "empty", "notes.json", "missing"):
        with pytest.raises(AdapterNotFound):
            folder.resolve(name)
    with pytest.raises(ValueError):
        folder.resolve("../outside")
    assert folder.resolve("linked") == (root / "real").resolve()


def test_submit_validates_without_evicting(llama_adapters, tmp_path, tokenizer):
    """With every slot taken, a request's new adapter is checked now but loaded only on admission."""
    import shutil

    from lorakit.serve import LoraServer, SamplingParams

    for name in ("qv4", "qv8"):
        shutil.copytree(llama_adapters / name, tmp_path / name)
    make_adapter(tiny_bert, tmp_path / "for_bert", seed=1, r=2, targets=("query",))
    server = LoraServer(tiny_llama(), tokenizer, name="tiny", adapters_dir=tmp_path, max_loaded=1)
    server.submit([5, 6], SamplingParams(max_tokens=2), "qv4", None)  # free slot: loaded at once
    assert server.bank.names() == ["qv4"]
    server.submit([5, 6], SamplingParams(max_tokens=2), "qv8", None)  # full: checked, not loaded yet
    assert server.bank.names() == ["qv4"] and server.bank.evictions == 0
    with pytest.raises(ValueError, match="matches no module"):
        server.submit([5, 6], SamplingParams(max_tokens=2), "for_bert", None)
    with pytest.raises(BankFull):
        server.bank.load_file("x", read_adapter(tmp_path / "qv8"), evict=False)
    server.engine.run_until_idle()
    assert server.bank.names() == ["qv8"] and server.bank.evictions == 1

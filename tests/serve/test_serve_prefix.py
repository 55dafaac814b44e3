"""Prefix caching (serve/prefix.py): reused prompt prefixes give the rows' alone results, per owner."""

from __future__ import annotations

import shutil

import pytest
import torch

from lorakit.serve import LoraServer, SamplingParams
from lorakit.serve.prefix import PrefixCache
from tests.conftest import tiny_llama
from tests.serve.reference import greedy_alone, single_model

TOL = 1e-4
SHARED = "system: you are a terse helper.\nuser: "  # 38 characters = tokens: two 16-token blocks
PROMPTS = [SHARED + s for s in ("hello world", "name the fox", "xyz", "a longer question here?")]
ROWS = [None, "qv4", "all4rs", "qv4"]


def layers(n: int, value: float = 0.0) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Two layers of (heads 2, n tokens, dim 4) keys and values."""
    return [(torch.full((2, n, 4), value), torch.full((2, n, 4), value + 1)) for _ in range(2)]


def put(cache: PrefixCache, owner: str, tokens: list[int]) -> None:
    """What the engine does after a prefill: store the block-aligned part :meth:`storable` asks for."""
    if n := cache.storable(owner, tokens):
        cache.store(owner, tokens[:n], layers(n))


def test_lookup_finds_the_longest_block_prefix_shorter_than_the_prompt():
    cache = PrefixCache(block=4)
    put(cache, "a", list(range(10)))  # blocks of 4 and 8 tokens kept
    assert cache.storable("a", list(range(10))) == 0  # cached already: nothing to gather
    assert cache.storable("a", [9, 9, 9, 9, 9]) == 4 and cache.storable("a", [1, 2, 3]) == 0
    assert cache.lookup("a", list(range(10)))[0] == 8
    assert cache.lookup("a", list(range(8)))[0] == 4  # one token is always computed afresh
    assert cache.lookup("a", [0, 1, 2, 3, 9, 9])[0] == 4
    assert cache.lookup("a", [1, 2, 3, 4, 5])[0] == 0
    assert cache.lookup("b", list(range(10)))[0] == 0  # another owner's keys/values are not its own
    n, entry = cache.lookup("a", list(range(12)))
    past = cache.past([entry, entry], n)
    assert len(past) == 2 and past[0][0].shape == (2, 2, 8, 4) and past[0][1][0, 0, 0, 0] == 1


def test_bytes_bound_evicts_least_recently_used_and_drop_forgets_an_owner():
    one = sum(k.nbytes + v.nbytes for k, v in layers(8))
    cache = PrefixCache(max_bytes=2 * one, block=4)
    put(cache, "a", [1] * 8)
    put(cache, "a", [2] * 8)
    cache.lookup("a", [1] * 9)  # [1]*8 is now the most recently used
    put(cache, "a", [3] * 8)
    assert len(cache) == 2 and cache.bytes == 2 * one
    assert cache.lookup("a", [2] * 9)[0] == 0 and cache.lookup("a", [1] * 9)[0] == 8
    put(cache, "b", [1] * 8)
    cache.drop("a")
    assert cache.lookup("a", [1] * 9)[0] == 0 and cache.lookup("b", [1] * 9)[0] == 8
    off = PrefixCache(max_bytes=0)
    assert off.storable("a", [1] * 40) == 0
    put(off, "a", [1] * 40)
    assert len(off) == 0
    with pytest.raises(ValueError, match="block"):
        PrefixCache(block=0)


@pytest.fixture(scope="module")
def references(llama_adapters, tokenizer):
    return {(p, a): greedy_alone(single_model(tiny_llama, None if a is None else llama_adapters / a),
                                 tokenizer(p)["input_ids"], 8)
            for p, a in zip(PROMPTS, ROWS, strict=True)}


def test_rows_reusing_cached_prefixes_match_alone(llama_adapters, tokenizer, references):
    server = LoraServer(tiny_llama(), tokenizer, name="tiny", adapters_dir=llama_adapters, max_batch=2)
    seen: dict[str, list[torch.Tensor]] = {}
    server.engine.logits_hook = lambda ids, logits: [seen.setdefault(r, []).append(x.clone())
                                                     for r, x in zip(ids, logits, strict=True)]
    for round_ in range(2):  # round 1 finds every prefix of round 0 cached
        rids = [server.submit(tokenizer(p)["input_ids"], SamplingParams(max_tokens=8), a, None)
                for p, a in zip(PROMPTS, ROWS, strict=True)]
        server.engine.run_until_idle()
        for rid, prompt, adapter in zip(rids, PROMPTS, ROWS, strict=True):
            tokens, logits = references[prompt, adapter]
            assert len(seen[rid]) == len(logits), (round_, adapter)
            for got, want in zip(seen[rid], logits, strict=True):
                assert (got - want).abs().max() < TOL, (round_, adapter)
    stats = server.engine.stats
    # max_batch 2: rows 3-4 of round 0 already reuse what rows 1-2 stored (same owner "qv4" for the
    # shared prefix); round 1 reuses at least the shared 32 tokens of every row.
    assert stats["cached_prompt_tokens"] >= 32 * len(PROMPTS)
    assert server.engine.prefixes.hits >= len(PROMPTS)


def test_an_adapter_reloaded_under_the_same_name_never_sees_old_prefixes(llama_adapters, tokenizer, tmp_path):
    folder = tmp_path / "adapters"
    shutil.copytree(llama_adapters / "qv4", folder / "a")
    server = LoraServer(tiny_llama(), tokenizer, name="tiny", adapters_dir=folder)
    prompt = PROMPTS[1]
    first = server.generate([prompt], ["a"], max_tokens=8)[0]
    server.remove_adapter("a")
    shutil.rmtree(folder / "a")
    shutil.copytree(llama_adapters / "all4rs", folder / "a")
    second = server.generate([prompt], ["a"], max_tokens=8)[0]
    tokens, _ = greedy_alone(single_model(tiny_llama, llama_adapters / "all4rs"), tokenizer(prompt)["input_ids"], 8)
    assert second.text == tokenizer.decode(tokens, skip_special_tokens=True)
    assert first.text != second.text  # guards against a vacuous pass
    assert server.engine.stats["cached_prompt_tokens"] == 0  # the new load computed its own prefix

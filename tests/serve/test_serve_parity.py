"""Mixed batches equal each adapter run alone: unmerged core LoRA, and merged into the base.

Rows of one batch use adapters of different ranks (2..16) and target sets (q/v, attention, FFN of
one layer, all linear with rsLoRA) next to base rows; prompts of different lengths force padding;
``max_batch`` below the number of requests forces rows to join and leave mid-generation.
"""

from __future__ import annotations

import pytest
import torch

from lorakit.serve import AdapterBank, LoraServer, SamplingParams
from tests.conftest import tiny_bert, tiny_llama
from tests.serve.conftest import BERT_ADAPTERS, LLAMA_ADAPTERS, char_tokenizer
from tests.serve.reference import greedy_alone, single_model

TOL = 1e-4
PROMPTS = ["hello world", "a", "the quick brown fox jumps", "xyz", "lorem ipsum dolor sit", "hi there",
           "0123456789", "LoRA"]
ROWS = [None, "qv4", "qv8", "attn2", "ffn16", "all4rs", "qv4", None]


@pytest.fixture(scope="module")
def alone_models(llama_adapters):
    """(adapter, merged) -> a tiny Llama with only that adapter, loaded by core."""
    return {(a, merged): single_model(tiny_llama, None if a is None else llama_adapters / a, merged)
            for a in [None, *LLAMA_ADAPTERS] for merged in (False, True)}


@pytest.fixture(scope="module")
def references(alone_models, tokenizer):
    """(tokens, logits) of every (prompt, adapter) row run alone, unmerged and merged."""
    return {(merged, prompt, adapter): greedy_alone(alone_models[adapter, merged], tokenizer(prompt)["input_ids"], 10)
            for merged in (False, True) for prompt, adapter in zip(PROMPTS, ROWS, strict=True)}


def test_every_adapter_changes_the_output(alone_models):
    """Guards the parity tests against vacuous passes: each adapter moves the logits."""
    ids = torch.arange(3, 12).unsqueeze(0)
    with torch.inference_mode():
        base = alone_models[None, False](ids).logits
        for name in LLAMA_ADAPTERS:
            assert (alone_models[name, False](ids).logits - base).abs().max() > 1e-2, name


def test_one_forward_mixed_rows_match_alone(llama_adapters, alone_models):
    model = tiny_llama()
    bank = AdapterBank(model, max_loaded=8)
    for name in LLAMA_ADAPTERS:
        bank.load(name, llama_adapters / name)
    ids = torch.randint(3, 100, (1, 9), generator=torch.Generator().manual_seed(0))
    names = [None, *LLAMA_ADAPTERS, None]
    with torch.inference_mode(), bank.batch([bank.slot(n) for n in names]):
        mixed = model(ids.repeat(len(names), 1)).logits
    for i, name in enumerate(names):
        for merged in (False, True):
            with torch.inference_mode():
                ref = alone_models[name, merged](ids).logits[0]
            assert (mixed[i] - ref).abs().max() < TOL, (name, merged)


@pytest.mark.parametrize("max_batch,max_loaded", [(8, 8), (3, 2)])
def test_engine_rows_match_alone(llama_adapters, tokenizer, references, max_batch, max_loaded):
    """(3, 2): rows join as others leave, and adapters wait for a slot, load and get evicted mid-run."""
    server = LoraServer(tiny_llama(), tokenizer, name="tiny", adapters_dir=llama_adapters, max_loaded=max_loaded,
                        max_batch=max_batch)
    seen: dict[str, list[torch.Tensor]] = {}

    def hook(ids, logits):
        for rid, row in zip(ids, logits, strict=True):
            seen.setdefault(rid, []).append(row.float().clone())

    server.engine.logits_hook = hook
    rids = [server.submit(tokenizer(p)["input_ids"], SamplingParams(max_tokens=10), a, None)
            for p, a in zip(PROMPTS, ROWS, strict=True)]
    server.engine.run_until_idle()
    results = server.generate(PROMPTS, ROWS, max_tokens=10)
    for rid, prompt, adapter, result in zip(rids, PROMPTS, ROWS, results, strict=True):
        for merged in (False, True):
            tokens, logits = references[merged, prompt, adapter]
            assert result.text == tokenizer.decode(tokens, skip_special_tokens=True), (adapter, merged)
            assert len(seen[rid]) == len(logits)
            for step, (got, want) in enumerate(zip(seen[rid], logits, strict=True)):
                assert (got - want).abs().max() < TOL, (adapter, merged, step)


def test_rows_join_while_others_decode(llama_adapters, tokenizer, references):
    """Requests submitted between steps join the running batch and still match their alone runs."""
    server = LoraServer(tiny_llama(), tokenizer, name="tiny", adapters_dir=llama_adapters, max_batch=8)
    done: dict[int, str] = {}

    def collect(i):
        def on_update(u):
            done[i] = done.get(i, "") + u.text
        return on_update

    for i, (prompt, adapter) in enumerate(zip(PROMPTS, ROWS, strict=True)):
        server.submit(tokenizer(prompt)["input_ids"], SamplingParams(max_tokens=10), adapter, collect(i))
        server.engine.step()  # one more request joins each step
        server.engine.step()
    server.engine.run_until_idle()
    for i, (prompt, adapter) in enumerate(zip(PROMPTS, ROWS, strict=True)):
        assert done[i] == tokenizer.decode(references[False, prompt, adapter][0], skip_special_tokens=True)


def test_seeded_sampling_does_not_depend_on_the_batch(llama_adapters, tokenizer):
    server = LoraServer(tiny_llama(), tokenizer, name="tiny", adapters_dir=llama_adapters)
    alone = server.generate(["sample me"], ["qv8"], max_tokens=12, temperature=0.8, top_p=0.9, seed=7)[0]
    mixed = server.generate(["other", "sample me", "x"], ["attn2", "qv8", None], max_tokens=12,
                            temperature=0.8, top_p=0.9, seed=7)[1]
    assert alone.text == mixed.text
    other = server.generate(["sample me"], ["qv8"], max_tokens=12, temperature=0.8, top_p=0.9, seed=8)[0]
    assert other.text != alone.text or other.completion_tokens != alone.completion_tokens


def test_classifier_rows_match_alone(bert_adapters):
    tok = char_tokenizer(bert=True)
    server = LoraServer(tiny_bert(num_labels=3), tok, name="tinybert", task="classify", adapters_dir=bert_adapters)
    texts = ["good movie", "bad", "an utterly average film", "meh", "great!"]
    rows = [None, "cls_qv4", "cls_ffn8", "cls_bias", "cls_qv4"]
    results = server.classify(texts, rows)
    for text, adapter, result in zip(texts, rows, results, strict=True):
        for merged in (False, True):
            model = single_model(lambda: tiny_bert(num_labels=3), None if adapter is None else bert_adapters / adapter,
                                 merged)
            with torch.inference_mode():
                ref = model(**tok([text], return_tensors="pt")).logits[0]
            assert (torch.tensor(result.logits) - ref).abs().max() < TOL, (adapter, merged)
    # Each classification adapter brings its own head: outputs differ from the base's.
    assert max(abs(a - b) for a, b in zip(results[0].logits, results[1].logits, strict=True)) > 1e-2
    assert set(BERT_ADAPTERS) <= set(server.bank.names())

"""Decoding options (beam width, length penalty, no-repeat n-grams) reach ``model.generate``."""

from __future__ import annotations

import pytest

from lorakit.train.config import TrainConfig
from lorakit.train.evaluate import decoding_options, generate_texts, generated_no_repeat_ngram
from tests.conftest import tiny_llama, tiny_tokenizer


def _repeats(text: str) -> bool:
    words = text.split()
    return len(words) != len(set(words))


@pytest.fixture
def llama_and_prompts():
    tokenizer = tiny_tokenizer(128)
    # No special tokens: the prompt's trailing [SEP] is the tokenizer's EOS, and the model would stop at once.
    prompts = [tokenizer(t, add_special_tokens=False)["input_ids"] for t in ("w1 w2 w3", "w4 w5", "w9")]
    return tiny_llama(), tokenizer, prompts


def test_no_repeat_ngram_size_changes_greedy_output(llama_and_prompts):
    model, tokenizer, prompts = llama_and_prompts
    # Random weights loop on a few (special) tokens; forbidding any repeated token must change the output.
    greedy = generate_texts(model, tokenizer, prompts, max_new_tokens=24)
    no_repeat = generate_texts(model, tokenizer, prompts, max_new_tokens=24, no_repeat_ngram_size=1)
    assert no_repeat != greedy
    assert all(t and not _repeats(t) for t in no_repeat)


def test_length_penalty_is_passed_only_to_beam_search(llama_and_prompts, monkeypatch):
    model, tokenizer, prompts = llama_and_prompts
    calls, generate = [], model.generate
    monkeypatch.setattr(model, "generate", lambda **kw: calls.append(kw) or generate(**kw))
    generate_texts(model, tokenizer, prompts[:1], max_new_tokens=4, length_penalty=0.9)
    generate_texts(model, tokenizer, prompts[:1], max_new_tokens=4, num_beams=3, length_penalty=0.9,
                   no_repeat_ngram_size=4)
    assert "length_penalty" not in calls[0] and not calls[0]["logits_processor"]
    assert (calls[1]["num_beams"], calls[1]["length_penalty"]) == (3, 0.9)
    # The n-gram ban is our processor (generated tokens only), not transformers' option (prompt included).
    assert "no_repeat_ngram_size" not in calls[1] and calls[1]["logits_processor"][0].ngram_size == 4


def test_the_ngram_ban_skips_the_prompt_as_the_papers_decoder_did():
    import torch
    from transformers import NoRepeatNGramLogitsProcessor

    scores = torch.zeros(1, 10)
    prompt_only = torch.tensor([[5, 6, 7, 5, 6]])  # the prompt holds 5 6 7; nothing generated yet
    assert NoRepeatNGramLogitsProcessor(3)(prompt_only, scores.clone())[0, 7] == -float("inf")  # transformers
    assert torch.isfinite(generated_no_repeat_ngram(3, prompt_width=5)(prompt_only, scores.clone())).all()
    generated = torch.tensor([[1, 5, 6, 7, 5, 6]])  # the same tokens, generated after a 1-token prompt
    banned = generated_no_repeat_ngram(3, prompt_width=1)(generated, scores.clone())
    assert banned[0, 7] == -float("inf") and torch.isfinite(banned[0, :7]).all()


def _reference_decode(model, tokenizer, prompt: list[int], steps: int, n: int) -> str:
    """Greedy decoding one token at a time, banning n-grams of the generated tokens (gpt2_beam.py's history)."""
    import torch

    history: list[int] = []
    for _ in range(steps):
        with torch.no_grad():
            logits = model(input_ids=torch.tensor([prompt + history])).logits[0, -1].clone()
        for i in range(len(history) - n + 1):
            if len(history) >= n - 1 and history[i:i + n - 1] == history[len(history) - n + 1:]:
                logits[history[i + n - 1]] = -float("inf")
        history.append(int(logits.argmax()))
        if history[-1] == tokenizer.eos_token_id:
            break
    return tokenizer.decode(history, skip_special_tokens=True).strip()


def test_greedy_no_repeat_decoding_matches_a_token_by_token_reference(llama_and_prompts):
    model, tokenizer, prompts = llama_and_prompts
    model.eval()
    # Left-padded prompts of different lengths in one batch: the ban must start at each row's first new token.
    for n in (1, 2):
        batched = generate_texts(model, tokenizer, prompts, max_new_tokens=16, no_repeat_ngram_size=n)
        assert batched == [_reference_decode(model, tokenizer, p, 16, n) for p in prompts]
        assert all(len(t.split()) >= 8 for t in batched)
    # This random model copies the prompt's last word first: a ban over the prompt would forbid it.
    assert [t.split()[0] for t in batched] == ["w3", "w5", "w9"]


def test_beam_search_batch_counts_beams_so_memory_does_not_grow_with_the_beam(llama_and_prompts, monkeypatch):
    model, tokenizer, prompts = llama_and_prompts
    rows, generate = [], model.generate
    monkeypatch.setattr(model, "generate", lambda **kw: rows.append(kw["input_ids"].shape[0]) or generate(**kw))
    beam = generate_texts(model, tokenizer, prompts, batch_size=4, max_new_tokens=4, num_beams=2)
    assert rows == [2, 1]  # 4 sequences per call: 2 prompts x 2 beams, then the last prompt
    rows.clear()
    one_by_one = [generate_texts(model, tokenizer, [p], max_new_tokens=4, num_beams=2)[0] for p in prompts]
    assert beam == one_by_one  # splitting the batch does not change what is decoded
    generate_texts(model, tokenizer, prompts, batch_size=4, max_new_tokens=4)
    assert rows[-1] == 3  # greedy: one sequence per prompt, the whole batch in one call


def test_paper_decoding_is_recorded_as_given():
    assert decoding_options(10, 0.9, 4, 64) == {"num_beams": 10, "max_new_tokens": 64, "length_penalty": 0.9,
                                                 "no_repeat_ngram_size": 4}


@pytest.mark.parametrize("bad", [{"no_repeat_ngram_size": -1}, {"length_penalty": float("nan")}, {"num_beams": 0}])
def test_train_config_rejects_bad_decoding(bad):
    with pytest.raises(ValueError, match=next(iter(bad))):
        TrainConfig(**bad)

"""Decoding options (beam width, length penalty, no-repeat n-grams) reach ``model.generate``."""

from __future__ import annotations

import pytest

from lorakit.train.config import TrainConfig
from lorakit.train.evaluate import decoding_options, generate_texts
from tests.conftest import tiny_llama, tiny_tokenizer


def _repeats(text: str) -> bool:
    words = text.split()
    return len(words) != len(set(words))


@pytest.fixture
def llama_and_prompts():
    tokenizer = tiny_tokenizer(128)
    prompts = [tokenizer("w1 w2 w3")["input_ids"], tokenizer("w4 w5")["input_ids"], tokenizer("w9")["input_ids"]]
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
    assert "length_penalty" not in calls[0] and "no_repeat_ngram_size" not in calls[0]
    assert (calls[1]["num_beams"], calls[1]["length_penalty"], calls[1]["no_repeat_ngram_size"]) == (3, 0.9, 4)


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

"""Text streaming with stop strings, sampling rules, KV-cache surgery."""

from __future__ import annotations

import pytest
import torch

from lorakit.serve import GenerationRequest, LoraServer, SamplingParams
from lorakit.serve.sampling import next_tokens, top_p_filter
from lorakit.serve.text import TextStream
from tests.conftest import tiny_llama


def _stream(tokenizer, text: str, stop=()):
    stream = TextStream(tokenizer, stop)
    pieces = []
    for token in tokenizer(text, add_special_tokens=False)["input_ids"]:
        stream.push(token)
        pieces.append(stream.take())
    pieces.append(stream.finish())
    return stream, pieces


def test_stream_without_stops_releases_every_character(tokenizer):
    stream, pieces = _stream(tokenizer, "hello world")
    assert "".join(pieces) == "hello world" and all(len(p) == 1 for p in pieces[:-1])


def test_stop_string_across_tokens_is_cut_and_never_shown(tokenizer):
    stream, pieces = _stream(tokenizer, "abc STOP def", stop=("STOP",))
    assert stream.stopped and "".join(pieces) == "abc "
    assert not any("S" in p for p in pieces)


def test_partial_stop_prefix_is_held_then_released(tokenizer):
    stream = TextStream(tokenizer, ("END",))
    shown = ""
    for token in tokenizer("xEN", add_special_tokens=False)["input_ids"]:
        stream.push(token)
        shown += stream.take()
    assert shown == "x"  # "EN" could still become "END"
    for token in tokenizer("Dy", add_special_tokens=False)["input_ids"]:
        stream.push(token)
        shown += stream.take()
    assert stream.stopped and shown + stream.finish() == "xEN"[:1]
    stream2, pieces = _stream(tokenizer, "xENz", stop=("END",))
    assert "".join(pieces) == "xENz" and not stream2.stopped


def test_earliest_of_several_stops_wins(tokenizer):
    _, pieces = _stream(tokenizer, "one, two. three", stop=(".", ","))
    assert "".join(pieces) == "one"


def test_sampling_params_are_validated():
    for bad in (dict(max_tokens=0), dict(temperature=-1), dict(temperature=float("nan")), dict(top_p=0),
                dict(top_p=1.5), dict(seed=1.5), dict(stop=("",)), dict(max_tokens=True)):
        with pytest.raises(ValueError):
            SamplingParams(**bad)
    assert SamplingParams(stop="x").stop == ("x",)


def test_top_p_keeps_the_nucleus():
    logits = torch.log(torch.tensor([0.5, 0.3, 0.15, 0.05]))
    kept = torch.isfinite(top_p_filter(logits, 0.7))
    assert kept.tolist() == [True, True, False, False]
    assert torch.isfinite(top_p_filter(logits, 0.1)).sum() == 1  # the top token always stays
    assert torch.equal(top_p_filter(logits, 1.0), logits)


def test_sampling_follows_the_seed_and_greedy_is_argmax():
    logits = torch.randn(3, 50, generator=torch.Generator().manual_seed(0))
    params = [SamplingParams(), SamplingParams(temperature=1.0, seed=3), SamplingParams(temperature=1.0, seed=3)]
    picks = next_tokens(logits, params, [p.generator() for p in params])
    again = next_tokens(logits, params, [p.generator() for p in params])
    assert picks == again and picks[0] == int(logits[0].argmax())


def test_cancel_and_stop_in_the_engine(tokenizer):
    server = LoraServer(tiny_llama(), tokenizer, name="tiny", max_batch=4)
    updates: dict[str, list] = {"a": [], "b": []}
    rid = server.submit(tokenizer("hello")["input_ids"], SamplingParams(max_tokens=50), None, updates["a"].append)
    server.submit(tokenizer("world")["input_ids"], SamplingParams(max_tokens=5), None, updates["b"].append)
    server.engine.step()
    server.engine.cancel(rid)
    server.engine.run_until_idle()
    assert updates["a"][-1].finish_reason == "cancelled"
    assert updates["b"][-1].finish_reason == "length" and updates["b"][-1].completion_tokens == 5
    assert server.engine.batch_size == 0 and server.engine._cache is None
    full = server.generate(["hello"], max_tokens=12)[0].text
    if len(full) > 3:
        cut = server.generate(["hello"], max_tokens=12, stop=[full[2:4]])[0]
        assert cut.text == full[:full.index(full[2:4])] and cut.finish_reason == "stop"


def test_prompt_too_long_for_the_context_is_refused(tokenizer):
    server = LoraServer(tiny_llama(), tokenizer, name="tiny")
    with pytest.raises(ValueError, match="context"):
        server.generate(["x" * 120], max_tokens=20)
    with pytest.raises(ValueError, match="empty"):
        server.engine.check(GenerationRequest([], SamplingParams()))
    with pytest.raises(ValueError, match="token ids"):
        server.engine.check(GenerationRequest([5, 999], SamplingParams()))

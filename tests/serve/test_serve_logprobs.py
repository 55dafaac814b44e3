"""logprobs: the reported log-probabilities are the model's own, row by row, in OpenAI's shapes.

The reference is a plain forward over prompt + generated tokens with the adapter loaded by core:
the reported logprobs must sum to that sequence's log-likelihood, whatever the batch, the
sampling rule or the response format did to choose the tokens.
"""

from __future__ import annotations

import json

import pytest
import torch
from fastapi.testclient import TestClient

from lorakit.serve import LoraServer, SamplingParams
from lorakit.serve.http import HttpSettings, create_app
from tests.conftest import tiny_llama
from tests.serve.reference import single_model

PROMPTS = ["hello world", "abc", "the quick brown fox", "x"]
ROWS = ["qv8", None, "all4rs", "qv8"]


@pytest.fixture(scope="module")
def server(llama_adapters, tokenizer):
    return LoraServer(tiny_llama(), tokenizer, name="tiny", adapters_dir=llama_adapters)


def plain_loglik(llama_adapters, adapter: str | None, prompt: list[int], tokens: list[int]) -> torch.Tensor:
    """Per-token log-probabilities of ``tokens`` after ``prompt`` from one plain forward."""
    model = single_model(tiny_llama, None if adapter is None else llama_adapters / adapter)
    ids = torch.tensor([prompt + tokens])
    with torch.inference_mode():
        logp = torch.log_softmax(model(ids).logits[0].float(), dim=-1)
    return logp[len(prompt) - 1:-1].gather(1, torch.tensor(tokens).unsqueeze(1)).squeeze(1)


def test_logprobs_sum_to_the_sequence_log_likelihood(server, llama_adapters):
    ids = [server.encode_prompt(p) for p in PROMPTS]
    params = [SamplingParams(max_tokens=12 if i < 3 else 48, temperature=1.0, seed=i, logprobs=3)
              for i in range(len(PROMPTS))]
    schema = {"type": "object", "properties": {"a": {"type": "string", "maxLength": 5}}, "required": ["a"],
              "additionalProperties": False}
    # A masked row reports the model's own logprobs too (of the tokens the grammar let it choose).
    formats = [None, None, None, {"type": "json_schema", "json_schema": {"name": "a", "schema": schema}}]
    out = server.generate_ids(ids, ROWS, params, formats)
    assert out[3].finish_reason == "stop" and isinstance(json.loads(out[3].text)["a"], str)
    for prompt, adapter, result in zip(ids, ROWS, out, strict=True):
        tokens = [e.token for e in result.logprobs]
        # End-of-sequence (finish "stop", no stop strings here) is counted but is no content token.
        assert len(tokens) == result.completion_tokens - (result.finish_reason == "stop") > 0
        reference = plain_loglik(llama_adapters, adapter, prompt, tokens)
        got = torch.tensor([e.logprob for e in result.logprobs])
        assert torch.allclose(got, reference, atol=1e-4), adapter
        assert abs(float(got.sum()) - float(reference.sum())) < 1e-3
        for e in result.logprobs:
            assert len(e.top) == 3 and e.top[0][1] >= e.top[1][1] >= e.top[2][1] >= e.logprob - 1e-6


def test_logprobs_none_and_zero(server):
    plain = server.generate(["abc"], max_tokens=5)[0]
    assert plain.logprobs is None
    zero = server.generate(["abc"], max_tokens=5, logprobs=0)[0]
    assert zero.text == plain.text and [e.top for e in zero.logprobs] == [()] * 5
    with pytest.raises(ValueError):
        SamplingParams(logprobs=21)


@pytest.fixture(scope="module")
def client(server):
    server.start()
    with TestClient(create_app(server, HttpSettings()), raise_server_exceptions=False) as c:
        yield c
    server.engine.shutdown()


def test_completions_shape(client, server):
    r = client.post("/v1/completions", json={"model": "qv8", "prompt": "hello", "max_tokens": 6, "temperature": 0,
                                             "logprobs": 2})
    assert r.status_code == 200, r.text
    choice = r.json()["choices"][0]
    lp = choice["logprobs"]
    assert "".join(lp["tokens"]) == choice["text"]
    assert lp["text_offset"] == [sum(len(t) for t in lp["tokens"][:i]) for i in range(len(lp["tokens"]))]
    expected = server.generate(["hello"], ["qv8"], max_tokens=6, logprobs=2)[0].logprobs
    assert lp["token_logprobs"] == pytest.approx([e.logprob for e in expected], abs=1e-6)
    for token, top in zip(lp["tokens"], lp["top_logprobs"], strict=True):
        assert token in top and 2 <= len(top) <= 3


def test_chat_shape_and_streaming(client):
    body = {"model": "all4rs", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 8, "temperature": 0,
            "logprobs": True, "top_logprobs": 2}
    r = client.post("/v1/chat/completions", json=body)
    assert r.status_code == 200, r.text
    choice = r.json()["choices"][0]
    content = choice["logprobs"]["content"]
    assert "".join(c["token"] for c in content) == choice["message"]["content"]
    for c in content:
        assert bytes(c["bytes"]).decode() == c["token"] and len(c["top_logprobs"]) == 2
        assert c["top_logprobs"][0]["logprob"] >= c["logprob"] - 1e-6
    with client.stream("POST", "/v1/chat/completions", json={**body, "stream": True}) as s:
        chunks = [json.loads(line[6:]) for line in s.iter_lines() if line.startswith("data: {")]
    streamed = [c for chunk in chunks for choice in chunk["choices"] if choice["logprobs"]
                for c in choice["logprobs"]["content"]]
    # The second request reuses the first one's cached prompt prefix: the same tokens, the same
    # logprobs up to float summation order (serve/prefix.py).
    def strip(entries):
        return [(c["token"], c["bytes"], [(t["token"], t["bytes"]) for t in c["top_logprobs"]]) for c in entries]

    def numbers(entries):
        return [x for c in entries for x in (c["logprob"], *(t["logprob"] for t in c["top_logprobs"]))]

    assert strip(streamed) == strip(content)
    assert numbers(streamed) == pytest.approx(numbers(content), abs=1e-5)
    no = client.post("/v1/chat/completions", json={**body, "logprobs": False, "top_logprobs": None})
    assert no.json()["choices"][0]["logprobs"] is None
    bad = client.post("/v1/chat/completions", json={**body, "logprobs": False, "top_logprobs": 2})
    assert bad.status_code == 400
    assert client.post("/v1/chat/completions", json={**body, "top_logprobs": 21}).status_code == 422


def test_chat_n_choices(client):
    r = client.post("/v1/chat/completions", json={"model": "qv8", "messages": [{"role": "user", "content": "hi"}],
                                                  "n": 3, "max_tokens": 8, "temperature": 1.0, "seed": 3})
    assert r.status_code == 200, r.text
    choices = r.json()["choices"]
    assert [c["index"] for c in choices] == [0, 1, 2]
    assert len({c["message"]["content"] for c in choices}) > 1  # different seeds per choice


def test_token_bytes_of_a_byte_level_tokenizer():
    """The fast path (llguidance reads tokenizer.json): each token's bytes, multi-byte characters included."""
    from lorakit.serve.constrained import Vocabulary
    from tests.models.test_gguf_export import byte_level_tokenizer

    tokenizer = byte_level_tokenizer()
    vocab = Vocabulary(tokenizer, len(tokenizer) + 4, {tokenizer.eos_token_id})
    text = "the weights é ✓ rank"
    ids = tokenizer(text)["input_ids"]
    assert b"".join(vocab.token_bytes(i) for i in ids) == text.encode()
    assert vocab.token_bytes(len(tokenizer) + 1) == b""  # an embedding row with no token

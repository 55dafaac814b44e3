"""response_format: JSON schema / JSON object through llguidance, per row, in mixed batches.

A random tiny model left alone writes garbage; constrained, every row must still be valid JSON that
matches its schema, whatever adapter the row uses and whatever unconstrained rows share its batch.
"""

from __future__ import annotations

import json

import jsonschema
import pytest
import torch

from lorakit.serve import LoraServer, SamplingParams
from lorakit.serve.constrained import TokenMasks, grammar_for
from lorakit.serve.http import HttpSettings, create_app
from tests.conftest import tiny_llama

SCHEMA = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": 6},
        "age": {"type": "integer", "minimum": 0, "maximum": 120},
        "tags": {"type": "array", "items": {"enum": ["x", "y", "z"]}, "maxItems": 3},
        "ok": {"type": "boolean"},
        "kind": {"enum": ["a", "b", None]},
        "inner": {"type": "object", "properties": {"v": {"type": "integer", "minimum": -5, "maximum": 5}},
                  "required": ["v"], "additionalProperties": False},
    },
    "required": ["name", "age", "tags", "ok", "kind", "inner"],
    "additionalProperties": False,
}
FORMAT = {"type": "json_schema", "json_schema": {"name": "person", "schema": SCHEMA, "strict": True}}
PROMPTS = [f"prompt {i}: {chr(97 + i)}{chr(65 + i)}" for i in range(20)]
ADAPTERS = [None, "qv4", "attn2", "all4rs"]


@pytest.fixture(scope="module")
def server(llama_adapters, tokenizer):
    return LoraServer(tiny_llama(), tokenizer, name="tiny", adapters_dir=llama_adapters, max_batch=32)


def test_the_unconstrained_model_does_not_write_json(server):
    """Guards against a vacuous pass: without the grammar the random model's text is not JSON."""
    for out in server.generate(PROMPTS[:5], max_tokens=40, temperature=1.0, seed=1):
        with pytest.raises(json.JSONDecodeError):
            json.loads(out.text)


def test_json_schema_on_20_prompts_in_a_mixed_batch(server):
    rows = [ADAPTERS[i % len(ADAPTERS)] for i in range(len(PROMPTS))]
    # Unconstrained rows in the same batch; they must come out exactly as when run alone.
    plain_prompts = ["free text", "more free text"]
    alone = server.generate(plain_prompts, ["qv4", None], max_tokens=12)
    formats = [FORMAT] * len(PROMPTS) + [None, None]
    params = [SamplingParams(max_tokens=100, temperature=1.0, seed=i) for i in range(len(PROMPTS))]
    params += [SamplingParams(max_tokens=12)] * 2
    out = server.generate_ids([server.encode_prompt(p) for p in PROMPTS + plain_prompts], rows + ["qv4", None],
                              params, formats)
    for prompt, result in zip(PROMPTS, out, strict=False):
        assert result.finish_reason == "stop", (prompt, result.text)
        jsonschema.validate(json.loads(result.text), SCHEMA)
    assert len({r.text for r in out[:len(PROMPTS)]}) > 10  # sampled, not one forced answer
    assert [r.text for r in out[len(PROMPTS):]] == [r.text for r in alone]


def test_json_object_and_text_formats(server):
    out = server.generate(PROMPTS[:6], [None, "qv8", None, "ffn16", None, "qv4"], max_tokens=48, temperature=0.7,
                          seed=2, response_format={"type": "json_object"})
    finished = [r for r in out if r.finish_reason == "stop"]
    assert finished  # an unbounded object may run to max_tokens; every finished one is an object
    for result in finished:
        assert isinstance(json.loads(result.text), dict)
    text = server.generate(PROMPTS[:2], max_tokens=8, response_format={"type": "text"})
    assert [r.text for r in text] == [r.text for r in server.generate(PROMPTS[:2], max_tokens=8)]


@pytest.mark.parametrize("bad", [{"type": "xml"}, {"type": "json_schema"}, {"type": "json_schema", "json_schema": 3},
                                 {"type": "json_schema", "json_schema": {"schema": {"type": "no-such-type"}}}, "json"])
def test_bad_formats_raise_value_error(server, bad):
    with pytest.raises(ValueError):
        server.constraint(bad)


def test_masks_match_a_loop_over_allowed_tokens():
    """The vectorised bit unpacking against the plain definition: token t allowed iff bit t%32 of word t//32."""
    gen = torch.Generator().manual_seed(0)
    bits = torch.randint(-2**31, 2**31 - 1, (3, 5), dtype=torch.int32, generator=gen)
    logits = torch.randn(4, 150, generator=gen)
    masked = TokenMasks(torch.tensor([2, 0, 3]), bits).apply(logits)
    for k, row in enumerate([2, 0, 3]):
        for t in range(150):
            allowed = t < 160 and (int(bits[k, t // 32]) >> (t % 32)) & 1
            assert masked[row, t] == (logits[row, t] if allowed else float("-inf"))
    assert torch.equal(masked[1], logits[1])


def test_grammar_for_text_is_none():
    assert grammar_for(None) is None and grammar_for({"type": "text"}) is None


def test_http_json_schema_with_n_and_an_adapter(server):
    from fastapi.testclient import TestClient

    with TestClient(create_app(server, HttpSettings()), raise_server_exceptions=False) as client:
        server.start()
        try:
            r = client.post("/v1/chat/completions", json={
                "model": "qv8", "messages": [{"role": "user", "content": "who?"}], "n": 3, "max_tokens": 100,
                "temperature": 1.0, "seed": 4, "response_format": FORMAT})
            assert r.status_code == 200, r.text
            for choice in r.json()["choices"]:
                jsonschema.validate(json.loads(choice["message"]["content"]), SCHEMA)
            bad = client.post("/v1/chat/completions", json={
                "model": "qv8", "messages": [{"role": "user", "content": "x"}], "response_format": {"type": "yaml"}})
            assert bad.status_code == 400 and "response_format" in bad.json()["error"]["message"]
        finally:
            server.engine.shutdown()

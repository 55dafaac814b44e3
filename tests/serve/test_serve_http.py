"""The HTTP API in-process: routes, auth, limits, path safety, typed errors (never a 500)."""

from __future__ import annotations

import json
import os
import shutil

import pytest
from fastapi.testclient import TestClient

from lorakit.serve import LoraServer, SamplingParams
from lorakit.serve.http import HttpSettings, create_app
from lorakit.serve.http_generate import Limits
from tests.conftest import tiny_bert, tiny_llama
from tests.serve.conftest import char_tokenizer, make_adapter

KEY = "test-key"
AUTH = {"Authorization": f"Bearer {KEY}"}
SETTINGS = HttpSettings(api_key=KEY, max_body_bytes=4096,
                        limits=Limits(max_prompt_tokens=48, max_tokens=20, max_choices=4))


@pytest.fixture(scope="module")
def adapters(llama_adapters, tmp_path_factory):
    """qv4, qv8, attn2 plus traps: a BERT adapter, a symlink out of the folder, a non-adapter folder."""
    root = tmp_path_factory.mktemp("http_adapters")
    for name in ("qv4", "qv8", "attn2"):
        shutil.copytree(llama_adapters / name, root / name)
    make_adapter(tiny_bert, root / "for_bert", seed=9, r=2, targets=("query",))
    os.symlink(llama_adapters / "ffn16", root / "escape")
    (root / "plain_dir").mkdir()
    return root


@pytest.fixture(scope="module")
def server(adapters):
    srv = LoraServer(tiny_llama(), char_tokenizer(), name="tiny-llama", adapters_dir=adapters, max_loaded=2,
                     max_queue=8)
    srv.start()
    yield srv
    srv.close()


@pytest.fixture(scope="module")
def client(server):
    with TestClient(create_app(server, SETTINGS), raise_server_exceptions=False) as c:
        yield c


def post(client, path, body, headers=AUTH):
    return client.post(path, json=body, headers=headers)


def test_health_is_open_everything_else_needs_the_key(client):
    assert client.get("/health").status_code == 200
    for method, path in [("get", "/v1/models"), ("get", "/metrics"), ("post", "/v1/completions"),
                         ("delete", "/v1/adapters/qv4"), ("get", "/nope")]:
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": KEY}, {"Authorization": "Basic x"}):
            r = getattr(client, method)(path, headers=headers)
            assert r.status_code == 401, (path, headers)
            assert r.json()["error"]["code"] == "invalid_api_key"
    assert client.get("/v1/models", headers=AUTH).status_code == 200


def test_completion_with_an_adapter_matches_the_python_api(client, server):
    r = post(client, "/v1/completions", {"model": "qv8", "prompt": "hello", "max_tokens": 8, "temperature": 0})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["object"] == "text_completion" and body["model"] == "qv8"
    assert body["usage"]["completion_tokens"] <= 8 and body["usage"]["prompt_tokens"] == 5
    assert body["choices"][0]["text"] == server.generate(["hello"], ["qv8"], max_tokens=8)[0].text
    base = post(client, "/v1/completions", {"model": "tiny-llama", "prompt": "hello", "max_tokens": 8, "temperature": 0})
    assert base.status_code == 200 and base.json()["choices"][0]["text"] != body["choices"][0]["text"]


def test_several_prompts_and_n(client):
    r = post(client, "/v1/completions", {"model": "qv4", "prompt": ["ab", "cd"], "n": 2, "max_tokens": 4,
                                         "temperature": 0.9, "seed": 1})
    assert r.status_code == 200, r.text
    assert [c["index"] for c in r.json()["choices"]] == [0, 1, 2, 3]


def test_token_id_prompts(client):
    text = post(client, "/v1/completions", {"model": "qv4", "prompt": "hello", "max_tokens": 4, "temperature": 0})
    ids = post(client, "/v1/completions", {"model": "qv4", "prompt": [[20, 17, 24, 24, 27]], "max_tokens": 4,
                                           "temperature": 0})
    assert ids.status_code == 200, ids.text
    assert ids.json()["choices"][0]["text"] == text.json()["choices"][0]["text"]
    bad = post(client, "/v1/completions", {"model": "qv4", "prompt": [5, 100000], "max_tokens": 2})
    assert bad.status_code == 400 and "token ids" in bad.json()["error"]["message"]


def test_chat_and_streaming(client):
    body = {"model": "attn2", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 6, "temperature": 0}
    full = post(client, "/v1/chat/completions", body)
    assert full.status_code == 200, full.text
    text = full.json()["choices"][0]["message"]["content"]
    with client.stream("POST", "/v1/chat/completions", json={**body, "stream": True,
                                                               "stream_options": {"include_usage": True}},
                       headers=AUTH) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        events = [line[6:] for line in r.iter_lines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    assert "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"]) == text
    assert chunks[-1]["usage"]["completion_tokens"] == full.json()["usage"]["completion_tokens"]


def test_models_and_adapter_routes(client, server):
    assert post(client, "/v1/adapters", {"name": "qv4"}).status_code == 200
    ids = {m["id"]: m for m in client.get("/v1/models", headers=AUTH).json()["data"]}
    assert {"tiny-llama", "qv4", "qv8", "attn2", "for_bert"} <= set(ids)
    assert "escape" not in ids and "plain_dir" not in ids
    assert ids["tiny-llama"]["kind"] == "base" and ids["qv4"]["loaded"] is True
    assert client.delete("/v1/adapters/qv4", headers=AUTH).json() == {"name": "qv4", "loaded": False}
    assert client.delete("/v1/adapters/qv4", headers=AUTH).status_code == 404
    assert "qv4" not in server.bank


@pytest.mark.parametrize("name,status", [("nope", 404), ("escape", 404), ("plain_dir", 404), ("for_bert", 400),
                                         ("../qv4", 400), ("..", 400), ("/etc/passwd", 400), ("%2e%2e", 400),
                                         ("a" * 300, 400)])
def test_adapter_names_are_safe(client, name, status):
    r = post(client, "/v1/adapters", {"name": name})
    assert r.status_code == status, r.text
    assert set(r.json()["error"]) == {"message", "type", "param", "code"}
    r = post(client, "/v1/completions", {"model": name, "prompt": "x", "max_tokens": 1})
    assert r.status_code in (400, 404)


@pytest.mark.parametrize("path", ["/v1/adapters/..%2F..%2Fetc", "/v1/adapters/%2e%2e", "/v1/adapters/..",
                                  "/v1/adapters/a%00b"])
def test_delete_with_encoded_paths(client, path):
    assert client.delete(path, headers=AUTH).status_code in (400, 404, 405)


@pytest.mark.parametrize("body,status", [
    ({"model": "qv4", "prompt": "x", "max_tokens": 21}, 400),
    ({"model": "qv4", "prompt": "x" * 60, "max_tokens": 1}, 400),
    ({"model": "qv4", "prompt": "x", "n": 5}, 400),
    ({"model": "qv4", "prompt": "x", "logprobs": 6}, 422),
    ({"model": "qv4", "prompt": "x", "response_format": {"type": "xml"}}, 400),
    ({"model": "qv4", "prompt": "x", "response_format": {"type": "json_schema", "json_schema": {"schema": 3}}}, 400),
    ({"model": "qv4", "prompt": "x", "echo": True}, 400),
    ({"model": "qv4", "prompt": "x", "stop": ["a", "b", "c", "d", "e"]}, 400),
    ({"model": "qv4", "prompt": []}, 400),
    ({"model": "qv4", "prompt": "x", "temperature": 3}, 422),
    ({"model": "qv4", "prompt": "x", "max_tokens": 0}, 422),
    ({"model": "qv4", "prompt": "x", "max_tokens": "ten"}, 422),
    ({"model": "qv4"}, 422),
    ({"prompt": "x"}, 422),
    ([1, 2], 422),
])
def test_bad_requests_are_4xx(client, body, status):
    r = post(client, "/v1/completions", body)
    assert r.status_code == status, r.text
    assert r.json()["error"]["message"]


def test_malformed_json_and_large_bodies(client):
    headers = {**AUTH, "Content-Type": "application/json"}
    assert client.post("/v1/completions", content=b"{not json", headers=headers).status_code == 400
    assert client.post("/v1/completions", content=b"", headers=headers).status_code in (400, 422)
    big = json.dumps({"model": "qv4", "prompt": "x" * 5000}).encode()
    assert client.post("/v1/completions", content=big, headers=headers).status_code == 413

    def chunks():  # no Content-Length: the limit is enforced while reading
        for _ in range(10):
            yield b" " * 1000
    r = client.post("/v1/completions", content=chunks(), headers=headers)
    assert r.status_code == 413


def test_fuzzed_bodies_never_give_a_500(client):
    values = [None, 0, -1, 2**70, 1.5, "", "x", [], {}, [None], {"a": 1}, True, "\x00", float("1e308")]
    fields = ["model", "prompt", "messages", "max_tokens", "temperature", "top_p", "n", "stop", "seed", "stream",
              "input", "name", "stream_options", "logit_bias", "max_completion_tokens", "response_format", "logprobs",
              "top_logprobs", "replace"]
    for path in ("/v1/completions", "/v1/chat/completions", "/v1/adapters", "/v1/classify"):
        for field in fields:
            for value in values:
                base = {"model": "qv4", "prompt": "hi", "messages": [{"role": "user", "content": "hi"}],
                        "max_tokens": 2, "input": "x", "name": "qv4"}
                r = client.post(path, content=json.dumps({**base, field: value}),
                                headers={**AUTH, "Content-Type": "application/json"})
                assert r.status_code < 500, (path, field, value, r.text)
                if r.status_code != 200:
                    assert set(r.json()["error"]) == {"message", "type", "param", "code"}


def test_queue_full_is_429_with_retry_after(adapters):
    srv = LoraServer(tiny_llama(), char_tokenizer(), name="idle", adapters_dir=adapters, max_queue=1)
    srv.submit([5, 6], SamplingParams(max_tokens=2), None, None)  # engine not started: it stays queued
    with TestClient(create_app(srv, HttpSettings()), raise_server_exceptions=False) as c:
        r = c.post("/v1/completions", json={"model": "idle", "prompt": "x", "max_tokens": 2})
        assert r.status_code == 429 and r.headers["Retry-After"] == "1"
        assert r.json()["error"]["type"] == "rate_limit_error"
        assert c.post("/v1/classify", json={"model": "idle", "input": "x"}).status_code == 400


def test_metrics(client):
    post(client, "/v1/completions", {"model": "qv8", "prompt": "hello", "max_tokens": 3})
    text = client.get("/metrics", headers=AUTH).text
    for name in ("lorakit_requests_total", "lorakit_request_latency_seconds_bucket", "lorakit_completion_tokens_total",
                 "lorakit_queue_depth", "lorakit_batch_size_bucket", "lorakit_adapters_loaded"):
        assert name in text
    assert 'route="other"' in text or 'route="/v1/completions"' in text


def test_classify_route(tmp_path):
    make_adapter(lambda: tiny_bert(num_labels=3), tmp_path / "cls", seed=4, r=4, targets=("qv",),
                 modules_to_save=("classifier",))
    srv = LoraServer(tiny_bert(num_labels=3), char_tokenizer(bert=True), name="tinybert", task="classify",
                     adapters_dir=tmp_path)
    with TestClient(create_app(srv, HttpSettings()), raise_server_exceptions=False) as c:
        r = c.post("/v1/classify", json={"model": "cls", "input": ["good", "bad"]})
        assert r.status_code == 200, r.text
        data = r.json()["data"]
        assert len(data) == 2 and abs(sum(data[0]["probs"]) - 1) < 1e-5
        assert data == [dict(d, index=i) for i, d in enumerate(data)]
        expected = srv.classify(["good", "bad"], ["cls", "cls"])
        assert [d["logits"] for d in data] == [e.logits for e in expected]
        assert c.post("/v1/completions", json={"model": "cls", "prompt": "x"}).status_code == 400
        assert c.post("/v1/classify", json={"model": "cls", "input": []}).status_code == 400
        assert c.post("/v1/classify", json={"model": "nope", "input": "x"}).status_code == 404
        # Longer than tiny BERT's 64 positions: refused, not silently truncated.
        too_long = c.post("/v1/classify", json={"model": "cls", "input": "y" * 100})
        assert too_long.status_code == 400 and "tokens" in too_long.json()["error"]["message"]

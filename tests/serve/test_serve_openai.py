"""The official ``openai`` client, unchanged, against a live uvicorn server on 127.0.0.1."""

from __future__ import annotations

import pytest

from lorakit.serve import LoraServer
from lorakit.serve.http import BackgroundServer, HttpSettings, create_app
from tests.conftest import tiny_llama
from tests.serve.conftest import char_tokenizer

openai = pytest.importorskip("openai")
KEY = "sk-test"


@pytest.fixture(scope="module")
def live(llama_adapters):
    server = LoraServer(tiny_llama(), char_tokenizer(), name="tiny-llama", adapters_dir=llama_adapters, max_loaded=3)
    server.start()
    with BackgroundServer(create_app(server, HttpSettings(api_key=KEY)), host="127.0.0.1") as http:
        yield server, http
    server.close()


@pytest.fixture(scope="module")
def client(live):
    return openai.OpenAI(base_url=live[1].url + "/v1", api_key=KEY, max_retries=0, timeout=60)


def test_completions_chat_and_streaming(client, live):
    server = live[0]
    done = client.completions.create(model="qv8", prompt="hello", max_tokens=8, temperature=0)
    assert done.choices[0].text == server.generate(["hello"], ["qv8"], max_tokens=8)[0].text
    assert done.usage.prompt_tokens == 5 and done.choices[0].finish_reason in ("stop", "length")
    streamed = "".join(c.choices[0].text for c in
                       client.completions.create(model="qv8", prompt="hello", max_tokens=8, temperature=0, stream=True)
                       if c.choices)
    assert streamed == done.choices[0].text
    chat = client.chat.completions.create(model="attn2", messages=[{"role": "user", "content": "hi"}], max_tokens=6,
                                          temperature=0)
    assert chat.choices[0].message.role == "assistant"
    pieces = [c.choices[0].delta.content or "" for c in client.chat.completions.create(
        model="attn2", messages=[{"role": "user", "content": "hi"}], max_tokens=6, temperature=0, stream=True)
        if c.choices]
    assert "".join(pieces) == chat.choices[0].message.content


def test_models_and_typed_errors(client, live):
    ids = {m.id for m in client.models.list()}
    assert {"tiny-llama", "qv4", "qv8", "attn2", "ffn16", "all4rs"} <= ids
    with pytest.raises(openai.NotFoundError):
        client.completions.create(model="no-such-adapter", prompt="x", max_tokens=2)
    with pytest.raises(openai.BadRequestError):
        client.completions.create(model="qv4", prompt="x", max_tokens=100000)
    bad = openai.OpenAI(base_url=live[1].url + "/v1", api_key="wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        bad.models.list()


def test_concurrent_clients_with_different_adapters(client, live):
    from concurrent.futures import ThreadPoolExecutor

    names = ["qv4", "qv8", "attn2", "ffn16", "all4rs", "tiny-llama"] * 2
    with ThreadPoolExecutor(6) as pool:
        texts = list(pool.map(lambda n: client.completions.create(model=n, prompt="abc", max_tokens=6,
                                                                   temperature=0).choices[0].text, names))
    # max_loaded=3 < 5 adapters: eviction and reloading happened under load, results stay exact.
    expected = {n: live[0].generate(["abc"], [None if n == "tiny-llama" else n], max_tokens=6)[0].text
                for n in set(names)}
    assert texts == [expected[n] for n in names]

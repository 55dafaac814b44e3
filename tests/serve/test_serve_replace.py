"""Atomic adapter replacement: running rows finish on the old weights, new rows get the new ones.

Two versions of one adapter ("swap") give different greedy texts; whatever the timing, every
answer must be exactly one of the two (a row whose weights changed mid-generation would be neither),
and no request may fail.
"""

from __future__ import annotations

import shutil
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import pytest

from lorakit.serve import LoraServer, SamplingParams
from lorakit.serve.http import BackgroundServer, HttpSettings, create_app
from tests.conftest import tiny_llama
from tests.serve.conftest import LLAMA_ADAPTERS, make_adapter

PROMPT = "replace me"
MAX_TOKENS = 24


@pytest.fixture(scope="module")
def versions(tmp_path_factory):
    """Two versions of one adapter (same shape, other weights) and an adapters folder serving "swap"."""
    root = tmp_path_factory.mktemp("replace")
    for i, name in enumerate(("A", "B")):
        make_adapter(tiny_llama, root / "versions" / name, seed=300 + i, **LLAMA_ADAPTERS["qv8"])
    (root / "served").mkdir()
    shutil.copytree(root / "versions" / "A", root / "served" / "swap")
    shutil.copytree(root / "versions" / "A", root / "served" / "other")
    return root


def install(root, version: str) -> None:
    """Put version ``version`` of the adapter into the served folder (what a user does before PUT)."""
    for file in (root / "versions" / version).iterdir():
        shutil.copyfile(file, root / "served" / "swap" / file.name)


@pytest.fixture(scope="module")
def expected(versions, tokenizer):
    """Greedy text of the prompt under each version, each run alone."""
    texts = {}
    for version in ("A", "B"):
        server = LoraServer(tiny_llama(), tokenizer, name="tiny", adapters_dir=versions / "versions")
        texts[version] = server.generate([PROMPT], [version], max_tokens=MAX_TOKENS)[0].text
    assert texts["A"] != texts["B"]
    return texts


def test_running_rows_keep_the_old_weights(versions, expected, tokenizer):
    install(versions, "A")
    server = LoraServer(tiny_llama(), tokenizer, name="tiny", adapters_dir=versions / "served")
    server.add_adapter("swap")
    done: dict[str, str] = {}

    def collect(key):
        def on_update(update):
            done[key] = done.get(key, "") + update.text
        return on_update

    ids = server.encode_prompt(PROMPT)
    params = SamplingParams(max_tokens=MAX_TOKENS)
    server.submit(ids, params, "swap", collect("running"))
    server.engine.step()
    server.engine.step()  # "running" is mid-generation on version A
    server.submit(ids, params, "swap", collect("queued"))  # queued before the swap, admitted after it
    install(versions, "B")
    info, replaced = server.replace_adapter("swap")
    assert replaced and info.name == "swap"
    assert sorted(server.bank.names()) == ["swap", "swap#1"]  # A stays while its row runs
    server.submit(ids, params, "swap", collect("after"))
    server.engine.run_until_idle()
    assert done == {"running": expected["A"], "queued": expected["B"], "after": expected["B"]}
    assert server.bank.names() == ["swap#1"]  # the old version went with its last row
    assert [a.name for a in server.loaded_adapters()] == ["swap"]
    assert server.adapter_info("swap").pins == 0


def test_a_bad_new_version_keeps_the_old_one_serving(versions, expected, tokenizer, tmp_path):
    install(versions, "A")
    server = LoraServer(tiny_llama(), tokenizer, name="tiny", adapters_dir=versions / "served")
    server.add_adapter("swap")
    broken = tmp_path / "broken"
    shutil.copytree(versions / "served" / "swap", broken)
    (broken / "adapter_model.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(ValueError):
        server.replace_adapter("swap", broken)
    assert server.generate([PROMPT], ["swap"], max_tokens=MAX_TOKENS)[0].text == expected["A"]


def test_replace_under_load_over_http(versions, expected, tokenizer):
    import httpx

    install(versions, "A")
    server = LoraServer(tiny_llama(), tokenizer, name="tiny", adapters_dir=versions / "served", max_batch=8)
    server.add_adapter("swap")
    server.start()
    body = {"model": "swap", "prompt": PROMPT, "max_tokens": MAX_TOKENS, "temperature": 0}
    results: list[tuple[int, str]] = []
    swaps: list[int] = []
    stop = threading.Event()

    def client() -> None:
        with httpx.Client(base_url=http.url, timeout=120) as c:
            while not stop.is_set():
                r = c.post("/v1/completions", json=body)
                results.append((r.status_code, r.json()["choices"][0]["text"] if r.status_code == 200 else r.text))

    try:
        with BackgroundServer(create_app(server, HttpSettings()), host="127.0.0.1") as http, \
                httpx.Client(base_url=http.url, timeout=120) as admin, ThreadPoolExecutor(6) as pool:
            futures = [pool.submit(client) for _ in range(6)]
            for i in range(6):
                # Past the 6 requests in flight at the last swap: some ran on the version it installed.
                mark = len(results)
                while len(results) < mark + 8:
                    time.sleep(0.02)
                version = "B" if i % 2 == 0 else "A"
                install(versions, version)
                r = (admin.put("/v1/adapters/swap") if i % 2 == 0 else
                     admin.post("/v1/adapters", json={"name": "swap", "replace": True}))
                swaps.append(r.status_code)
                assert r.json()["replaced"] is True
            stop.set()
            for f in futures:
                f.result()
            final = admin.post("/v1/completions", json=body).json()["choices"][0]["text"]
            models = admin.get("/v1/models").json()["data"]
    finally:
        stop.set()
        server.close()
    assert swaps == [200] * 6
    statuses = Counter(status for status, _ in results)
    assert statuses == {200: len(results)}, statuses
    texts = Counter(text for _, text in results)
    assert set(texts) <= {expected["A"], expected["B"]}, texts
    assert set(texts) == {expected["A"], expected["B"]}  # both versions really served
    assert final == expected["A"]  # the last swap installed A
    assert [m["id"] for m in models if m.get("loaded") and m["kind"] == "adapter"] == ["swap"]

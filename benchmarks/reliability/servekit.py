"""Helpers of the serving reliability checks: a character tokenizer, seeded adapters, raw ASGI calls.

Shared by ``tests/reliability/test_rel_serve_*.py`` and ``benchmarks/reliability_serve_load.py``.
Everything talks to 127.0.0.1 or to the ASGI app in-process; nothing reaches another host.
"""

from __future__ import annotations

import asyncio
import string
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import torch

import lorakit
from lorakit.core import lora_layers

SPECIALS = ["<pad>", "<s>", "</s>"]
CHAT_TEMPLATE = ("{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
                 "{% if add_generation_prompt %}assistant:{% endif %}")


def char_tokenizer(padding_side: str = "left"):
    """A character-level fast tokenizer: 3 specials + printable ASCII (fits tiny_llama's 128 ids)."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    chars = [c for c in string.printable if c not in "\x0b\x0c\r"]
    vocab = {tok: i for i, tok in enumerate(SPECIALS + chars)}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<pad>"))
    tok.pre_tokenizer = pre_tokenizers.Split(Regex("."), behavior="isolated")
    tok.decoder = decoders.Fuse()
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", bos_token="<s>", eos_token="</s>",
                                   unk_token="<pad>")
    fast.chat_template = CHAT_TEMPLATE
    fast.padding_side = padding_side
    return fast


def make_adapter(model_factory, out: Path, seed: int, scale: float = 0.3, **spec_kwargs: Any) -> Path:
    """A seeded random adapter (non-zero A and B, so each one changes the output) saved at ``out``."""
    model = model_factory()
    spec = lorakit.LoraSpec(**spec_kwargs)
    lorakit.inject(model, spec)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for layer in lora_layers(model).values():
            layer.lora_A.copy_(torch.randn(layer.lora_A.shape, generator=gen) * scale)
            layer.lora_B.copy_(torch.randn(layer.lora_B.shape, generator=gen) * scale)
        for path in spec.modules_to_save:  # a trained head differs per adapter too
            for p in model.get_submodule(path).parameters():
                p.add_(torch.randn(p.shape, generator=gen) * 0.5)
    return lorakit.save_adapter(model, out, task_type="SEQ_CLS" if spec.modules_to_save else "CAUSAL_LM")


def make_adapter_zoo(model_factory, root: Path, n: int) -> list[str]:
    """``n`` adapters ``a00``, ``a01``… of ranks 2/4/8 over q/v or all attention projections."""
    root.mkdir(parents=True, exist_ok=True)
    names = []
    for i in range(n):
        name = f"a{i:02d}"
        targets = ("qv",) if i % 2 == 0 else ("attention",)
        make_adapter(model_factory, root / name, seed=1000 + i, r=(2, 4, 8)[i % 3], alpha=8, targets=targets)
        names.append(name)
    return names


def asgi_call(app: Any, method: str, raw_path: bytes, headers: dict[str, str] | None = None,
              body: bytes = b"") -> tuple[int, bytes]:
    """One request straight into the ASGI ``app`` with an exact ``raw_path`` (no client-side normalising).

    ``path`` is the percent-decoded ``raw_path``, as uvicorn hands it over.
    """
    path, _, query = raw_path.partition(b"?")
    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": method, "scheme": "http",
        "path": unquote(path.decode("latin-1")), "raw_path": path, "query_string": query, "root_path": "",
        "headers": [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()]
                   + [(b"content-length", str(len(body)).encode()), (b"host", b"127.0.0.1")],
        "client": ("127.0.0.1", 1), "server": ("127.0.0.1", 80),
    }
    sent: list[dict[str, Any]] = []
    delivered = False

    async def receive() -> dict[str, Any]:
        nonlocal delivered
        if not delivered:
            delivered = True
            return {"type": "http.request", "body": body, "more_body": False}
        await asyncio.sleep(3600)  # a disconnect never comes within a test
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    async def run() -> None:
        await asyncio.wait_for(app(scope, receive, send), timeout=60)

    asyncio.run(run())
    status = next(m["status"] for m in sent if m["type"] == "http.response.start")
    return status, b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")


def percentile(values: list[float], q: float) -> float:
    """The ``q`` quantile (0..1) of ``values`` by nearest rank (nan when empty)."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, int(round(q * len(ordered))) - 1))]


def load_run(url: str, requests: list[dict[str, Any]], concurrency: int, headers: dict[str, str],
             max_attempts: int = 200, time_limit: float = 300.0, keep_alive: bool = True,
             timeout: float = 120.0) -> list[dict[str, Any]]:
    """Send every request to ``url`` + /v1/completions from ``concurrency`` clients at once (127.0.0.1).

    A 429 (queue full) is the server's deliberate back-pressure: the client waits ``Retry-After``
    (capped at 0.2 s) and tries again, up to ``max_attempts``. A transport error (connection reset...)
    is recorded as ``"transport:<name>"`` and retried. Returns, per request: the final status, the text,
    the statuses of every attempt and the latency from the first attempt to the answer.
    """
    import httpx

    assert url.startswith("http://127.0.0.1:"), "load tests talk to this machine only"

    async def main() -> list[dict[str, Any]]:
        limits = httpx.Limits(max_connections=concurrency,
                              max_keepalive_connections=concurrency if keep_alive else 0)
        results: list[dict[str, Any]] = [{} for _ in requests]
        queue: asyncio.Queue[int] = asyncio.Queue()
        for i in range(len(requests)):
            queue.put_nowait(i)
        stop_at = asyncio.get_running_loop().time() + time_limit

        async def client(http: httpx.AsyncClient) -> None:
            while not queue.empty():
                i = queue.get_nowait()
                start = asyncio.get_running_loop().time()
                attempts: list[int] = []
                response = None
                while len(attempts) < max_attempts and asyncio.get_running_loop().time() < stop_at:
                    try:
                        response = await http.post("/v1/completions", json=requests[i], headers=headers)
                    except httpx.TransportError as exc:  # counted as an error, never hidden
                        attempts.append(f"transport:{type(exc).__name__}")
                        response = None
                        continue
                    attempts.append(response.status_code)
                    if response.status_code not in (429, 503):
                        break
                    await asyncio.sleep(min(float(response.headers.get("retry-after", "1")), 0.2))
                ok = response is not None and response.status_code == 200
                body = response.json() if response is not None else {}
                results[i] = {"status": attempts[-1] if attempts else None, "attempts": attempts,
                              "text": body["choices"][0]["text"] if ok else None,
                              "latency_s": asyncio.get_running_loop().time() - start, "body": body}

        async with httpx.AsyncClient(base_url=url, timeout=timeout, limits=limits) as http:
            await asyncio.gather(*(client(http) for _ in range(concurrency)))
        return results

    return asyncio.run(main())

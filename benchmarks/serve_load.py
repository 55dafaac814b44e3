"""Load test: N concurrent HTTP clients over M adapters against a live ``lorakit serve`` on 127.0.0.1.

The server runs in this process on a thread (uvicorn bound to 127.0.0.1, an ephemeral port); the
clients are ``httpx.AsyncClient`` tasks. The run is bounded twice: each client sends at most
``--requests`` requests, and nobody starts a new request after ``--seconds``.

    python -m benchmarks.serve_load --clients 8 --adapters 8 --requests 4
    # writes benchmarks/results/serve_load.{json,md}
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx
import torch

from benchmarks.common import machine, write_page
from benchmarks.serve_mixed import TEXT, make_adapters
from lorakit.serve import LoraServer
from lorakit.serve.http import BackgroundServer, HttpSettings, create_app

RESULTS = Path(__file__).resolve().parent / "results"


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile (nearest rank) of ``values``."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * len(ordered) + 0.5) - 1))]


async def client(i: int, url: str, key: str, models: list[str], args, deadline: float, out: list[dict]) -> None:
    """One client: up to ``args.requests`` completions, cycling through the adapters."""
    words = TEXT.split()
    async with httpx.AsyncClient(base_url=url, headers={"Authorization": f"Bearer {key}"},
                                 timeout=args.seconds + 120) as http:
        for k in range(args.requests):
            if time.monotonic() > deadline:
                break
            model = models[(i + k) % len(models)]
            prompt = " ".join(words[(7 * i + 13 * k) % 200:][:args.prompt_words])
            body = {"model": model, "prompt": prompt, "max_tokens": args.max_tokens, "temperature": 0.7,
                    "seed": i * 1000 + k}
            start = time.perf_counter()
            try:
                r = await http.post("/v1/completions", json=body)
                ok = r.status_code == 200
                tokens = r.json()["usage"]["completion_tokens"] if ok else 0
                status = r.status_code
            except httpx.HTTPError as exc:
                ok, tokens, status = False, 0, type(exc).__name__
            out.append({"client": i, "model": model, "ok": ok, "status": status, "tokens": tokens,
                        "latency_s": time.perf_counter() - start})


async def drive(url: str, key: str, models: list[str], args) -> tuple[list[dict], float]:
    """Run every client concurrently; returns the per-request records and the wall time."""
    records: list[dict] = []
    deadline = time.monotonic() + args.seconds
    start = time.perf_counter()
    await asyncio.gather(*(client(i, url, key, models, args, deadline, records) for i in range(args.clients)))
    return records, time.perf_counter() - start


def write(res: dict, out: Path, argv: list[str] | None = None) -> None:
    """``OUT.json`` (``res`` with the run's provenance under ``machine``) and ``OUT.md``, the table."""
    md = [
        f"uvicorn on 127.0.0.1, lorakit engine (continuous batching, max batch {res['clients']}), "
        f"{res['requests_per_client']} requests per client, max_tokens {res['max_tokens']}, temperature 0.7 "
        f"(seeded), {res['threads']} torch threads, at most {res['max_loaded']} adapters resident "
        f"({res['adapter_evictions']} LRU evictions during the run); load average at the end "
        f"{res['load_average'][0]:.1f} (shared machine).",
        "",
        "| requests | errors | wall s | requests/s | tokens/s | p50 latency s | p99 latency s |",
        "|---:|---:|---:|---:|---:|---:|---:|",
        f"| {res['requests']} | {res['errors']} | {res['wall_s']:.1f} | {res['requests_per_s']:.3f} | {res['tokens_per_s']:.2f} "
        f"| {res['latency_p50_s']:.2f} | {res['latency_p99_s']:.2f} |",
    ]
    write_page(out.stem, f"HTTP load: {res['model']}, {res['clients']} concurrent clients over {res['adapters']} "
               "adapters", md, res, machine(argv, "benchmarks.serve_load"), out=out.parent)


def main(argv: list[str] | None = None) -> int:
    """Start the server, run the clients, write the results."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="smollm2")
    p.add_argument("--clients", type=int, default=8)
    p.add_argument("--adapters", type=int, default=8)
    p.add_argument("--max-loaded", type=int, default=8)
    p.add_argument("--requests", type=int, default=4, help="requests per client (bounded)")
    p.add_argument("--seconds", type=float, default=300, help="no new request after this many seconds")
    p.add_argument("--max-tokens", type=int, default=32)
    p.add_argument("--prompt-words", type=int, default=40)
    # 1 by default: on a machine shared with other jobs, 2 OpenMP threads on 2 busy cores spin-wait for
    # each other and run ~5x slower than one thread (measured); raise it on a dedicated machine.
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", default=str(RESULTS / "serve_load"))
    args = p.parse_args(argv)
    if args.clients * args.requests > 2000:
        raise SystemExit("refusing more than 2000 requests in one run")
    torch.set_num_threads(args.threads)
    work = Path(tempfile.mkdtemp(prefix="serve_load_"))
    server = LoraServer.from_pretrained(args.model, adapters_dir=work, max_loaded=args.max_loaded,
                                        max_batch=max(args.clients, 1), max_queue=4 * args.clients)
    make_adapters(server.model, work, args.adapters)
    models = [f"a{i}" for i in range(args.adapters)] or [server.name]
    key = "load-test-key"
    server.start()
    try:
        with BackgroundServer(create_app(server, HttpSettings(api_key=key)), host="127.0.0.1") as http:
            records, wall = asyncio.run(drive(http.url, key, models, args))
        evictions = server.bank.evictions
    finally:
        server.close()
    ok = [r for r in records if r["ok"]]
    latencies = [r["latency_s"] for r in ok]
    tokens = sum(r["tokens"] for r in ok)
    res = {
        "model": args.model, "clients": args.clients, "adapters": args.adapters, "max_loaded": args.max_loaded,
        "requests_per_client": args.requests, "max_tokens": args.max_tokens, "threads": args.threads,
        "requests": len(records), "ok": len(ok), "errors": len(records) - len(ok),
        "error_statuses": sorted({str(r["status"]) for r in records if not r["ok"]}),
        "wall_s": wall, "requests_per_s": len(ok) / wall, "tokens_per_s": tokens / wall,
        "latency_p50_s": percentile(latencies, 50), "latency_p99_s": percentile(latencies, 99),
        "latency_mean_s": statistics.fmean(latencies) if latencies else float("nan"),
        "completion_tokens": tokens, "adapter_evictions": evictions, "load_average": os.getloadavg(),
    }
    write(res, Path(args.out), argv)
    return 0


if __name__ == "__main__":
    sys.exit(main())

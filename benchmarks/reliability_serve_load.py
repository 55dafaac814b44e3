"""Load and abuse figures of the server (promise 6 of RELIABILITY.md), on 127.0.0.1 only.

A tiny Llama serves ``--adapters`` adapters with only ``--max-loaded`` resident (so the bank evicts all
the time); ``--clients`` concurrent clients send ``--rounds`` requests each (greedy, 4 new tokens). A 429
is the server's deliberate back-pressure: the client waits and retries. Then every distinct request is
sent again alone, one at a time, and each answer under load must be identical to it. A second phase
unloads and reloads adapters continuously while the same load runs: nothing may answer 500.

Usage: ``python -m benchmarks.reliability_serve_load [--clients 200 --adapters 50 --max-loaded 8]``.
Writes ``benchmarks/results/reliability_serve_load.json``.
"""

from __future__ import annotations

import argparse
import json
import random
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

from benchmarks.common import RESULTS, write_results_file

PROMPTS = ["hello", "the cat sat", "LoRA is", "1 2 3 4", "why not?", "ok then"]


def write(result: dict, out: Path, argv: list[str] | None = None) -> Path:
    """``out`` (``NAME.json``): the load, replay and churn figures, with the provenance under ``machine``.

    Through :func:`benchmarks.common.write_results_file`: atomic, so an interrupted run leaves no half file.
    """
    return write_results_file(out, result, argv, "benchmarks.reliability_serve_load")


def main(argv: list[str] | None = None) -> int:
    """Run the load, the replay alone and the churn phase; print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=200)
    parser.add_argument("--adapters", type=int, default=50)
    parser.add_argument("--max-loaded", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=2, help="requests per client [default: %(default)s]")
    parser.add_argument("--max-tokens", type=int, default=4)
    parser.add_argument("--max-queue", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-keep-alive", action="store_true",
                        help="one connection per request (rules out the HTTP keep-alive close race)")
    parser.add_argument("--client-timeout", type=float, default=600.0, help="seconds a client waits for an answer")
    parser.add_argument("--out", default=str(RESULTS / "reliability_serve_load.json"),
                        help="the results file, NAME.json (any other suffix becomes .json) [default: %(default)s]")
    args = parser.parse_args(argv)

    import httpx
    import torch

    from benchmarks.reliability.servekit import char_tokenizer, load_run, make_adapter_zoo, percentile
    from benchmarks.tiny_models import tiny_llama
    from lorakit.serve import LoraServer
    from lorakit.serve.http import BackgroundServer, HttpSettings, create_app

    torch.set_num_threads(2)
    rng = random.Random(args.seed)
    root = Path(tempfile.mkdtemp(prefix="lorakit-load-"))
    names = make_adapter_zoo(tiny_llama, root / "adapters", args.adapters)
    key = "load-key"
    auth = {"Authorization": f"Bearer {key}"}
    server = LoraServer(tiny_llama(), char_tokenizer(), name="base", adapters_dir=root / "adapters",
                        max_loaded=args.max_loaded, max_batch=16, max_queue=args.max_queue)
    server.start()
    app = create_app(server, HttpSettings(api_key=key))
    total = args.clients * args.rounds
    requests = [{"model": names[i % len(names)], "prompt": PROMPTS[(i // len(names)) % len(PROMPTS)],
                 "max_tokens": args.max_tokens, "temperature": 0} for i in range(total)]
    rng.shuffle(requests)
    distinct = list({json.dumps(r, sort_keys=True): r for r in requests}.values())
    started = time.perf_counter()
    with BackgroundServer(app, host="127.0.0.1") as bg:
        t0 = time.perf_counter()
        client = {"keep_alive": not args.no_keep_alive, "timeout": args.client_timeout}
        loaded_results = load_run(bg.url, requests, concurrency=args.clients, headers=auth, time_limit=1800, **client)
        load_seconds = time.perf_counter() - t0
        alone = load_run(bg.url, distinct, concurrency=1, headers=auth, time_limit=1800, **client)
        reference = {json.dumps(r, sort_keys=True): a for r, a in zip(distinct, alone, strict=True)}

        # Churn: unload / reload random adapters while the same load runs again.
        churn_codes: Counter[int] = Counter()
        stop = threading.Event()

        def churn() -> None:
            with httpx.Client(base_url=bg.url, timeout=120) as http:
                while not stop.is_set():
                    name = rng.choice(names)
                    churn_codes[http.delete(f"/v1/adapters/{name}", headers=auth).status_code] += 1
                    churn_codes[http.post("/v1/adapters", json={"name": name}, headers=auth).status_code] += 1

        thread = threading.Thread(target=churn)
        thread.start()
        try:
            churn_results = load_run(bg.url, requests, concurrency=args.clients, headers=auth, time_limit=1800,
                                     **client)
        finally:
            stop.set()
            thread.join(120)
        metrics_text = httpx.get(f"{bg.url}/metrics", headers=auth).text
    server.close()

    def summary(results: list[dict]) -> dict:
        attempts = Counter(s for r in results for s in r["attempts"])
        ok = [r for r in results if r["status"] == 200]
        same = sum(r["text"] == reference[json.dumps(q, sort_keys=True)]["text"] for q, r in zip(requests, results,
                                                                                                     strict=True))
        lat = [r["latency_s"] for r in ok]
        return {"requests": len(results), "ok": len(ok), "attempt_statuses": {str(k): v for k, v in attempts.items()},
                "errors_other_than_429": sum(v for k, v in attempts.items() if k not in (200, 429)),
                "transport_errors": sum(v for k, v in attempts.items() if str(k).startswith("transport")),
                "identical_to_alone": same,
                "latency_ms": {"p50": 1e3 * percentile(lat, 0.5), "p90": 1e3 * percentile(lat, 0.9),
                               "p99": 1e3 * percentile(lat, 0.99), "max": 1e3 * max(lat, default=float("nan"))}}

    loaded = summary(loaded_results)
    churned = summary(churn_results)
    alone_lat = [r["latency_s"] for r in alone]
    evictions = sum(float(line.split()[-1]) for line in metrics_text.splitlines()
                    if line.startswith("lorakit_adapter_evictions"))
    result = {
        "clients": args.clients, "adapters": args.adapters, "max_loaded": args.max_loaded, "rounds": args.rounds,
        "max_tokens": args.max_tokens, "max_queue": args.max_queue, "distinct_requests": len(distinct),
        "keep_alive": not args.no_keep_alive, "client_timeout_s": args.client_timeout,
        "load": {**loaded, "seconds": load_seconds, "requests_per_s": total / load_seconds},
        "alone_latency_ms": {"p50": 1e3 * percentile(alone_lat, 0.5), "p99": 1e3 * percentile(alone_lat, 0.99)},
        "churn": {**churned, "unload_reload_statuses": dict(churn_codes)},
        "evictions_metric": evictions,
        "seconds": time.perf_counter() - started,
    }
    out = write(result, Path(args.out), argv)
    lo = result["load"]
    print(f"load : {args.clients} clients, {total} requests over {args.adapters} adapters ({args.max_loaded} "
          f"resident): {lo['ok']}/{total} answered, attempts {lo['attempt_statuses']}, "
          f"{lo['errors_other_than_429']} errors other than 429; identical to alone: {lo['identical_to_alone']}/{total}; "
          f"latency p50 {lo['latency_ms']['p50']:.0f} ms, p99 {lo['latency_ms']['p99']:.0f} ms "
          f"(alone p50 {result['alone_latency_ms']['p50']:.0f} ms); {lo['requests_per_s']:.1f} req/s")
    ch = result["churn"]
    print(f"churn: {ch['ok']}/{total} answered, attempts {ch['attempt_statuses']}, unload/reload "
          f"{ch['unload_reload_statuses']}; identical to alone: {ch['identical_to_alone']}/{total}")
    print(f"wrote {out} in {result['seconds']:.0f} s")
    bad = (lo["errors_other_than_429"] or ch["errors_other_than_429"] or lo["identical_to_alone"] != total
           or ch["identical_to_alone"] != total or any(k >= 500 for k in churn_codes))
    return 1 if bad else 0


if __name__ == "__main__":
    raise SystemExit(main())

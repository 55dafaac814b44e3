"""Mixed-adapter batches on the real model: lorakit's bank vs the base alone vs PEFT.

Side by side in one run, on ``smollm2`` (SmolLM2-135M-Instruct) by default:

  (a) the base model alone (lorakit's engine with no bank; HF ``generate`` shown for reference)
  (b) lorakit: 8 different adapters, one per row, in one batch
  (c) PEFT: the same 8 adapters, ``generate(..., adapter_names=[...])``
  (d) PEFT switching adapters request by request (``set_adapter``, one request at a time)

8 prompts × 64 tokens, 32 new tokens (greedy, EOS ignored so every run makes the same number of
tokens), medians of ``--reps`` runs after one warm-up. Also: adapter load + ready time, and time per
token as the number of distinct adapters in a 32-row batch grows 1 → 8 → 32.

    python -m benchmarks.serve_mixed            # writes benchmarks/results/serve_mixed.{json,md}
"""

from __future__ import annotations

import argparse
import copy
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

import lorakit
from benchmarks.common import machine, write_page
from lorakit.core import lora_layers
from lorakit.io import read_adapter
from lorakit.serve import Engine, GenerationRequest, LoraServer, SamplingParams

RESULTS = Path(__file__).resolve().parent / "results"
TEXT = ("Low-rank adaptation freezes the pretrained weights of a language model and learns a small update "
        "for a few projection matrices. Because the update is tiny, one base model can keep many adapters "
        "in memory at once and choose one for every request. A server then batches requests that use "
        "different adapters together, computing the shared base once and each small update per row. "
        "This benchmark measures how much that costs compared with the base model alone, and compares it "
        "with switching adapters one request at a time. ") * 8


def make_adapters(base, out: Path, count: int, seed: int = 0) -> list[Path]:
    """``count`` q/v rank-8 adapters, A random (Kaiming) and B random non-zero, each seeded.

    An adapter needs the base's module names and shapes only, so they are made on a fresh model of the same
    class and config: a served base's weights may be prepacked for oneDNN (opaque tensors that cannot be
    deep-copied).
    """
    model = type(base)(copy.deepcopy(base.config)) if hasattr(base, "config") else copy.deepcopy(base)
    lorakit.inject(model, lorakit.LoraSpec(r=8, alpha=16, targets=("qv",)))
    paths = []
    for i in range(count):
        torch.manual_seed(seed + i)
        with torch.no_grad():
            for layer in lora_layers(model).values():
                layer.reset_lora()
                layer.lora_B.normal_(0.0, 0.02)  # non-zero: every adapter changes the output differently
        paths.append(lorakit.save_adapter(model, out / f"a{i}", task_type="CAUSAL_LM"))
    return paths


def prompts(tokenizer, count: int, length: int) -> list[list[int]]:
    """``count`` different prompts of exactly ``length`` tokens."""
    ids = tokenizer(TEXT, add_special_tokens=False)["input_ids"]
    stride = max(1, (len(ids) - length) // max(count, 1))
    return [ids[i * stride:i * stride + length] for i in range(count)]


def interleaved(setups: dict, reps: int) -> dict[str, dict]:
    """Wall and process-CPU seconds of every setup: one warm-up each, then ``reps`` rounds in which
    every setup runs once, back to back, so that load from other processes hits all of them alike."""
    out = {name: {"wall": [], "cpu": [], "result": fn()} for name, fn in setups.items()}
    for _ in range(reps):
        for name, fn in setups.items():
            wall, cpu = time.perf_counter(), time.process_time()
            out[name]["result"] = fn()
            out[name]["wall"].append(time.perf_counter() - wall)
            out[name]["cpu"].append(time.process_time() - cpu)
    return out


def ratio(times: dict, top: str, bottom: str, clock: str) -> float:
    """Median over rounds of the per-round ratio top/bottom (each round ran both back to back)."""
    return statistics.median(t / b for t, b in zip(times[top][clock], times[bottom][clock], strict=True))


def run_engine(engine_or_server, rows: list[list[int]], adapters: list[str | None], new: int) -> list[str]:
    """Generate with lorakit's engine (inline, no thread); returns the texts."""
    params = SamplingParams(max_tokens=new, ignore_eos=True)
    if isinstance(engine_or_server, LoraServer):
        return [c.text for c in engine_or_server.generate_ids(rows, adapters, params)]
    engine, texts = engine_or_server, {}
    for i, ids in enumerate(rows):
        engine.submit(GenerationRequest(ids, params, None, lambda u, i=i: texts.__setitem__(i, texts.get(i, "") + u.text)))
    engine.run_until_idle()
    return [texts[i] for i in range(len(rows))]


def hf_batch(model, tokenizer, rows: list[list[int]], new: int, **kwargs) -> torch.Tensor:
    """HF/PEFT ``generate`` on a left-padded batch: exactly ``new`` greedy tokens per row."""
    length = max(len(r) for r in rows)
    ids = torch.tensor([[tokenizer.pad_token_id] * (length - len(r)) + r for r in rows])
    mask = torch.tensor([[0] * (length - len(r)) + [1] * len(r) for r in rows])
    with torch.inference_mode():
        out = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=new, min_new_tokens=new,
                             do_sample=False, pad_token_id=tokenizer.pad_token_id, **kwargs)
    return out[:, length:]


def main(argv: list[str] | None = None) -> int:
    """Run every measurement and write the JSON and markdown results."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="smollm2")
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--prompt-tokens", type=int, default=64)
    p.add_argument("--new-tokens", type=int, default=32)
    # 1 by default: on a machine shared with other jobs, 2 OpenMP threads on 2 busy cores spin-wait for
    # each other and run ~5x slower than one thread (measured); raise it on a dedicated machine.
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--scale-rows", type=int, default=32, help="rows of the 1 → 8 → 32 distinct-adapters test")
    p.add_argument("--scale-prompt-tokens", type=int, default=16)
    p.add_argument("--scale-new-tokens", type=int, default=8)
    p.add_argument("--out", default=str(RESULTS / "serve_mixed"))
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    from peft import PeftModel

    from lorakit.models import load_model

    loaded = load_model(args.model, task="generate")
    base, tok = loaded.model, loaded.tokenizer
    work = Path(tempfile.mkdtemp(prefix="serve_mixed_"))
    paths = make_adapters(base, work, 32)
    names = [f"a{i}" for i in range(8)]
    rows = prompts(tok, 8, args.prompt_tokens)
    new, reps = args.new_tokens, args.reps
    res: dict = {"model": args.model, "prompts": len(rows), "prompt_tokens": args.prompt_tokens, "new_tokens": new,
                 "reps": reps, "threads": args.threads, "torch": torch.__version__, "arch": platform.machine(),
                 "cpus": os.cpu_count(), "load_average_start": os.getloadavg()}

    # (b) lorakit: 8 adapters in one bank, one per row.
    server = LoraServer(copy.deepcopy(base), tok, name=args.model, max_loaded=32, max_batch=32, max_prefill_tokens=8192)
    files = [read_adapter(path) for path in paths]
    for name, file in zip(names, files, strict=False):
        server.bank.load_file(name, file)
    # (c), (d): PEFT with the same 8 adapters.
    peft_model = PeftModel.from_pretrained(copy.deepcopy(base), str(paths[0]), adapter_name=names[0]).eval()
    for name, path in zip(names[1:], paths[1:8], strict=True):
        peft_model.load_adapter(str(path), adapter_name=name)

    def switching():
        out = []
        for name, row in zip(names, rows, strict=True):
            peft_model.set_adapter(name)
            out.append(hf_batch(peft_model, tok, [row], new)[0])
        return out

    setups = {
        "a": lambda: run_engine(Engine(base, tok), rows, [None] * 8, new),  # base alone, same engine, no bank
        "a_hf": lambda: hf_batch(base, tok, rows, new),  # base alone, HF generate (reference)
        "b": lambda: run_engine(server, rows, names, new),
        "c": lambda: hf_batch(peft_model, tok, rows, new, adapter_names=names),
        "d": switching,
    }
    times = interleaved(setups, reps)
    for key in setups:
        res[key] = {clock: statistics.median(times[key][clock]) for clock in ("wall", "cpu")}
        res[key].update(wall_runs=times[key]["wall"], cpu_runs=times[key]["cpu"],
                        wall_vs_b=ratio(times, key, "b", "wall"), cpu_vs_b=ratio(times, key, "b", "cpu"))
    for clock in ("wall", "cpu"):
        res[f"ratio_b_over_a_{clock}"] = ratio(times, "b", "a", clock)
        res[f"ratio_c_over_b_{clock}"] = ratio(times, "c", "b", clock)
        res[f"ratio_d_over_b_{clock}"] = ratio(times, "d", "b", clock)
    lorakit_texts = times["b"]["result"]
    peft_texts = [tok.decode(t, skip_special_tokens=True) for t in times["c"]["result"]]
    switch_texts = [tok.decode(t, skip_special_tokens=True) for t in times["d"]["result"]]
    res["rows_lorakit_equals_peft_mixed"] = sum(a == b for a, b in zip(lorakit_texts, peft_texts, strict=True))
    res["rows_lorakit_equals_peft_switching"] = sum(a == b for a, b in zip(lorakit_texts, switch_texts, strict=True))
    res["rows_differ_from_base"] = sum(t != b for t, b in zip(lorakit_texts, times["a"]["result"], strict=True))

    # Why (d)/(b) is bounded on a CPU: the cost of one decode step at batch 1 and at batch 8 (base).
    steps: list[float] = []
    for batch in (1, 8, 1, 8, 1, 8):
        engine = Engine(base, tok, on_step=lambda size, seconds: steps.append(seconds))
        steps.clear()
        run_engine(engine, rows[:batch], [None] * batch, new)
        res.setdefault(f"decode_step_ms_batch{batch}", []).append(1000 * statistics.median(steps[1:]))
    for batch in (1, 8):
        res[f"decode_step_ms_batch{batch}"] = statistics.median(res[f"decode_step_ms_batch{batch}"])

    # Adapter load + ready (file already read) and the file read itself, over load/unload cycles.
    ready, ready_cpu, read = [], [], []
    for i in range(30):
        start = time.perf_counter()
        file = read_adapter(paths[8 + i % 24])
        read.append((time.perf_counter() - start) * 1000)
        entry = server.bank.load_file(f"probe{i}", file)
        ready.append(entry.ready_ms)
        ready_cpu.append(entry.ready_cpu_ms)
        server.bank.unload(f"probe{i}")
    res["adapter_ready_ms"] = {"median": statistics.median(ready), "p90": sorted(ready)[26], "max": max(ready),
                               "cpu_median": statistics.median(ready_cpu)}
    res["adapter_read_ms_median"] = statistics.median(read)

    # Time per token as distinct adapters grow: one batch of scale_rows rows, interleaved rounds.
    for name, file in zip([f"a{i}" for i in range(8, 32)], files[8:], strict=True):
        server.bank.load_file(name, file)
    scale_rows = prompts(tok, args.scale_rows, args.scale_prompt_tokens)
    steps: list[float] = []
    server.engine.on_step = lambda size, seconds: steps.append(seconds)
    decode: dict[str, list[float]] = {}

    def scaled(distinct: int):
        adapters = [None if distinct == 0 else f"a{i % distinct}" for i in range(args.scale_rows)]

        def once():
            steps.clear()
            run_engine(server, scale_rows, adapters, args.scale_new_tokens)
            decode.setdefault(str(distinct), []).append(statistics.median(steps[1:]))  # steps after prefill
        return once
    scale = interleaved({str(d): scaled(d) for d in (0, 1, 8, 32)}, reps)
    tokens = args.scale_rows * args.scale_new_tokens
    res["scaling"] = {k: {"wall_s": statistics.median(v["wall"]), "cpu_s": statistics.median(v["cpu"]),
                          "ms_per_token": 1000 * statistics.median(v["wall"]) / tokens,
                          "cpu_ms_per_token": 1000 * statistics.median(v["cpu"]) / tokens,
                          "decode_step_ms": 1000 * statistics.median(decode[k][1:])}
                      for k, v in scale.items()}
    res["scale_rows"], res["scale_prompt_tokens"], res["scale_new_tokens"] = (
        args.scale_rows, args.scale_prompt_tokens, args.scale_new_tokens)
    res["load_average_end"] = os.getloadavg()
    write(res, Path(args.out), argv)
    return 0


def write(res: dict, out: Path, argv: list[str] | None = None) -> None:
    """``OUT.json`` as measured (with the run's provenance under ``machine``), and ``OUT.md``, a markdown table."""
    s, r = res["scaling"], res["adapter_ready_ms"]

    def row(label: str, key: str) -> str:
        v = res[key]
        return f"| {label} | {v['wall']:.2f} | {v['cpu']:.2f} | {v['wall_vs_b']:.2f}× | {v['cpu_vs_b']:.2f}× |"
    title = (f"Mixed-adapter batches: {res['model']}, {res['prompts']} prompts × {res['prompt_tokens']} tokens, "
             f"{res['new_tokens']} new tokens")
    lines = [
        f"CPU ({res['cpus']} cores, shared with other jobs), {res['threads']} torch threads, torch {res['torch']}. "
        f"Greedy, EOS ignored. One warm-up, then {res['reps']} rounds in which every setup runs once back to back; "
        f"medians; the \"vs (b)\" columns and ratios are medians of per-round ratios. Load average at start/end: {res['load_average_start'][0]:.1f} / {res['load_average_end'][0]:.1f}, "
        "so wall times are noisy; process CPU time is the steadier measure.",
        "",
        "| setup | wall s | CPU s | wall vs (b) | CPU vs (b) |",
        "|---|---:|---:|---:|---:|",
        row("(a) base alone, lorakit engine (no bank)", "a"),
        row("(a') base alone, HF generate", "a_hf"),
        row("(b) lorakit, 8 adapters in one batch", "b"),
        row("(c) PEFT, generate(adapter_names=[8 adapters])", "c"),
        row("(d) PEFT, set_adapter + generate per request", "d"),
        "",
        f"- (b)/(a): wall **{res['ratio_b_over_a_wall']:.3f}**, CPU **{res['ratio_b_over_a_cpu']:.3f}** (target ≤ 1.10)",
        f"- (d)/(b): wall **{res['ratio_d_over_b_wall']:.2f}**, CPU **{res['ratio_d_over_b_cpu']:.2f}** (target ≥ 4)",
        f"- (c)/(b): wall {res['ratio_c_over_b_wall']:.2f}, CPU {res['ratio_c_over_b_cpu']:.2f}",
        f"- One decode step of the base (lorakit engine): {res['decode_step_ms_batch1']:.0f} ms at batch 1, "
        f"{res['decode_step_ms_batch8']:.0f} ms at batch 8 (wall). On one CPU core a batch-8 step is not free the "
        "way it is on a GPU, which bounds what batching can win over one-request-at-a-time (d).",
        f"- Greedy text of lorakit's rows equal to PEFT's: {res['rows_lorakit_equals_peft_mixed']}/8 (mixed batch), "
        f"{res['rows_lorakit_equals_peft_switching']}/8 (one at a time); rows whose text differs from the base "
        f"model's: {res['rows_differ_from_base']}/8.",
        f"- Adapter load + ready (q/v, r=8, 60 modules, file already read), 30 loads: median {r['median']:.2f} ms, "
        f"p90 {r['p90']:.2f} ms, max {r['max']:.2f} ms wall; median {r['cpu_median']:.2f} ms CPU "
        f"(target < 20 ms). Reading the file: {res['adapter_read_ms_median']:.2f} ms.",
        "",
        f"Distinct adapters in one batch of {res['scale_rows']} rows × {res['scale_prompt_tokens']}-token prompts, "
        f"{res['scale_new_tokens']} new tokens each (decode step = one forward of all {res['scale_rows']} rows):",
        "",
        "| distinct adapters | wall s | CPU s | ms / token (wall) | ms / token (CPU) | decode step ms (wall) |",
        "|---:|---:|---:|---:|---:|---:|",
        *[f"| {k if k != '0' else '0 (base)'} | {v['wall_s']:.2f} | {v['cpu_s']:.2f} | {v['ms_per_token']:.1f} "
          f"| {v['cpu_ms_per_token']:.1f} | {v['decode_step_ms']:.0f} |" for k, v in s.items()],
    ]
    write_page(out.stem, title, lines, res, machine(argv, "benchmarks.serve_mixed"), out=out.parent)


if __name__ == "__main__":
    sys.exit(main())

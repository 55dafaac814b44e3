"""Training speed and memory: lorakit LoRA vs PEFT LoRA vs full fine-tuning, side by side.

For each model (``minilm`` classification, ``smollm2`` causal LM) and each method, a fresh Python
process loads the model, builds the same optimizer (AdamW) over the trainable parameters, runs
``--warmup`` untimed steps and then ``--steps`` timed steps on fixed-shape batches, and reports tokens
per second and its own peak resident memory (``ru_maxrss``). Methods share model, targets (q and v
projections, plus the classification head for minilm), rank, alpha, batch, sequence length and
optimizer; only the LoRA implementation differs. Repetitions run round-robin over the configurations
(A B C A B C …) so that load from other processes on a shared machine hits them alike; the report
gives medians.

    python benchmarks/train_speed.py                       # writes benchmarks/results/train_speed.{json,md}
    python benchmarks/train_speed.py --models minilm --reps 3 --steps 10

PEFT is imported here only, never by lorakit.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"
METHODS = ("lorakit", "peft", "full")
# model -> (task, batch size, sequence length, target module names for PEFT)
SHAPES = {
    "minilm": ("classify", 32, 64, ["query", "value"]),
    "smollm2": ("generate", 4, 128, ["q_proj", "v_proj"]),
}
RANK, ALPHA, LR = 8, 16.0, 1e-4


def worker(model_name: str, method: str, warmup: int, steps: int, threads: int) -> dict:
    """One configuration in this (fresh) process: returns tokens/s and peak RSS."""
    import torch

    torch.set_num_threads(threads)
    from lorakit.models import load_model

    task, batch, length, peft_targets = SHAPES[model_name]
    torch.manual_seed(0)
    loaded = load_model(model_name, task, num_labels=2 if task == "classify" else None)
    model = loaded.model
    heads = ("classifier",) if task == "classify" else ()
    if method == "lorakit":
        from lorakit.core import LoraSpec, inject

        inject(model, LoraSpec(r=RANK, alpha=ALPHA, dropout=0.0, targets=("qv",), modules_to_save=heads))
    elif method == "peft":
        from peft import LoraConfig, get_peft_model

        config = LoraConfig(r=RANK, lora_alpha=ALPHA, lora_dropout=0.0, target_modules=peft_targets,
                            modules_to_save=list(heads) or None)
        model = get_peft_model(model, config)
    else:
        for p in model.parameters():
            p.requires_grad = True
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=LR)
    vocab = model.config.vocab_size if hasattr(model, "config") else 1000
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(1000, min(vocab, 20000), (batch, length), generator=gen)
    mask = torch.ones_like(ids)
    labels = torch.randint(0, 2, (batch,), generator=gen) if task == "classify" else ids.clone()
    model.train()

    def step() -> None:
        loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    for _ in range(warmup):
        step()
    started = time.perf_counter()
    for _ in range(steps):
        step()
    seconds = time.perf_counter() - started
    return {
        "model": model_name, "method": method, "tokens_per_s": batch * length * steps / seconds,
        "seconds_per_step": seconds / steps, "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "trainable_params": sum(p.numel() for p in trainable),
    }


def _spawn(model: str, method: str, args: argparse.Namespace) -> dict:
    cmd = [sys.executable, __file__, "--worker", model, method, "--warmup", str(args.warmup),
           "--steps", str(args.steps), "--threads", str(args.threads), *[f"--shape={s}" for s in args.shape]]
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "TOKENIZERS_PARALLELISM": "false"}
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=1800)
    if done.returncode != 0:
        raise RuntimeError(f"{model}/{method} failed:\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def summarise(runs: list[dict]) -> list[dict]:
    """Medians per (model, method) and the ratios the targets are stated in."""
    rows = []
    for model in dict.fromkeys(r["model"] for r in runs):
        med = {}
        for method in METHODS:
            mine = [r for r in runs if r["model"] == model and r["method"] == method]
            if mine:
                med[method] = {
                    "tokens_per_s": statistics.median(r["tokens_per_s"] for r in mine),
                    "peak_rss_mb": statistics.median(r["peak_rss_mb"] for r in mine),
                    "trainable_params": mine[0]["trainable_params"], "reps": len(mine),
                    "tokens_per_s_all": [round(r["tokens_per_s"], 1) for r in mine],
                }
        for method, m in med.items():
            row = {"model": model, "method": method, **m}
            if method == "lorakit" and "peft" in med:
                row["speed_vs_peft"] = m["tokens_per_s"] / med["peft"]["tokens_per_s"]
                row["memory_vs_peft"] = m["peak_rss_mb"] / med["peft"]["peak_rss_mb"]
            if method in ("lorakit", "peft") and "full" in med:
                row["speed_vs_full"] = m["tokens_per_s"] / med["full"]["tokens_per_s"]
            rows.append(row)
    return rows


def markdown(rows: list[dict], args: argparse.Namespace) -> str:
    """The results as a markdown table with the setup above it."""
    lines = [
        "# Training speed: lorakit LoRA vs PEFT LoRA vs full fine-tuning", "",
        f"CPU, {args.threads} thread(s), {platform.processor() or platform.machine()}; "
        f"median of {args.reps} repetitions, each a fresh process: {args.warmup} warm-up + {args.steps} timed "
        f"steps; AdamW; LoRA r={RANK}, alpha={ALPHA:g}, q/v projections (+ head for minilm); "
        "peak memory = the process's ru_maxrss (model load included).", "",
        "| model | shape (batch×len) | method | trainable params | tokens/s | peak RSS (MiB) | vs PEFT speed | vs PEFT memory | vs full speed |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        _, b, n, _ = SHAPES[r["model"]]
        ratio = [f"{r[k]:.2f}×" if k in r else "" for k in ("speed_vs_peft", "memory_vs_peft", "speed_vs_full")]
        lines.append(f"| {r['model']} | {b}×{n} | {r['method']} | {r['trainable_params']:,} | {r['tokens_per_s']:.0f} "
                     f"| {r['peak_rss_mb']:.0f} | {' | '.join(ratio)} |")
    return "\n".join(lines) + "\n"


def main() -> int:
    """Run every configuration round-robin and write JSON + markdown."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--worker", nargs=2, metavar=("MODEL", "METHOD"), help=argparse.SUPPRESS)
    parser.add_argument("--models", nargs="+", default=list(SHAPES), choices=list(SHAPES))
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--threads", type=int, default=1, help="torch threads per worker (1: robust on a busy machine)")
    parser.add_argument("--shape", action="append", default=[], metavar="MODEL=BxL",
                        help="override a model's batch×length, e.g. smollm2=4x64")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    for spec in args.shape:
        name, _, shape = spec.partition("=")
        batch, _, length = shape.partition("x")
        task, _, _, targets = SHAPES[name]
        SHAPES[name] = (task, int(batch), int(length), targets)
    if args.worker:
        print(json.dumps(worker(*args.worker, args.warmup, args.steps, args.threads)))
        return 0
    runs = []
    for rep in range(args.reps):
        for model in args.models:
            for method in args.methods:
                result = _spawn(model, method, args)
                runs.append({**result, "rep": rep})
                print(f"rep {rep} {model:8s} {method:8s} {result['tokens_per_s']:8.0f} tokens/s "
                      f"{result['peak_rss_mb']:7.0f} MiB", flush=True)
    rows = summarise(runs)
    args.out.mkdir(parents=True, exist_ok=True)
    setup = {k: v for k, v in vars(args).items() if k in ("reps", "warmup", "steps", "threads")}
    setup["shapes"] = {m: {"batch": b, "length": n} for m, (_, b, n, _) in SHAPES.items()}
    (args.out / "train_speed.json").write_text(json.dumps({"setup": setup, "summary": rows, "runs": runs}, indent=2) + "\n")
    (args.out / "train_speed.md").write_text(markdown(rows, args))
    print(markdown(rows, args))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

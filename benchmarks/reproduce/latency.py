"""Table 1 analogue: forward latency of base, merged LoRA and unmerged LoRA (qv and all-linear).

Claim tested (paper §4, Table 1): a merged adapter adds no inference latency (ratio to base ≤ 1.01);
the unmerged overhead is reported. Both embedded models, batch 1 × 128 tokens and batch 16 × 256
tokens. The five variants are timed in interleaved rounds (base, merged, unmerged, ... again) so that
machine noise hits them alike; each ratio is the median of per-round ratios. Run it on an otherwise
idle machine: latency, unlike the training tables, is not measured beside another run.

Finishes in about 10 minutes on 2 CPU cores (smollm2 at 16 × 256 dominates).

    python -m benchmarks.reproduce.latency [--models minilm,smollm2] [--reps 5]
"""

from __future__ import annotations

import argparse
import copy
import math
import statistics
import time
from pathlib import Path

import torch

import lorakit
from benchmarks.common import machine, markdown_table, provenance_line, write_results
from lorakit.core import lora_layers
from lorakit.models import load_model

SHAPES = ((1, 128), (16, 256))


def variants(base: torch.nn.Module) -> dict[str, torch.nn.Module]:
    """base, and for qv / all-linear r=8 adapters (B non-zero, as after training): unmerged and merged."""
    out = {"base": base}
    for targets in ("qv", "all-linear"):
        model = copy.deepcopy(base)
        lorakit.inject(model, lorakit.LoraSpec(r=8, alpha=16, targets=(targets,)))
        gen = torch.Generator().manual_seed(0)
        with torch.no_grad():
            for layer in lora_layers(model).values():
                layer.lora_B.copy_(torch.randn(layer.lora_B.shape, generator=gen) * 0.01)
        merged = copy.deepcopy(model)
        lorakit.unload(merged, merge_first=True)  # a plain model again: exactly the base architecture
        out[f"unmerged {targets}"] = model
        out[f"merged {targets}"] = merged
    return out


def measure(name: str, reps: int, shapes: tuple[tuple[int, int], ...] = SHAPES, budget_s: float = 15.0) -> list[dict]:
    """Median forward latency of every variant at every shape, in interleaved rounds.

    Each round times every variant once, in the same order; ``ratio_to_base`` is the median over rounds
    of (variant / base in that round), so slow drifts of the machine cancel. Short shapes get more
    rounds: at least ``reps``, and as many as fit in about ``budget_s`` seconds of base forwards (<= 60).
    """
    loaded = load_model(name)
    models = variants(loaded.model.eval())
    vocab = loaded.model.config.vocab_size
    rows = []
    for batch, seq in shapes:
        ids = torch.randint(0, vocab, (batch, seq), generator=torch.Generator().manual_seed(1))
        samples: dict[str, list[float]] = {k: [] for k in models}
        with torch.inference_mode():
            start = time.perf_counter()
            for m in models.values():  # warm-up: allocator, thread pool, caches
                m(input_ids=ids)
            warm = (time.perf_counter() - start) / len(models)
            rounds = max(reps, min(60, math.ceil(budget_s / warm)))
            for _ in range(rounds):
                for key, m in models.items():
                    start = time.perf_counter()
                    m(input_ids=ids)
                    samples[key].append(time.perf_counter() - start)
        for key, times in samples.items():
            med = statistics.median(times)
            ratios = [t / b for t, b in zip(times, samples["base"], strict=True)]  # per round
            ratio, spread = statistics.median(ratios), statistics.quantiles(ratios, n=4)
            rows.append({"model": name, "batch": batch, "seq": seq, "variant": key, "median_ms": 1000 * med,
                         "ratio_to_base": ratio, "ratio_q1": spread[0], "ratio_q3": spread[2], "rounds": rounds})
            print(f"{name} {batch}x{seq} {key:<22} {1000 * med:9.1f} ms  x{ratio:.3f} "
                  f"(IQR {spread[0]:.3f}-{spread[2]:.3f}, {rounds} rounds)", flush=True)
    return rows


def main() -> None:
    """Measure and write ``results/latency.{json,md}``."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default="minilm,smollm2")
    parser.add_argument("--reps", type=int, default=5, help="rounds at least (short shapes get more)")
    parser.add_argument("--shapes", default=",".join(f"{b}x{s}" for b, s in SHAPES), help="BATCHxSEQ,...")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    shapes = tuple(tuple(int(v) for v in shape.split("x")) for shape in args.shapes.split(","))
    torch.manual_seed(0)
    rows = [row for name in args.models.split(",") for row in measure(name, args.reps, shapes)]
    for path in write(rows):
        print("wrote", path)


def write(rows: list[dict], argv: list[str] | None = None, out: Path | None = None) -> tuple[Path, Path | None]:
    """``results/latency.{json,md}``: the rows under this run's provenance block and line."""
    info = machine(argv, "benchmarks.reproduce.latency")
    table = ("# Forward latency: base vs merged vs unmerged LoRA (r=8)\n\n"
             f"{provenance_line(info)}\n\n    {info['command']}\n\n"
             "Every variant timed once per round, rounds interleaved; `ratio_to_base` is the median over rounds "
             "of variant / base in the same round, with its interquartile range (q1-q3).\n\n"
             + markdown_table(rows, ["model", "batch", "seq", "variant", "median_ms", "ratio_to_base", "ratio_q1",
                                     "ratio_q3", "rounds"]))
    return write_results("latency", {"machine": info, "rows": rows}, table, out=out)


if __name__ == "__main__":
    main()

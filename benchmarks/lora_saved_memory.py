"""Bytes the LoRA path keeps for backward beyond its input x (which the base layer keeps anyway).

"old": ``F.linear(F.linear(dropout(x).to(fp32), A), B)`` (lorakit before issue 12: a dropped copy of x,
and an fp32 copy of a bf16 x); "new": ``lorakit.core.lora_linear`` (a bool mask when dropout is on, A/B
cast to x's dtype). One SmolLM2-135M-sized projection: batch 8 × 512 tokens × 576 features, r = 8.

    python -m benchmarks.lora_saved_memory      # writes benchmarks/results/lora_saved_memory.{json,md}
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from benchmarks.common import RESULTS, machine, markdown_table, provenance_line, write_results
from lorakit.core.lora_linear import lora_linear

SHAPE = {"batch": 8, "tokens": 512, "features": 576, "r": 8}


def saved_mib(fn, x: torch.Tensor) -> float:
    """MiB of distinct tensors autograd saves while running ``fn(x)``, x itself not counted."""
    seen: dict[tuple, int] = {}

    def pack(t):
        seen[(t.data_ptr(), t.dtype, tuple(t.shape))] = t.numel() * t.element_size()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn(x)
    return sum(v for (ptr, _, _), v in seen.items() if ptr != x.data_ptr()) / 2**20


def measure() -> list[dict[str, Any]]:
    """One row per (x dtype, dropout): MiB saved for backward by the old and by the new LoRA path."""
    torch.manual_seed(0)
    r, features = SHAPE["r"], SHAPE["features"]
    A, B = torch.randn(r, features, requires_grad=True), torch.randn(features, r, requires_grad=True)
    rows = []
    for dtype in (torch.float32, torch.bfloat16):
        x = torch.randn(SHAPE["batch"], SHAPE["tokens"], features, dtype=dtype, requires_grad=True)
        for p in (0.0, 0.05):
            old = saved_mib(lambda x, p=p: F.linear(F.linear(F.dropout(x, p, True).to(torch.float32), A), B), x)
            new = saved_mib(lambda x, p=p: lora_linear(x, A.to(x.dtype), B.to(x.dtype), p), x)
            rows.append({"x_dtype": str(dtype).removeprefix("torch."), "dropout": p, "old_mib": old, "new_mib": new})
    return rows


def write(rows: list[dict[str, Any]], out: Path = RESULTS,
          argv: list[str] | None = None) -> tuple[Path, Path | None]:
    """``out/lora_saved_memory.{json,md}``: the rows, the table under a title and the run's provenance."""
    info = machine(argv, "benchmarks.lora_saved_memory")
    md = (f"# MiB the LoRA path saves for backward beyond x (batch {SHAPE['batch']} × {SHAPE['tokens']} tokens × "
          f"{SHAPE['features']} features, r = {SHAPE['r']})\n\n{provenance_line(info)}\n\n"
          + markdown_table(rows, ["x_dtype", "dropout", "old_mib", "new_mib"]))
    return write_results("lora_saved_memory", {"machine": info, "shape": SHAPE, "rows": rows}, md, out=out)


def main(argv: list[str] | None = None) -> None:
    """Print one line per (x dtype, dropout); write the results."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=RESULTS, help="the results folder [default: %(default)s]")
    args = parser.parse_args(argv)
    rows = measure()
    for row in rows:
        print(f"x {row['x_dtype']}, dropout {row['dropout']}: old {row['old_mib']:.2f} MiB, "
              f"new {row['new_mib']:.2f} MiB")
    for path in write(rows, args.out, argv):
        print("wrote", path)


if __name__ == "__main__":
    main()

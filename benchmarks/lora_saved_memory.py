"""Bytes the LoRA path keeps for backward beyond its input x (which the base layer keeps anyway).

"old": ``F.linear(F.linear(dropout(x).to(fp32), A), B)`` (lorakit before issue 12: a dropped copy of x,
and an fp32 copy of a bf16 x); "new": ``lorakit.core.lora_linear`` (a bool mask when dropout is on, A/B
cast to x's dtype). One SmolLM2-135M-sized projection: batch 8 × 512 tokens × 576 features, r = 8.

    python -m benchmarks.lora_saved_memory
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from lorakit.core.lora_linear import lora_linear


def saved_mib(fn, x: torch.Tensor) -> float:
    """MiB of distinct tensors autograd saves while running ``fn(x)``, x itself not counted."""
    seen: dict[tuple, int] = {}

    def pack(t):
        seen[(t.data_ptr(), t.dtype, tuple(t.shape))] = t.numel() * t.element_size()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn(x)
    return sum(v for (ptr, _, _), v in seen.items() if ptr != x.data_ptr()) / 2**20


def main() -> None:
    """Print one line per (x dtype, dropout)."""
    torch.manual_seed(0)
    A, B = torch.randn(8, 576, requires_grad=True), torch.randn(576, 8, requires_grad=True)
    for dtype in (torch.float32, torch.bfloat16):
        x = torch.randn(8, 512, 576, dtype=dtype, requires_grad=True)
        for p in (0.0, 0.05):
            old = saved_mib(lambda x, p=p: F.linear(F.linear(F.dropout(x, p, True).to(torch.float32), A), B), x)
            new = saved_mib(lambda x, p=p: lora_linear(x, A.to(x.dtype), B.to(x.dtype), p), x)
            print(f"x {str(dtype).removeprefix('torch.')}, dropout {p}: old {old:.2f} MiB, new {new:.2f} MiB")


if __name__ == "__main__":
    main()

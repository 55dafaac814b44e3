"""Exact key sets and readable errors for adapter tensors: the one validation of what a file holds
(``lorakit.io`` checks a file against an injected model with it, ``serve`` against its base)."""

from __future__ import annotations

import torch
from torch import Tensor

from lorakit.core._torch import foreach_norm


def _listing(title: str, items: list[str], limit: int = 8) -> str:
    shown = ", ".join(items[:limit])
    more = f" … and {len(items) - limit} more" if len(items) > limit else ""
    return f"{title} ({len(items)}): {shown}{more}"


def check_tensors(tensors: dict[str, Tensor], expected: dict[str, tuple[int, ...]], what: str = "adapter") -> None:
    """Raise one ``ValueError`` listing every missing, unexpected, mis-shaped, non-float and
    non-finite tensor of ``tensors`` against ``expected`` (key -> shape)."""
    missing = sorted(set(expected) - set(tensors))
    unexpected = sorted(set(tensors) - set(expected))
    shapes = [f"{k} (file {tuple(tensors[k].shape)}, model {tuple(expected[k])})"
              for k in sorted(set(expected) & set(tensors)) if tuple(tensors[k].shape) != tuple(expected[k])]
    dtypes = [f"{k} ({v.dtype})" for k, v in tensors.items() if k in expected and not v.is_floating_point()]
    problems = [_listing(title, items) for title, items in
                (("missing", missing), ("unexpected", unexpected), ("shape mismatch", shapes),
                 ("not floating point", dtypes)) if items]
    if problems:
        raise ValueError(f"{what} does not fit this model: " + "; ".join(problems))
    # One fused norm over every tensor: finite unless some value is NaN/Inf (or so large that the
    # norm overflows; only then is each tensor checked exactly, in float32 for 1-byte floats).
    keys = list(expected)
    norms = torch.stack(foreach_norm([tensors[k].float() for k in keys])) if keys else torch.zeros(0)
    suspects = [] if torch.isfinite(norms).all() else [k for k, n in zip(keys, norms, strict=True) if not torch.isfinite(n)]
    bad = [k for k in suspects if not torch.isfinite(tensors[k].float()).all()]
    if bad:
        raise ValueError(f"{what} holds non-finite values (NaN/Inf): " + _listing("tensors", bad))

"""Adapter algebra: one LoRA pair for a weighted sum of updates ``ΔW = Σ wᵢ·sᵢ·Bᵢ·Aᵢ``.

Two ways to write the sum as a single (A, B) pair, both with scaling 1:

- **concat** (exact): ``A = [A₁; A₂; …]`` stacked along the rank, ``B = [w₁s₁B₁, w₂s₂B₂, …]``;
  then ``B·A = Σ wᵢsᵢBᵢAᵢ`` and the rank is ``Σ rᵢ``.
- **svd** (compressed): the truncated SVD ``U_r S_r V_rᵀ`` of the sum, split evenly as
  ``B = U_r·√S_r`` and ``A = √S_r·V_rᵀ``: the best rank-r approximation (Eckart–Young).

Factors keep their stored layout (conv A (r, C_in, k, k), B (out, r, 1, 1)); the SVD works on the
flattened 2-D view and reshapes back.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Literal, Protocol

import torch
from torch import Tensor

from lorakit.analysis.lowrank import DTYPE, factor_matrices, lowrank_svd
from lorakit.errors import LorakitError

# (A, B, scaling) of one adapter's module; ΔW = scaling·B·A.
Factors = tuple[Tensor, Tensor, float]
Method = Literal["svd", "concat"]
METHODS = ("svd", "concat")


class FactorsLike(Protocol):
    """Anything with ``A``, ``B`` and ``scaling`` (e.g. ``lorakit.io.LoraFactors``)."""

    A: Tensor
    B: Tensor
    scaling: float


def combine_concat(factors: Sequence[Factors], weights: Sequence[float]) -> tuple[Tensor, Tensor]:
    """Exact ``Σ wᵢ·sᵢ·Bᵢ·Aᵢ`` as one pair of rank ``Σ rᵢ`` with scaling 1: A stacked, B scaled and stacked."""
    dtype = _check(factors, weights)
    A, B = _stacked(factors, weights)
    return A.to(dtype), B.to(dtype)


def combine_svd(factors: Sequence[Factors], weights: Sequence[float], rank: int) -> tuple[Tensor, Tensor]:
    """Best rank-``rank`` pair (scaling 1) for ``Σ wᵢ·sᵢ·Bᵢ·Aᵢ``: truncated SVD split as U√S, √S·Vᵀ.

    The SVD is taken from the stacked factors (see :func:`~lorakit.analysis.lowrank.lowrank_svd`),
    never the dense sum. When the sum has fewer than ``rank`` directions the remaining rows of A and
    columns of B are zero, so every module of a combined adapter has the configured rank.
    """
    if isinstance(rank, bool) or not isinstance(rank, int) or rank < 1:
        raise LorakitError(f"rank must be a positive integer, got {rank!r}")
    dtype = _check(factors, weights)
    A_cat, B_cat = _stacked(factors, weights)
    U, S, V = lowrank_svd(A_cat, B_cat)
    k = min(rank, S.numel())
    root = S[:k].sqrt()
    d_in, d_out = V.shape[0], U.shape[0]
    A_new = torch.zeros(rank, d_in, dtype=DTYPE, device=A_cat.device)
    B_new = torch.zeros(d_out, rank, dtype=DTYPE, device=B_cat.device)
    A_new[:k] = root[:, None] * V[:, :k].T
    B_new[:, :k] = U[:, :k] * root[None, :]
    # Back to the stored layout (conv: A (rank, C_in, k, k), B (out, rank, 1, 1)).
    return (A_new.reshape(rank, *A_cat.shape[1:]).to(dtype),
            B_new.reshape(d_out, rank, *B_cat.shape[2:]).to(dtype))


def _stacked(factors: Sequence[Factors], weights: Sequence[float]) -> tuple[Tensor, Tensor]:
    """A stacked along the rank and B scaled by wᵢ·sᵢ and stacked, in float64 (stored layout).

    float64 so that bf16/fp16 factors are rounded once, on the way out, and the SVD sees exact products.
    """
    A = torch.cat([a.detach().to(DTYPE) for a, _, _ in factors], dim=0)
    B = torch.cat([b.detach().to(DTYPE) * (w * s) for (_, b, s), w in zip(factors, weights, strict=True)], dim=1)
    return A, B


def combine_modules(
    adapters: Sequence[Mapping[str, FactorsLike]],
    weights: Sequence[float],
    *,
    method: Method = "svd",
    rank: int | None = None,
) -> dict[str, tuple[Tensor, Tensor]]:
    """Combine whole adapters module by module: ``{module path: (A, B)}`` with scaling 1.

    The combination is the weighted sum of the adapters' updates over the whole model, an absent
    module counting as ΔW = 0. So a module present in only some adapters is built from those alone,
    still with their weights (``A:0.7 B:0.3`` gives ``0.7·ΔW_A`` where only A adapts a module): that
    keeps ``Σ wᵢ·ΔWᵢ`` exact everywhere. ``rank`` is required for ``method="svd"``.
    """
    if method not in METHODS:
        raise LorakitError(f"method must be one of {', '.join(METHODS)}, got {method!r}")
    if method == "svd" and rank is None:
        raise LorakitError("method 'svd' needs a target rank")
    if len(adapters) != len(weights) or not adapters:
        raise LorakitError(f"need one weight per adapter (and at least one): {len(adapters)} adapters, "
                           f"{len(weights)} weights")
    paths = list(dict.fromkeys(path for adapter in adapters for path in adapter))
    out: dict[str, tuple[Tensor, Tensor]] = {}
    for path in paths:
        present = [(adapter[path], w) for adapter, w in zip(adapters, weights, strict=True) if path in adapter]
        factors = [(f.A, f.B, float(f.scaling)) for f, _ in present]
        ws = [w for _, w in present]
        try:
            out[path] = combine_concat(factors, ws) if method == "concat" else combine_svd(factors, ws, rank)
        except ValueError as err:
            raise LorakitError(f"module {path}: {err}") from None
    return out


def _check(factors: Sequence[Factors], weights: Sequence[float]) -> torch.dtype:
    """Validate one module's factors and weights; return the dtype the result is stored in."""
    if not factors:
        raise LorakitError("nothing to combine: no factors given")
    if len(factors) != len(weights):
        raise LorakitError(f"need one weight per adapter: {len(factors)} factor pairs, {len(weights)} weights")
    a_tail, b_shape = factors[0][0].shape[1:], factors[0][1].shape
    for i, (a, b, _) in enumerate(factors):
        factor_matrices(a, b)  # rank agreement within one adapter
        if a.shape[1:] != a_tail or b.shape[0] != b_shape[0] or b.shape[2:] != b_shape[2:]:
            raise LorakitError(
                f"adapter {i} has factors of another layer shape: A {tuple(a.shape)}, B {tuple(b.shape)} "
                f"vs A (r, {', '.join(map(str, a_tail))}), B {tuple(b_shape)} (r free)"
            )
    dtype = factors[0][0].dtype
    for a, b, _ in factors:
        dtype = torch.promote_types(torch.promote_types(dtype, a.dtype), b.dtype)
    return dtype

"""Singular-value spectrum of a LoRA update ``ΔW = s·B·A``: how many directions it really uses.

A rank-r adapter has at most r non-zero singular values; training often concentrates the energy
(σ²) in far fewer (the paper's §7.2 finding that a tiny r suffices). Reported per module:
singular values, cumulative energy, the Roy & Vetterli effective rank and the rank at 90 % energy.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from lorakit.analysis.lowrank import DTYPE, as_matrix, lowrank_svd
from lorakit.errors import LorakitError


@dataclass(frozen=True)
class Spectrum:
    """Spectrum of one ΔW (all tensors float64, on the CPU)."""

    # Singular values, descending (r of them from factors, min(out, in) from a dense matrix).
    singular_values: Tensor
    # energy[k-1] = Σ_{i≤k} σᵢ² / Σ σ²: the share of ‖ΔW‖²_F captured by the top-k directions.
    energy: Tensor
    # exp(entropy of σ/Σσ) (Roy & Vetterli 2007): 1 for a rank-1 update, k for k equal values.
    effective_rank: float
    # Smallest k whose top-k directions hold at least `threshold` of the energy (0 for ΔW = 0).
    rank_at_threshold: int
    # The energy share used for `rank_at_threshold` (0.9 unless asked otherwise).
    threshold: float
    # ‖ΔW‖_F = sqrt(Σ σ²).
    frobenius_norm: float
    # (out, in) of the 2-D view the spectrum was taken of.
    shape: tuple[int, int]


def effective_rank(singular_values: Tensor) -> float:
    """Roy & Vetterli's effective rank ``exp(-Σ pᵢ log pᵢ)`` with ``pᵢ = σᵢ / Σσ``; 0.0 for all-zero σ."""
    s = singular_values.to(DTYPE)
    total = s.sum()
    if total <= 0:
        return 0.0
    p = s[s > 0] / total  # 0·log 0 = 0: zero singular values add no entropy
    return math.exp(float(-(p * p.log()).sum()))


def energy_curve(singular_values: Tensor) -> Tensor:
    """Cumulative energy share ``Σ_{i≤k} σᵢ² / Σσ²`` for k = 1…n (all zeros when every σ is 0)."""
    sq = singular_values.to(DTYPE) ** 2
    total = sq.sum()
    return sq.cumsum(0) / total if total > 0 else torch.zeros_like(sq)


def rank_at_energy(singular_values: Tensor, threshold: float = 0.9) -> int:
    """Smallest k such that the top-k directions hold at least ``threshold`` of ‖ΔW‖²_F."""
    if not 0.0 < threshold <= 1.0:
        raise LorakitError(f"energy threshold must be in (0, 1], got {threshold}")
    energy = energy_curve(singular_values)
    if energy.numel() == 0 or energy[-1] == 0:
        return 0
    # A relative tolerance so that threshold=1.0 is reached despite rounding in the cumulative sum.
    return int(torch.searchsorted(energy, torch.tensor([threshold - 1e-12], dtype=DTYPE))[0]) + 1


def spectrum_of_values(singular_values: Tensor, shape: tuple[int, int], threshold: float = 0.9) -> Spectrum:
    """Assemble a :class:`Spectrum` from singular values already computed (sorted descending)."""
    s = singular_values.detach().to("cpu", DTYPE)
    return Spectrum(
        singular_values=s,
        energy=energy_curve(s),
        effective_rank=effective_rank(s),
        rank_at_threshold=rank_at_energy(s, threshold),
        threshold=threshold,
        frobenius_norm=float(s.square().sum().sqrt()),
        shape=(int(shape[0]), int(shape[1])),
    )


def spectrum(delta: Tensor, threshold: float = 0.9) -> Spectrum:
    """Spectrum of a dense ΔW (2-D, or a conv kernel flattened to (out, in·k·k))."""
    M = as_matrix(delta.detach())
    return spectrum_of_values(torch.linalg.svdvals(M.to(DTYPE)), tuple(M.shape), threshold)


def spectrum_from_factors(A: Tensor, B: Tensor, scaling: float = 1.0, threshold: float = 0.9) -> Spectrum:
    """Spectrum of ``s·B·A`` from the factors, without forming the (out × in) product."""
    _, s, _ = lowrank_svd(A.detach(), B.detach(), scaling)
    return spectrum_of_values(s, (as_matrix(B).shape[0], as_matrix(A).shape[1]), threshold)

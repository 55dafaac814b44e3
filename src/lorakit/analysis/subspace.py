"""Subspace similarity between two LoRA updates (Hu et al. 2021, §7.2, Figure 3).

For two adapters' ``A`` matrices of one module, take the right-singular (row-space) orthonormal
bases ``U₁`` (d×r₁), ``U₂`` (d×r₂), ordered by singular value, and measure how much of the top-i
directions of one lie in the span of the top-j directions of the other::

    φ(i, j) = ‖U₁[:, :i]ᵀ U₂[:, :j]‖²_F / min(i, j)        ∈ [0, 1],  i, j 1-based

φ = 1 means one span contains the other, 0 that they are orthogonal. For ``B`` (out, r) the bases
are the left-singular (column-space) vectors. Grids are returned 0-indexed: ``grid[i-1, j-1] = φ(i, j)``.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

from lorakit.analysis.lowrank import DTYPE, as_matrix, orthonormal_columns
from lorakit.errors import LorakitError

Matrix = Literal["A", "B"]


def subspace_basis(M: Tensor, matrix: Matrix = "A") -> Tensor:
    """Orthonormal basis (d×k, float64) of ``M``'s row space (``"A"``) or column space (``"B"``).

    Columns are ordered by singular value, largest first, and ``k = min(M.shape)``. Directions past
    the numerical rank of ``M`` are arbitrary (any orthonormal completion), so φ for such indices
    reflects the SVD routine rather than the adapter; an all-zero ``M`` (an untrained B) is refused.
    """
    _check_matrix(matrix)
    M2 = as_matrix(M).to(DTYPE)
    if not torch.any(M2):
        raise LorakitError(
            f"{matrix} matrix of shape {tuple(M.shape)} is all zeros (an untrained adapter?): "
            "its subspace is undefined"
        )
    U, _, Vh = torch.linalg.svd(M2, full_matrices=False)
    # A is (r, d_in): its directions in input space are the right-singular vectors (rows of Vh).
    # B is (d_out, r): its directions in output space are the left-singular vectors.
    return Vh.T if matrix == "A" else U


def subspace_dim(M: Tensor, matrix: Matrix = "A") -> int:
    """The ambient dimension d the subspaces of ``M`` live in (d_in for A, d_out for B)."""
    _check_matrix(matrix)
    M2 = as_matrix(M)
    return M2.shape[1] if matrix == "A" else M2.shape[0]


def phi_from_overlap(overlap: Tensor) -> Tensor:
    """φ grid from the overlap ``O = U₁ᵀU₂`` (r₁×r₂, optionally batched in leading dims).

    ``‖U₁[:, :i]ᵀU₂[:, :j]‖²_F`` is the sum of ``O²`` over the top-left i×j block, so a 2-D
    cumulative sum gives every (i, j) at once: no SVD or norm per cell.
    """
    block = (overlap**2).cumsum(-2).cumsum(-1)
    i = torch.arange(1, overlap.shape[-2] + 1, dtype=block.dtype, device=block.device)
    j = torch.arange(1, overlap.shape[-1] + 1, dtype=block.dtype, device=block.device)
    return block / torch.minimum(i[:, None], j[None, :])


def phi_grid(M1: Tensor, M2: Tensor, matrix: Matrix = "A") -> Tensor:
    """φ(i, j) for every i ≤ r₁, j ≤ r₂ between two adapters' A (or B) matrices of one module.

    ``M1``, ``M2``: A matrices (r, d_in[, k, k]) with ``matrix="A"``, or B matrices
    (d_out, r[, 1, 1]) with ``matrix="B"``. Returns a float64 tensor ``grid`` of shape
    (min(r₁, d), min(r₂, d)) with ``grid[i-1, j-1] = φ(i, j)``.
    """
    d1, d2 = subspace_dim(M1, matrix), subspace_dim(M2, matrix)
    if d1 != d2:
        side = "input (columns of A)" if matrix == "A" else "output (rows of B)"
        raise LorakitError(f"the two {matrix} matrices live in different {side} spaces: d = {d1} vs {d2}")
    U1, U2 = subspace_basis(M1, matrix), subspace_basis(M2, matrix)
    return phi_from_overlap(U1.T @ U2)


def random_baseline(d: int, r1: int, r2: int) -> Tensor:
    """Expected φ(i, j) for two independent, uniformly random nested subspaces of ℝᵈ.

    For a fixed i-dim projector P and a random orthonormal j-frame, each column's squared norm
    under P has mean i/d, so E‖U₁[:, :i]ᵀU₂[:, :j]‖²_F = i·j/d and E[φ(i, j)] = max(i, j)/d.
    This is what "chance" looks like; φ well above it is shared structure.
    """
    _check_dims(d, r1, r2)
    i = torch.arange(1, r1 + 1, dtype=DTYPE)
    j = torch.arange(1, r2 + 1, dtype=DTYPE)
    return torch.maximum(i[:, None], j[None, :]) / d


def random_baseline_mc(d: int, r1: int, r2: int, n_samples: int = 256, seed: int = 0) -> tuple[Tensor, Tensor]:
    """Monte-Carlo estimate of :func:`random_baseline`: (mean grid, standard error of the mean).

    Draws ``n_samples`` pairs of independent random orthonormal frames (seeded, reproducible);
    used to confirm the closed form, and to estimate chance where a closed form is not at hand.
    """
    _check_dims(d, r1, r2)
    if n_samples < 2:
        raise LorakitError(f"n_samples must be at least 2 to estimate a standard error, got {n_samples}")
    gen = torch.Generator().manual_seed(seed)
    U1 = orthonormal_columns(d, r1, gen, batch=n_samples)
    U2 = orthonormal_columns(d, r2, gen, batch=n_samples)
    phis = phi_from_overlap(U1.transpose(-1, -2) @ U2)
    return phis.mean(0), phis.std(0) / n_samples**0.5


def _check_dims(d: int, r1: int, r2: int) -> None:
    if not (1 <= r1 <= d and 1 <= r2 <= d):
        raise LorakitError(f"need 1 <= r1, r2 <= d for subspaces of R^d, got d={d}, r1={r1}, r2={r2}")


def _check_matrix(matrix: str) -> None:
    if matrix not in ("A", "B"):
        raise LorakitError(f"matrix must be 'A' or 'B', got {matrix!r}")

"""Shared linear algebra for LoRA factors: 2-D views and the SVD of ``s·B·A`` without forming it.

Every analysis works on matrices. A LoRA update is stored as factors whose layout depends on the
base layer (Linear: A (r, in), B (out, r); Conv: A (r, C_in, k, k), B (out, r, 1, 1)); these helpers
flatten them to ``A (r, in·k·k)`` and ``B (out, r)`` so that ``ΔW = s·B·A`` is a plain product.
"""

from __future__ import annotations

import torch
from torch import Tensor

from lorakit.errors import LorakitError

# All analysis runs in float64: φ values near 0 and 1 and energies of tiny singular values are
# otherwise dominated by float32 rounding (the subspace tests compare against 1e-10).
DTYPE = torch.float64


def as_matrix(weight: Tensor) -> Tensor:
    """A 2-D (out, in·k·…) view of a weight or ΔW: conv kernels are flattened, matrices pass through."""
    if weight.ndim < 2:
        raise LorakitError(f"expected a matrix or conv kernel (>= 2 dims), got shape {tuple(weight.shape)}")
    return weight if weight.ndim == 2 else weight.reshape(weight.shape[0], -1)


def factor_matrices(A: Tensor, B: Tensor) -> tuple[Tensor, Tensor]:
    """``A`` as (r, in) and ``B`` as (out, r), checking that their ranks agree."""
    A2, B2 = as_matrix(A), as_matrix(B)
    if A2.shape[0] != B2.shape[1]:
        raise LorakitError(
            f"A and B disagree on the rank: A has {A2.shape[0]} rows (shape {tuple(A.shape)}), "
            f"B has {B2.shape[1]} columns (shape {tuple(B.shape)})"
        )
    return A2, B2


def lowrank_svd(A: Tensor, B: Tensor, scaling: float = 1.0) -> tuple[Tensor, Tensor, Tensor]:
    """Thin SVD ``s·B·A = U·diag(S)·Vᵀ`` from the factors, in float64.

    Returns ``U`` (out, k), ``S`` (k,) descending and ``V`` (in, k) with ``k = min(r, out, in)``.
    Two QR decompositions reduce the problem to the SVD of an r×r core, so the cost is
    O((out + in)·r²) instead of the O(out·in·min(out, in)) of a dense SVD of ΔW.
    """
    A2, B2 = factor_matrices(A, B)
    q_b, r_b = torch.linalg.qr(B2.to(DTYPE))  # B = Q_B·R_B
    q_a, r_a = torch.linalg.qr(A2.to(DTYPE).T)  # Aᵀ = Q_A·R_A
    core = float(scaling) * (r_b @ r_a.T)  # s·B·A = Q_B·core·Q_Aᵀ
    u_c, s, vh_c = torch.linalg.svd(core, full_matrices=False)
    return q_b @ u_c, s, q_a @ vh_c.T


def orthonormal_columns(rows: int, cols: int, generator: torch.Generator, batch: int | None = None) -> Tensor:
    """A (rows, cols) matrix, or ``batch`` of them, with orthonormal columns spanning a uniformly random subspace.

    The span of i.i.d. Gaussian columns is uniform on the Grassmannian, and QR keeps the span of
    every leading block of columns, so nested prefixes are uniform too (what φ(i, j) needs).
    """
    shape = (rows, cols) if batch is None else (batch, rows, cols)
    gauss = torch.randn(shape, generator=generator, dtype=DTYPE)
    return torch.linalg.qr(gauss)[0]

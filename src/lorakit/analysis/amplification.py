"""How ΔW relates to W: does the update amplify directions W already uses? (Hu et al. 2021, §7.3, Table 7)

With ``U, S, Vᵀ = SVD(ΔW)`` and ``U_r``, ``V_r`` its top-r singular directions, project the base
weight onto them: ``‖U_rᵀ W V_r‖_F``. The paper finds this projection much smaller than for W's own
top directions and close to random ones, i.e. ΔW amplifies features that W has but does not
emphasise, and the amplification factor ``‖ΔW‖_F / ‖U_rᵀ W V_r‖_F`` is large (≈ 21.5 for r = 4 on
GPT-3's W_q). The same projection is reported for W's top-r directions and for random directions.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from lorakit.analysis.lowrank import DTYPE, as_matrix, orthonormal_columns
from lorakit.errors import LorakitError


@dataclass(frozen=True)
class Amplification:
    """One row of the paper's Table 7 for one module (norms are Frobenius norms)."""

    # Number of singular directions projected on.
    rank: int
    # ‖ΔW‖_F.
    delta_norm: float
    # ‖W‖_F.
    weight_norm: float
    # ‖U_rᵀ W V_r‖_F with U_r, V_r the top-r singular directions of ΔW.
    projection_delta: float
    # The same with the top-r singular directions of W itself (= sqrt(Σ_{i≤r} σᵢ(W)²)).
    projection_weight: float
    # The same with random orthonormal directions, averaged over `n_random` seeded draws.
    projection_random: float
    # Standard deviation of the random projection over the draws.
    projection_random_std: float
    # ‖ΔW‖_F / projection_delta (inf if W is orthogonal to ΔW's directions).
    amplification: float
    # Number of random draws behind projection_random.
    n_random: int


def projection_norm(weight: Tensor, U: Tensor, V: Tensor) -> float:
    """``‖Uᵀ W V‖_F`` for orthonormal column blocks U (out, r) and V (in, r)."""
    return float(torch.linalg.matrix_norm(U.T @ weight @ V))


def amplification(weight: Tensor, delta: Tensor, rank: int, *, n_random: int = 8, seed: int = 0) -> Amplification:
    """Table 7's comparison for one module: ΔW's, W's and random top-``rank`` directions projected on W.

    ``weight`` and ``delta`` must have the same layout (conv kernels are flattened to (out, in·k·k));
    ``rank`` is usually the adapter's r. Computed in float64 on ``weight``'s device.
    """
    W = as_matrix(weight.detach()).to(DTYPE)
    D = as_matrix(delta.detach()).to(W.device, DTYPE)
    if W.shape != D.shape:
        raise LorakitError(f"base weight and ΔW differ in shape: {tuple(weight.shape)} vs {tuple(delta.shape)}")
    if not 1 <= rank <= min(W.shape):
        raise LorakitError(f"rank must be in 1..{min(W.shape)} for a {tuple(W.shape)} matrix, got {rank}")
    if n_random < 1:
        raise LorakitError(f"n_random must be at least 1, got {n_random}")
    if not torch.any(D):
        raise LorakitError("ΔW is all zeros (an untrained adapter?): it has no singular directions")
    U_d, _, Vh_d = torch.linalg.svd(D, full_matrices=False)
    U_w, s_w, Vh_w = torch.linalg.svd(W, full_matrices=False)
    proj_delta = projection_norm(W, U_d[:, :rank], Vh_d[:rank].T)
    proj_weight = projection_norm(W, U_w[:, :rank], Vh_w[:rank].T)
    gen = torch.Generator().manual_seed(seed)
    U_r = orthonormal_columns(W.shape[0], rank, gen, batch=n_random).to(W.device)
    V_r = orthonormal_columns(W.shape[1], rank, gen, batch=n_random).to(W.device)
    draws = torch.linalg.matrix_norm(U_r.mT @ W @ V_r).cpu()  # one ‖UᵀWV‖_F per draw
    delta_norm = float(torch.linalg.matrix_norm(D))
    return Amplification(
        rank=rank,
        delta_norm=delta_norm,
        weight_norm=float(s_w.square().sum().sqrt()),
        projection_delta=proj_delta,
        projection_weight=proj_weight,
        projection_random=float(draws.mean()),
        projection_random_std=float(draws.std()) if n_random > 1 else 0.0,
        amplification=delta_norm / proj_delta if proj_delta > 0 else math.inf,
        n_random=n_random,
    )

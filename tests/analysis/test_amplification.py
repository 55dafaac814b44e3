"""Amplification (paper §7.3, Table 7): how strongly ΔW's directions are present in W."""

from __future__ import annotations

import math

import pytest
import torch

from lorakit.analysis import amplification

F64 = torch.float64


def _weight(out: int = 40, inp: int = 30, seed: int = 0):
    """W with known singular vectors and values 10, 9, …; returned with its U, V."""
    g = torch.Generator().manual_seed(seed)
    U = torch.linalg.qr(torch.randn(out, out, generator=g, dtype=F64))[0]
    V = torch.linalg.qr(torch.randn(inp, inp, generator=g, dtype=F64))[0]
    s = torch.linspace(10.0, 0.5, inp, dtype=F64)
    return U[:, :inp] @ torch.diag(s) @ V.T, U, V, s


def test_update_along_w_top_directions_projects_like_w_itself():
    W, U, V, s = _weight()
    delta = 0.1 * U[:, :4] @ V[:, :4].T
    a = amplification(W, delta, rank=4)
    top = float(s[:4].square().sum().sqrt())
    assert a.projection_delta == pytest.approx(top) and a.projection_weight == pytest.approx(top)
    assert a.weight_norm == pytest.approx(float(torch.linalg.matrix_norm(W)))
    assert a.delta_norm == pytest.approx(0.2)  # ‖0.1·(4 orthonormal rank-1 terms)‖_F = 0.1·2
    assert a.amplification == pytest.approx(0.2 / top)


def test_update_in_directions_w_ignores_is_strongly_amplified():
    W, U, V, s = _weight()
    # The weakest directions of W: its projection there is sqrt(σ_29² + σ_30²), much smaller than
    # for W's top directions, so the amplification factor is large (the paper's finding).
    delta = U[:, 28:30] @ V[:, 28:30].T
    a = amplification(W, delta, rank=2)
    assert a.projection_delta == pytest.approx(float(s[28:30].square().sum().sqrt()))
    assert a.projection_delta < a.projection_random < a.projection_weight
    # Orthogonal in the output space (U beyond W's column space): W has nothing there at all.
    a0 = amplification(W, U[:, 35:37] @ V[:, :2].T, rank=2)
    assert a0.projection_delta < 1e-10 and a0.amplification > 1e9


def test_random_directions_match_their_expectation_and_are_seeded():
    # For independent random orthonormal U (out×r), V (in×r): E‖UᵀWV‖² = (r/out)(r/in)‖W‖²_F.
    W, U, V, _ = _weight()
    a = amplification(W, U[:, :3] @ V[:, :3].T, rank=3, n_random=200, seed=1)
    expected = math.sqrt(3 / 40 * 3 / 30) * a.weight_norm
    # sqrt(E[x²]) ≥ E[x] (Jensen), so allow a generous band around the root-mean-square value.
    assert 0.7 * expected < a.projection_random < 1.05 * expected
    again = amplification(W, U[:, :3] @ V[:, :3].T, rank=3, n_random=200, seed=1)
    assert again.projection_random == a.projection_random


def test_bad_input():
    W, U, V, _ = _weight()
    with pytest.raises(ValueError, match="differ in shape"):
        amplification(W, torch.zeros(30, 40), rank=2)
    with pytest.raises(ValueError, match="all zeros"):
        amplification(W, torch.zeros_like(W), rank=2)
    with pytest.raises(ValueError, match="rank must be"):
        amplification(W, U[:, :1] @ V[:, :1].T, rank=31)

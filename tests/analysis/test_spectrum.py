"""Spectrum of ΔW: singular values, energy, effective rank, rank at an energy threshold."""

from __future__ import annotations

import math

import pytest
import torch

from lorakit.analysis import effective_rank, lowrank_svd, rank_at_energy, spectrum, spectrum_from_factors

F64 = torch.float64


def _with_singular_values(s: list[float], out: int = 12, inp: int = 10, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    U = torch.linalg.qr(torch.randn(out, len(s), generator=g, dtype=F64))[0]
    V = torch.linalg.qr(torch.randn(inp, len(s), generator=g, dtype=F64))[0]
    return U @ torch.diag(torch.tensor(s, dtype=F64)) @ V.T


def test_singular_values_energy_and_ranks_of_a_known_matrix():
    spec = spectrum(_with_singular_values([4.0, 2.0, 1.0]))
    torch.testing.assert_close(spec.singular_values[:3], torch.tensor([4.0, 2.0, 1.0], dtype=F64))
    assert spec.singular_values[3:].abs().max() < 1e-12  # a dense 12x10 matrix: 10 values, 7 are zero
    torch.testing.assert_close(spec.energy[:3], torch.tensor([16 / 21, 20 / 21, 1.0], dtype=F64))
    assert spec.frobenius_norm == pytest.approx(math.sqrt(21))
    assert spec.rank_at_threshold == 2  # 20/21 ≥ 0.9 > 16/21
    p = torch.tensor([4.0, 2.0, 1.0], dtype=F64) / 7
    assert spec.effective_rank == pytest.approx(math.exp(float(-(p * p.log()).sum())), rel=1e-9)
    assert spec.shape == (12, 10)


def test_effective_rank_extremes():
    assert effective_rank(torch.tensor([5.0, 0.0, 0.0])) == pytest.approx(1.0)
    assert effective_rank(torch.ones(6)) == pytest.approx(6.0)
    assert effective_rank(torch.zeros(3)) == 0.0


def test_rank_at_energy_thresholds():
    s = torch.tensor([3.0, 1.0, 1.0, 1.0])  # energies 9, 1, 1, 1 of 12
    assert rank_at_energy(s, 0.75) == 1
    assert rank_at_energy(s, 0.9) == 3
    assert rank_at_energy(s, 1.0) == 4
    assert rank_at_energy(torch.zeros(4)) == 0
    with pytest.raises(ValueError, match="threshold"):
        rank_at_energy(s, 0.0)


def test_factored_svd_and_spectrum_agree_with_the_dense_product():
    g = torch.Generator().manual_seed(1)
    A, B, s = torch.randn(4, 30, generator=g), torch.randn(20, 4, generator=g), 0.5
    dense = spectrum(s * B @ A)
    fact = spectrum_from_factors(A, B, s)
    torch.testing.assert_close(fact.singular_values, dense.singular_values[:4], rtol=1e-5, atol=1e-6)
    assert fact.shape == dense.shape == (20, 30)
    U, S, V = lowrank_svd(A, B, s)
    torch.testing.assert_close(U @ torch.diag(S) @ V.T, (s * B @ A).double(), rtol=1e-5, atol=1e-5)


def test_conv_factors_are_flattened_and_zero_updates_are_reported_not_refused():
    A, B = torch.randn(2, 3, 3, 3), torch.randn(5, 2, 1, 1)  # conv: A (r, C_in, k, k), B (out, r, 1, 1)
    assert spectrum_from_factors(A, B).shape == (5, 27)
    zero = spectrum_from_factors(A, torch.zeros(5, 2, 1, 1))  # a freshly initialised adapter (B = 0)
    assert zero.frobenius_norm == 0.0 and zero.effective_rank == 0.0 and zero.rank_at_threshold == 0

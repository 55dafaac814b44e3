"""Adapter algebra: exact concatenation and truncated-SVD re-factorisation of Σ wᵢ·sᵢ·Bᵢ·Aᵢ."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from lorakit.analysis import combine_concat, combine_modules, combine_svd


def _pair(r: int, out: int = 24, inp: int = 18, seed: int = 0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(r, inp, generator=g).to(dtype), torch.randn(out, r, generator=g).to(dtype)


def _delta(factors, weights) -> torch.Tensor:
    return sum(w * s * (B.double().reshape(B.shape[0], -1) @ A.double().reshape(A.shape[0], -1))
               for (A, B, s), w in zip(factors, weights, strict=True))


def test_svd_of_one_adapter_at_its_own_rank_reproduces_its_update():
    A, B = _pair(6)
    A2, B2 = combine_svd([(A, B, 2.0)], [1.0], rank=6)
    assert A2.shape == A.shape and B2.shape == B.shape and A2.dtype == torch.float32
    torch.testing.assert_close((B2 @ A2).double(), 2.0 * B.double() @ A.double(), atol=1e-5, rtol=1e-5)


def test_concat_is_the_exact_weighted_sum():
    factors = [(*_pair(2, seed=1), 2.0), (*_pair(5, seed=2), 0.25), (*_pair(3, seed=3), 1.0)]
    weights = [0.7, 0.3, -1.0]  # a negative weight subtracts an adapter (task negation)
    A, B = combine_concat(factors, weights)
    assert A.shape == (10, 18) and B.shape == (24, 10)
    torch.testing.assert_close((B.double() @ A.double()), _delta(factors, weights), atol=1e-5, rtol=1e-6)


def test_svd_truncation_is_the_best_low_rank_approximation():
    factors = [(*_pair(4, seed=4), 1.0), (*_pair(4, seed=5), 0.5)]
    weights = [0.6, 0.4]
    total = _delta(factors, weights)
    s = torch.linalg.svdvals(total)
    A, B = combine_svd(factors, weights, rank=8)  # full rank of the sum: exact
    torch.testing.assert_close(B.double() @ A.double(), total, atol=1e-5, rtol=1e-5)
    A3, B3 = combine_svd(factors, weights, rank=3)
    # Eckart–Young: the error of the best rank-3 approximation is sqrt(Σ_{k>3} σ_k²).
    err = torch.linalg.matrix_norm(B3.double() @ A3.double() - total)
    assert float(err) == pytest.approx(float(s[3:].square().sum().sqrt()), rel=1e-5)
    # The split is balanced: column k of B and row k of A both have norm sqrt(σ_k).
    torch.testing.assert_close(B3.double().norm(dim=0), s[:3].sqrt(), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(A3.double().norm(dim=1), s[:3].sqrt(), rtol=1e-5, atol=1e-6)


def test_svd_pads_with_zeros_when_the_sum_has_fewer_directions_than_asked():
    A, B = _pair(2)
    A2, B2 = combine_svd([(A, B, 1.0)], [1.0], rank=5)
    assert A2.shape == (5, 18) and B2.shape == (24, 5)
    assert not torch.any(A2[2:]) and not torch.any(B2[:, 2:])
    torch.testing.assert_close(B2 @ A2, B @ A, atol=1e-5, rtol=1e-5)


def test_conv_layout_and_low_precision_dtype_are_kept():
    g = torch.Generator().manual_seed(6)
    A, B = torch.randn(3, 2, 3, 3, generator=g), torch.randn(5, 3, 1, 1, generator=g)
    A2, B2 = combine_svd([(A, B, 1.0), (A, B, 1.0)], [0.5, 0.5], rank=3)
    assert A2.shape == (3, 2, 3, 3) and B2.shape == (5, 3, 1, 1)
    torch.testing.assert_close(B2.reshape(5, 3) @ A2.reshape(3, -1), B.reshape(5, 3) @ A.reshape(3, -1),
                               atol=1e-5, rtol=1e-5)
    Ab, Bb = combine_concat([(A.bfloat16(), B.bfloat16(), 1.0)], [1.0])
    assert Ab.dtype == Bb.dtype == torch.bfloat16


def test_modules_present_in_only_some_adapters_keep_their_weighted_update():
    A1, B1 = _pair(2, seed=7)
    A2, B2 = _pair(3, seed=8)
    Aq, Bq = _pair(4, seed=9)
    first = {"q": SimpleNamespace(A=A1, B=B1, scaling=2.0), "v": SimpleNamespace(A=Aq, B=Bq, scaling=1.0)}
    second = {"q": SimpleNamespace(A=A2, B=B2, scaling=1.0)}
    for method, rank in (("concat", None), ("svd", 5)):  # q: rank 2 + 3, exact at 5
        out = combine_modules([first, second], [0.7, 0.3], method=method, rank=rank)
        assert list(out) == ["q", "v"]
        q = out["q"][1].double() @ out["q"][0].double()
        torch.testing.assert_close(q, _delta([(A1, B1, 2.0), (A2, B2, 1.0)], [0.7, 0.3]), atol=1e-5, rtol=1e-5)
        v = out["v"][1].double() @ out["v"][0].double()
        torch.testing.assert_close(v, 0.7 * Bq.double() @ Aq.double(), atol=1e-5, rtol=1e-5)
    assert out["v"][0].shape[0] == 5  # svd: the configured rank everywhere (v zero-padded from 4)


def test_bad_input():
    A, B = _pair(2)
    with pytest.raises(ValueError, match="one weight per adapter"):
        combine_concat([(A, B, 1.0)], [0.5, 0.5])
    with pytest.raises(ValueError, match="another layer shape"):
        combine_concat([(A, B, 1.0), (*_pair(2, inp=7), 1.0)], [0.5, 0.5])
    with pytest.raises(ValueError, match="disagree on the rank"):
        combine_concat([(A, B[:, :1], 1.0)], [1.0])
    with pytest.raises(ValueError, match="positive integer"):
        combine_svd([(A, B, 1.0)], [1.0], rank=0)
    with pytest.raises(ValueError, match="module m: adapter 1"):
        combine_modules([{"m": SimpleNamespace(A=A, B=B, scaling=1.0)},
                         {"m": SimpleNamespace(A=A[:, :5], B=B, scaling=1.0)}], [1, 1], method="concat")
    with pytest.raises(ValueError, match="needs a target rank"):
        combine_modules([{}], [1.0], method="svd")

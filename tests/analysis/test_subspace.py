"""Subspace similarity φ (paper §7.2): definition, invariances, extremes and the random baseline."""

from __future__ import annotations

import pytest
import torch

from lorakit.analysis import phi_from_overlap, phi_grid, random_baseline, random_baseline_mc, subspace_basis


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _A(r: int, d: int, seed: int = 0) -> torch.Tensor:
    # Distinct, well-separated singular values so that every singular direction is well defined.
    g = _gen(seed)
    U = torch.linalg.qr(torch.randn(r, r, generator=g, dtype=torch.float64))[0]
    V = torch.linalg.qr(torch.randn(d, r, generator=g, dtype=torch.float64))[0]
    s = torch.linspace(3.0, 1.0, r, dtype=torch.float64)
    return U @ torch.diag(s) @ V.T


def test_phi_matches_the_definition_cell_by_cell():
    A1, A2 = _A(4, 20, seed=1), _A(6, 20, seed=2)
    grid = phi_grid(A1, A2, "A")
    U1, U2 = subspace_basis(A1, "A"), subspace_basis(A2, "A")
    assert grid.shape == (4, 6) and grid.dtype == torch.float64
    for i in range(1, 5):
        for j in range(1, 7):
            direct = torch.linalg.matrix_norm(U1[:, :i].T @ U2[:, :j]) ** 2 / min(i, j)
            assert grid[i - 1, j - 1] == pytest.approx(float(direct), abs=1e-12)


@pytest.mark.parametrize("matrix", ["A", "B"])
def test_a_subspace_is_fully_similar_to_itself(matrix):
    M = _A(8, 32) if matrix == "A" else _A(8, 32).T  # B is (d_out, r)
    grid = phi_grid(M, M, matrix)
    torch.testing.assert_close(grid.diagonal(), torch.ones(8, dtype=torch.float64), atol=1e-10, rtol=0)
    assert torch.all(grid <= 1 + 1e-10) and torch.all(grid >= 0)


def test_phi_is_invariant_to_rotation_and_scale_inside_the_subspace():
    # A -> c·Q·A (Q orthogonal, c > 0) keeps AᵀA up to c², hence the ordered right-singular
    # vectors up to sign; φ squares the overlaps, so signs drop out and the whole grid is unchanged.
    A1, A2 = _A(6, 24, seed=3), _A(5, 24, seed=4)
    Q = torch.linalg.qr(torch.randn(6, 6, generator=_gen(5), dtype=torch.float64))[0]
    torch.testing.assert_close(phi_grid(3.7 * Q @ A1, A2), phi_grid(A1, A2), atol=1e-10, rtol=0)
    # Per-direction sign flips of the basis itself (SVD's own ambiguity) change nothing either.
    flips = torch.tensor([1.0, -1.0, 1.0, -1.0, -1.0, 1.0], dtype=torch.float64)
    U1, U2 = subspace_basis(A1), subspace_basis(A2)
    torch.testing.assert_close(phi_from_overlap((U1 * flips).T @ U2), phi_from_overlap(U1.T @ U2))
    # Same for B: B -> c·B·Q.
    torch.testing.assert_close(phi_grid(A1.T @ Q * 0.2, A2.T, "B"), phi_grid(A1.T, A2.T, "B"),
                               atol=1e-10, rtol=0)


def test_only_the_full_span_is_invariant_to_an_arbitrary_invertible_map():
    # A -> R·A with R invertible but not orthogonal keeps the row space but re-orders and mixes the
    # singular directions inside it. So only cells that use the whole span of the mapped matrix are
    # invariant: the last row φ(r1, ·) when R acts on A1, the last column φ(·, r2) when it acts on A2.
    A1, A2 = _A(6, 24, seed=6), _A(5, 24, seed=7)
    R1 = torch.randn(6, 6, generator=_gen(8), dtype=torch.float64) + 3 * torch.eye(6, dtype=torch.float64)
    R2 = torch.randn(5, 5, generator=_gen(9), dtype=torch.float64) + 3 * torch.eye(5, dtype=torch.float64)
    base, mapped1, mapped2 = phi_grid(A1, A2), phi_grid(R1 @ A1, A2), phi_grid(A1, R2 @ A2)
    torch.testing.assert_close(mapped1[-1], base[-1], atol=1e-10, rtol=0)
    torch.testing.assert_close(mapped2[:, -1], base[:, -1], atol=1e-10, rtol=0)
    # ...and the interior does change, which is why the test above claims no more than that.
    assert (mapped1[0] - base[0]).abs().max() > 1e-3


def test_orthogonal_subspaces_have_zero_similarity():
    d = 16
    eye = torch.eye(d, dtype=torch.float64)
    A1 = torch.diag(torch.tensor([3.0, 2.0, 1.0], dtype=torch.float64)) @ eye[:3]  # e1..e3
    A2 = torch.randn(4, 4, generator=_gen(), dtype=torch.float64) @ eye[8:12]  # inside e9..e12
    assert phi_grid(A1, A2).abs().max() < 1e-12


def test_random_baseline_closed_form_matches_monte_carlo():
    d, r1, r2 = 24, 4, 6
    closed = random_baseline(d, r1, r2)
    assert closed[0, 0] == pytest.approx(1 / d) and closed[1, 4] == pytest.approx(5 / d)
    mean, stderr = random_baseline_mc(d, r1, r2, n_samples=400, seed=0)
    # 5 standard errors per cell: a false alarm over 24 cells is then very unlikely (p ~ 1e-5),
    # while a wrong formula (e.g. i·j/d or min(i, j)/d) is off by many standard errors.
    assert torch.all((mean - closed).abs() <= 5 * stderr + 1e-12)
    assert torch.all(stderr < 0.02)


def test_conv_shaped_factors_are_flattened():
    A = _A(4, 3 * 3 * 3).reshape(4, 3, 3, 3)  # conv A: (r, C_in, k, k)
    torch.testing.assert_close(phi_grid(A, A).diagonal(), torch.ones(4, dtype=torch.float64))


def test_bad_input_is_rejected_with_a_readable_error():
    with pytest.raises(ValueError, match="different input"):
        phi_grid(_A(4, 10), _A(4, 12))
    with pytest.raises(ValueError, match="all zeros"):
        phi_grid(torch.zeros(10, 4), _A(4, 10).T, "B")
    with pytest.raises(ValueError, match="'A' or 'B'"):
        phi_grid(_A(4, 10), _A(4, 10), "C")
    with pytest.raises(ValueError, match="1 <= r1"):
        random_baseline(4, 5, 1)

"""core.batched: the mixed-batch shrink/expand equals its reference loop, values and gradients."""

import torch

from lorakit.core.batched import batched_lora


def _adapters(ranks, d_in=6, d_out=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [(torch.randn(r, d_in, generator=g, requires_grad=True),
             torch.randn(d_out, r, generator=g, requires_grad=True), 0.5 + i) for i, r in enumerate(ranks)]


def _reference(out, x, index, adapters):
    y = out.clone()
    for i, (A, B, s) in enumerate(adapters):
        rows = [k for k, j in enumerate(index) if j == i]
        if rows:
            y[rows] += s * (x[rows] @ A.T) @ B.T
    return y


def _assert_same_values_and_grads(got, ref, xs, got_ad, ref_ad):
    """Equal outputs, and equal gradients of a random projection of them for x and every A and B."""
    torch.testing.assert_close(got, ref)
    w = torch.randn_like(ref)
    (got * w).sum().backward()
    (ref * w).sum().backward()
    torch.testing.assert_close(xs[0].grad, xs[1].grad)
    for (A, B, _), (A2, B2, _) in zip(got_ad, ref_ad, strict=True):
        torch.testing.assert_close(A.grad, A2.grad)
        torch.testing.assert_close(B.grad, B2.grad)


def test_batched_lora_matches_the_reference_loop_and_its_gradients():
    torch.manual_seed(0)
    ranks = [4, 8, 4, 2]  # two adapters share rank 4: one group, gathered per row
    index = [0, 1, -1, 2, 1, 0, 3, 2]
    x = torch.randn(len(index), 3, 6, requires_grad=True)
    out = torch.randn(len(index), 3, 5)
    got_ad, ref_ad = _adapters(ranks), _adapters(ranks)
    x2 = x.detach().clone().requires_grad_(True)
    got = batched_lora(out, x, index, got_ad)
    ref = _reference(out, x2, index, ref_ad)
    _assert_same_values_and_grads(got, ref, (x, x2), got_ad, ref_ad)


def test_an_adapter_gets_gradient_from_its_own_rows_only():
    index = [0, 0, 1, 1]
    adapters = _adapters([4, 4])
    x = torch.randn(4, 2, 6)
    y = batched_lora(torch.zeros(4, 2, 5), x, index, adapters)
    y[2:].sum().backward()  # a loss on adapter 1's rows alone
    assert adapters[0][0].grad.abs().sum() == 0 and adapters[0][1].grad.abs().sum() == 0
    assert adapters[1][1].grad.abs().sum() > 0


def test_no_grad_adds_in_place_and_skips_unadapted_rows():
    adapters = [(a.detach(), b.detach(), s) for a, b, s in _adapters([2, 3])]
    x, out = torch.randn(3, 4, 6), torch.randn(3, 4, 5)
    expected = _reference(out, x, [1, -1, 0], adapters)
    with torch.no_grad():
        got = batched_lora(out, x, [1, -1, 0], adapters)
    torch.testing.assert_close(got, expected)
    torch.testing.assert_close(out, expected)  # added in place


def test_row_dropout_matches_a_masked_reference_and_its_gradients():
    from lorakit.core.batched import RowDropout, rank_groups, shrink_expand

    torch.manual_seed(1)
    index = [0, 0, 1, 1, 1, -1]
    adapters, ref_ad = _adapters([4, 4]), _adapters([4, 4])
    x = torch.randn(6, 5, 6, requires_grad=True)
    x2 = x.detach().clone().requires_grad_(True)
    out = torch.randn(6, 5, 5)
    # rows 0-1: p=0.5 on their first 3 positions (the job's own length); rows 2-4: p=0.25 on all 5
    masks = (torch.rand(2, 3, 6) > 0.5, torch.rand(3, 5, 6) > 0.25)
    drop = RowDropout(((0, 2, 3, 0.5), (2, 5, 5, 0.25)), masks)
    got = shrink_expand(out, x, rank_groups(index, adapters), drop)
    xd = x2.clone()
    xd[0:2, :3] = x2[0:2, :3] * masks[0] / 0.5
    xd[2:5] = x2[2:5] * masks[1] / 0.75
    ref = _reference(out, xd, index, ref_ad)
    _assert_same_values_and_grads(got, ref, (x, x2), adapters, ref_ad)


def test_the_training_path_saves_no_per_row_factors_and_no_float_copy_of_x():
    # What autograd keeps for backward: x itself, a bool mask, rank-sized h and the stacked factors,
    # never a gathered/dropped float copy of x nor one copy of A/B per row.
    from lorakit.core.batched import RowDropout, rank_groups, shrink_expand

    n, T, d_in, d_out = 16, 32, 64, 48
    index = [i % 2 for i in range(n)]
    adapters = _adapters([4, 8], d_in=d_in, d_out=d_out)
    x = torch.randn(n, T, d_in, requires_grad=True)
    drop = RowDropout(((0, n, T, 0.1),), (torch.rand(n, T, d_in) > 0.1,))
    saved: list[torch.Tensor] = []

    def pack(t):
        saved.append(t)
        return t

    groups = rank_groups(index, adapters)
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        shrink_expand(torch.zeros(n, T, d_out), x, groups, drop)
    floats = [t for t in saved if t.is_floating_point()]
    big = [t for t in floats if t.numel() > n * T * 8 and t.data_ptr() != x.data_ptr()]  # h: rows·T·r, r ≤ 8
    assert not big, [tuple(t.shape) for t in big]  # h (rows, T, r) is the largest float saved besides x
    assert any(t.data_ptr() == x.data_ptr() for t in saved)
    assert sum(t.numel() for t in floats if t.data_ptr() != x.data_ptr()) < x.numel() / 2

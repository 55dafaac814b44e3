"""Mixed-batch LoRA (Punica's shrink/expand): every row of a batch uses its own adapter, with autograd.

Its meaning is this reference loop, over the adapters ``i`` with rows ``rows_i`` (a per-row index)::

    for i in adapters:
        y[rows_i] += s_i · (x[rows_i] @ A_i.T) @ B_i.T          # shrink to rank r_i, expand back

Adapters are grouped by rank and each group runs as one pair of ``bmm`` over its rows, so a row pays
exactly its own rank (no padding to the largest) and there is no Python loop over adapters. Built
from differentiable ops only (stack, index_select, bmm, index_add), so the gradient of a loss reaches
``A_i`` and ``B_i`` from the rows of adapter ``i`` alone. ``serve/`` (stacked banks, no grad) and
``train-many`` (one adapter per job) both run through :func:`shrink_expand`.

Torch-only, like :mod:`lorakit.core`, but kept beside it rather than in it: core is the single-adapter
LoRA layer and reads in one sitting (under 1,000 lines); this is the multi-adapter operation that
``serve/`` and ``train/`` share.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

# One rank group, operands gathered per row: (rows of the batch or None for all, At (n, in, r), Bt (n, r, out)).
Group = tuple[Tensor | None, Tensor, Tensor]


def shrink_expand(out: Tensor, x: Tensor, groups: Sequence[Group]) -> Tensor:
    """``out[rows] += (x[rows] @ At) @ Bt`` for each group; ``x (n, T, in)``, ``out (n, T, out)``.

    Adds in place (no temporaries) when no gradient is needed, out of place otherwise, and returns
    the result. ``Bt`` carries the scaling ``s`` already (see :func:`rank_groups`).
    """
    in_place = not (torch.is_grad_enabled() and (x.requires_grad or any(g[1].requires_grad or g[2].requires_grad
                                                                         for g in groups)))
    for rows, At, Bt in groups:
        xs = x if rows is None else x.index_select(0, rows)
        if xs.dtype != At.dtype:  # a low-precision activation meets fp32 factors: compute in x's dtype
            At, Bt = At.to(xs.dtype), Bt.to(xs.dtype)
        h = torch.bmm(xs, At)  # shrink: (rows, T, r)
        if in_place and rows is None and out.dtype == Bt.dtype:
            out.baddbmm_(h, Bt)  # expand and add in one kernel
            continue
        y = torch.bmm(h, Bt).to(out.dtype)  # expand: (rows, T, out)
        which = rows if rows is not None else torch.arange(out.shape[0], device=out.device)
        out = out.index_add_(0, which, y) if in_place else out.index_add(0, which, y)
    return out


def rank_groups(index: Sequence[int], adapters: Sequence[tuple[Tensor, Tensor, float] | None],
                device: torch.device | str | None = None) -> list[Group]:
    """Per-row operands for :func:`shrink_expand` from a per-row adapter ``index`` (``-1``: no adapter).

    ``adapters[i]`` is ``(A (r, in), B (out, r), s)`` or None (adapter ``i`` leaves this layer alone).
    Each rank present gives one group: its adapters' ``Aᵀ`` and ``s·Bᵀ`` are stacked once and gathered
    per row, both differentiably.
    """
    by_rank: dict[int, tuple[list[int], list[int]]] = {}
    for row, i in enumerate(index):
        if i >= 0 and adapters[i] is not None:
            rows, ids = by_rank.setdefault(adapters[i][0].shape[0], ([], []))
            rows.append(row)
            ids.append(i)
    groups: list[Group] = []
    for _, (rows, ids) in sorted(by_rank.items()):
        members = sorted(set(ids))
        local = {i: k for k, i in enumerate(members)}
        At = torch.stack([adapters[i][0].t() for i in members])
        Bt = torch.stack([adapters[i][1].t() * adapters[i][2] for i in members])
        dev = device if device is not None else At.device
        pick = torch.tensor([local[i] for i in ids], device=dev)
        which = None if len(rows) == len(index) else torch.tensor(rows, device=dev)
        groups.append((which, At.index_select(0, pick), Bt.index_select(0, pick)))
    return groups


def batched_lora(out: Tensor, x: Tensor, index: Sequence[int],
                 adapters: Sequence[tuple[Tensor, Tensor, float] | None]) -> Tensor:
    """``out + Σ_i s_i·(x[rows_i] @ A_iᵀ) @ B_iᵀ`` on ``rows_i`` (the reference loop above), any leading dims.

    ``x (n, ..., in)``, ``out (n, ..., out)``, ``index`` one adapter number per row (``-1``: none).
    """
    n = x.shape[0]
    if len(index) != n:
        raise ValueError(f"batch has {n} rows but the index has {len(index)} entries")
    groups = rank_groups(index, adapters, x.device)
    y = shrink_expand(out.reshape(n, -1, out.shape[-1]), x.reshape(n, -1, x.shape[-1]), groups)
    return y.reshape(out.shape)

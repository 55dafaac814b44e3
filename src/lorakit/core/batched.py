"""Mixed-batch LoRA (Punica's shrink/expand): every row of a batch uses its own adapter, with autograd.

Its meaning is this reference loop, over the adapters ``i`` with rows ``rows_i`` (a per-row index)::

    for i in adapters:
        y[rows_i] += s_i · (dropout_i(x[rows_i]) @ A_i.T) @ B_i.T     # shrink to rank r_i, expand back

Adapters are grouped by rank and each group runs as one pair of ``bmm`` over its rows, so a row pays
exactly its own rank (no padding to the largest) and there is no Python loop over adapters. Without
gradients (``serve/``) the result is added in place into the base output. With gradients
(``train-many``) one autograd Function runs all groups and saves only what backward needs, like
core's single-adapter :mod:`~lorakit.core.lora_linear`: ``x`` itself (the base layer's input, alive
anyway), a bool dropout mask, each group's small ``h = A·x`` (rows × tokens × r) and the stacked
factors of each group's adapters (not one copy per row); the gathered and dropped inputs are
recomputed in backward. ``serve/`` (stacked banks, no grad) and ``train-many`` (one adapter per job)
both run through :func:`shrink_expand`.

Part of :mod:`lorakit.core` (torch only): the single-adapter layer lives in :mod:`~lorakit.core.layers`;
this is the multi-adapter operation that ``serve/`` and ``train/`` share.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from lorakit.errors import LorakitError

# One rank group: (rows of the batch or None for all, pick or None, At, Bt).
#   pick None:    At (rows, in, r) and Bt (rows, r, out) are already one per row (serve's cached plans);
#   pick (rows,): At (m, in, r) and Bt (m, r, out) stack the group's m adapters, pick[k] is row k's.
# Bt carries the scaling s already (see rank_groups).
Group = tuple[Tensor | None, Tensor | None, Tensor, Tensor]


@dataclass(frozen=True)
class RowDropout:
    """Dropout on the LoRA input of some rows: ``x[a:b, :length] · mask / (1 − p)`` per span.

    ``spans``: ``(a, b, length, p)``; ``masks``: the matching bool keep-masks, ``(b − a, length, in)``.
    Each span is applied as its own op with its own ``p``, so the rounding is that of a single-adapter
    layer given those rows alone (``x * mask / (1 - p)``).
    """

    spans: tuple[tuple[int, int, int, float], ...]
    masks: tuple[Tensor, ...]

    def apply(self, x: Tensor) -> Tensor:
        """A new tensor: ``x (n, T, in)`` with the spans dropped."""
        out = x.clone()
        for (a, b, length, p), mask in zip(self.spans, self.masks, strict=True):
            out[a:b, :length] = x[a:b, :length] * mask / (1.0 - p)
        return out


def shrink_expand(out: Tensor, x: Tensor, groups: Sequence[Group], drop: RowDropout | None = None) -> Tensor:
    """``out[rows] += (dropout(x)[rows] @ At) @ Bt`` for each group; ``x (n, T, in)``, ``out (n, T, out)``.

    Adds in place (no temporaries) when no gradient is needed; otherwise returns ``out + y`` with ``y``
    from :class:`_MixedLora` (the lean autograd path). A low-precision ``x`` meets fp32 factors as in
    core: the matmuls run in x's dtype on casts of the (small) factors, never on an upcast of ``x``.
    """
    if not groups:
        return out
    needs_grad = torch.is_grad_enabled() and (x.requires_grad or any(g[2].requires_grad or g[3].requires_grad
                                                                     for g in groups))
    if needs_grad:
        plan = tuple((rows, pick) for rows, pick, _, _ in groups)
        factors = [t for _, _, At, Bt in groups for t in (At, Bt)]
        masks = drop.masks if drop is not None else ()
        y = _MixedLora.apply(x, drop.spans if drop is not None else None, plan, len(masks), *masks, *factors)
        return out + y.to(out.dtype)
    xd = x if drop is None else drop.apply(x)
    for rows, pick, At, Bt in groups:
        xs = xd if rows is None else xd.index_select(0, rows)
        At, Bt = _per_row(At, pick, xs.dtype), _per_row(Bt, pick, xs.dtype)
        h = torch.bmm(xs, At)  # shrink: (rows, T, r)
        if rows is None and out.dtype == Bt.dtype:
            out.baddbmm_(h, Bt)  # expand and add in one kernel
            continue
        y = torch.bmm(h, Bt).to(out.dtype)  # expand: (rows, T, out)
        out.index_add_(0, rows if rows is not None else torch.arange(out.shape[0], device=out.device), y)
    return out


def _per_row(stack: Tensor, pick: Tensor | None, dtype: torch.dtype) -> Tensor:
    """The per-row operand: cast the small stack first, then gather one entry per row."""
    stack = stack if stack.dtype == dtype else stack.to(dtype)
    return stack if pick is None else stack.index_select(0, pick)


class _MixedLora(torch.autograd.Function):
    """``y = Σ_groups scatter_rows((dropout(x)[rows] @ At[pick]) @ Bt[pick])``, saving the minimum.

    Inputs after ``x``: the dropout spans (or None), the groups' ``(rows, pick)``, the number of masks,
    the masks, then ``At, Bt`` of each group. Gradients: ``x`` and every ``At``/``Bt`` stack (summed
    over the rows that picked each entry, so an adapter's gradient comes from its own rows only).
    """

    @staticmethod
    def forward(ctx, x: Tensor, spans, plan, n_masks: int, *tensors: Tensor) -> Tensor:
        masks, factors = tensors[:n_masks], tensors[n_masks:]
        drop = None if spans is None else RowDropout(spans, tuple(masks))
        xd = x if drop is None else drop.apply(x)  # a temporary: recomputed in backward
        y, hs = None, []
        for g, (rows, pick) in enumerate(plan):
            At, Bt = _per_row(factors[2 * g], pick, xd.dtype), _per_row(factors[2 * g + 1], pick, xd.dtype)
            h = torch.bmm(xd if rows is None else xd.index_select(0, rows), At)  # shrink: (rows, T, r)
            part = torch.bmm(h, Bt)  # expand: (rows, T, out)
            if rows is None:
                y = part if y is None else y + part
            else:
                y = part.new_zeros(x.shape[0], *part.shape[1:]) if y is None else y
                y.index_add_(0, rows, part)  # each row is in one group: adding to 0 is exact
            hs.append(h)
        ctx.spans, ctx.plan, ctx.n_masks = spans, plan, n_masks
        ctx.save_for_backward(x, *masks, *hs, *factors)
        return y

    @staticmethod
    def backward(ctx, grad: Tensor):
        saved = ctx.saved_tensors
        k = ctx.n_masks
        x, masks, hs, factors = saved[0], saved[1:1 + k], saved[1 + k:1 + k + len(ctx.plan)], saved[1 + k + len(ctx.plan):]
        drop = None if ctx.spans is None else RowDropout(ctx.spans, tuple(masks))
        need_x = ctx.needs_input_grad[0]
        xd = x if drop is None else drop.apply(x)
        gx = torch.zeros_like(x) if need_x else None
        grads: list[Tensor | None] = []
        for g, ((rows, pick), h) in enumerate(zip(ctx.plan, hs, strict=True)):
            At0, Bt0 = factors[2 * g], factors[2 * g + 1]
            At, Bt = _per_row(At0, pick, h.dtype), _per_row(Bt0, pick, h.dtype)
            gs = (grad if rows is None else grad.index_select(0, rows)).to(h.dtype)  # (rows, T, out)
            gh = torch.bmm(gs, Bt.transpose(1, 2))  # (rows, T, r)
            xs = xd if rows is None else xd.index_select(0, rows)
            gA = _per_stack(torch.bmm(xs.transpose(1, 2), gh), pick, At0)  # (m, in, r)
            gB = _per_stack(torch.bmm(h.transpose(1, 2), gs), pick, Bt0)  # (m, r, out)
            grads += [gA, gB]
            if need_x:
                gxs = torch.bmm(gh, At.transpose(1, 2))  # (rows, T, in)
                if rows is None:
                    gx += gxs
                else:
                    gx.index_add_(0, rows, gxs)
        if need_x and drop is not None:
            gx = drop.apply(gx)  # d(x·mask/(1−p))/dx = mask/(1−p), on the dropped spans only
        return (gx, None, None, None, *([None] * k), *grads)


def _per_stack(per_row: Tensor, pick: Tensor | None, stack: Tensor) -> Tensor:
    """Sum per-row gradients into the stack's entries (each entry: the rows that picked it)."""
    per_row = per_row.to(stack.dtype)
    if pick is None:
        return per_row
    return torch.zeros_like(stack).index_add_(0, pick, per_row)


# One rank group's rows: (which rows, or None for all; per-row pick into the stack; adapters stacked, in order).
RowPlan = list[tuple[Tensor | None, Tensor, tuple[int, ...]]]


def row_plan(index: Sequence[int], ranks: Sequence[int | None], device: torch.device | str) -> RowPlan:
    """Which rows go to which rank group and which stacked adapter, from a per-row adapter ``index``.

    ``ranks[i]`` is adapter ``i``'s rank in the layer (None: it leaves the layer alone). The plan depends
    on nothing else, so every layer whose adapters have the same ranks shares it: a mixed forward builds
    it once for all of them (train-many's :class:`~lorakit.train.many.model.MixedRows` caches it).
    """
    by_rank: dict[int, tuple[list[int], list[int]]] = {}
    for row, i in enumerate(index):
        if i >= 0 and ranks[i] is not None:
            rows, ids = by_rank.setdefault(ranks[i], ([], []))
            rows.append(row)
            ids.append(i)
    plan: RowPlan = []
    for _, (rows, ids) in sorted(by_rank.items()):
        members = tuple(sorted(set(ids)))
        local = {i: k for k, i in enumerate(members)}
        pick = torch.tensor([local[i] for i in ids], device=device)
        which = None if len(rows) == len(index) else torch.tensor(rows, device=device)
        plan.append((which, pick, members))
    return plan


def rank_groups(index: Sequence[int], adapters: Sequence[tuple[Tensor, Tensor, float] | None],
                device: torch.device | str | None = None, plan: RowPlan | None = None) -> list[Group]:
    """:func:`shrink_expand`'s groups from a per-row adapter ``index`` (``-1``: no adapter).

    ``adapters[i]`` is ``(A (r, in), B (out, r), s)`` or None (adapter ``i`` leaves this layer alone).
    Each rank present gives one group: its adapters' ``Aᵀ`` and ``s·Bᵀ`` stacked (differentiably) and a
    per-row ``pick`` into the stack. ``plan``: the :func:`row_plan` of these ranks, if already built.
    """
    if plan is None:
        ranks = [None if a is None else a[0].shape[0] for a in adapters]
        first = next((a[0].device for a in adapters if a is not None), torch.device("cpu"))
        plan = row_plan(index, ranks, device if device is not None else first)
    groups: list[Group] = []
    for which, pick, members in plan:
        At = torch.stack([adapters[i][0].t() for i in members])
        Bt = torch.stack([adapters[i][1].t() * adapters[i][2] for i in members])
        groups.append((which, pick, At, Bt))
    return groups


def batched_lora(out: Tensor, x: Tensor, index: Sequence[int],
                 adapters: Sequence[tuple[Tensor, Tensor, float] | None]) -> Tensor:
    """``out + Σ_i s_i·(x[rows_i] @ A_iᵀ) @ B_iᵀ`` on ``rows_i`` (the reference loop above), any leading dims.

    ``x (n, ..., in)``, ``out (n, ..., out)``, ``index`` one adapter number per row (``-1``: none).
    """
    n = x.shape[0]
    if len(index) != n:
        raise LorakitError(f"batch has {n} rows but the index has {len(index)} entries")
    groups = rank_groups(index, adapters, x.device)
    y = shrink_expand(out.reshape(n, -1, out.shape[-1]), x.reshape(n, -1, x.shape[-1]), groups)
    return y.reshape(out.shape)

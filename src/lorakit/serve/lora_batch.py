"""Mixed-batch LoRA: one forward in which every row uses its own adapter (Punica's shrink/expand).

::

    y[i] = W0·x[i]  +  (x[i]·Aᵀ[idx_i]) · Bᵀ[idx_i]        idx_i = the adapter slot of row i (-1: none)
                        └── shrink ──┘   └─ expand ─┘      s (alpha/r) is folded into Bᵀ at load time

A DoRA row is the same plus a per-adapter column scale ``c = m / ‖W0 + s·B·A‖`` (computed once at
load): ``y[i] = c[idx_i] ⊙ (W0·x[i] + s·B·A·x[i]) + b``, so each row still pays only for its own adapter.

A :class:`BankLinear` replaces a targeted base ``nn.Linear`` (or GPT-2 ``Conv1D``). It owns the base
weight under its original name (so the model's state dict is unchanged) and, per rank ``r``, a
:class:`RankGroup` holding every resident adapter of that rank *stacked*: ``At (cap, in, r)`` and
``Bt (cap, r, out)``, pre-transposed so a gather by slot gives contiguous ``bmm`` operands.

Why group by rank instead of padding every adapter to the largest rank: a batch of r=8 rows next
to one r=64 adapter would otherwise do 8× the LoRA work on every row. With groups, each row costs
exactly its own rank, and a batch runs one pair of ``bmm`` per rank *present in the batch* (usually
one or two), never a Python loop over adapters.

Precision (``lorakit serve --dtype``): every adapter tensor a module keeps (the stacked ``Aᵀ``/``Bᵀ``,
full replacements, bias changes, DoRA scales) is stored in the type the module's *activations* flow
in (:func:`~lorakit.models.precision.activation_dtype`): fp32 on an fp32 base, bf16 on a bf16 base and
on an int8/nf4 base whose compute type is bf16. Why not fp32 masters as in training: nothing is
trained here, and a stack in another type than ``x`` would cost a cast of ``x`` and of the result at
every adapted module on every step and rule out the in-place ``baddbmm_`` that adds the LoRA path
without a temporary. The scaling ``s`` is folded into ``B`` in fp32 before the one cast, so bf16
stacks round each factor once (≈3 significant digits, the same rounding the bf16 base product has).

The per-row slots come from a :class:`BatchContext` that the engine sets around each forward. The
gathered operands of a batch composition are cached (the *plan*) until the composition or the bank
changes, so a decode step costs two ``bmm`` and an add per module.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from lorakit.core._torch import foreach_copy_, foreach_mul_
from lorakit.core.batched import Group, shrink_expand
from lorakit.core.layers import adopt_base, base_getattr
from lorakit.models.precision import activation_dtype

_batch_ids = itertools.count()


class BatchRows:
    """The adapter slot of every row of the batch about to run (``-1``: the base model alone)."""

    def __init__(self, slots: list[int], device: torch.device | str = "cpu") -> None:
        self.slots = [int(s) for s in slots]
        self.size = len(self.slots)
        self.any_adapter = any(s >= 0 for s in self.slots)
        self.device = torch.device(device)
        # A fresh key per composition: plans cached under an older key are never reused.
        self.key = next(_batch_ids)


class BatchContext:
    """Shared by the bank and its modules: the rows of the running batch and the bank's version."""

    def __init__(self) -> None:
        self.rows: BatchRows | None = None
        # Bumped on every load/unload so that cached plans (gathered copies) are rebuilt.
        self.version = 0


class RankGroup:
    """All resident adapters of rank ``r`` at one module, stacked along dim 0 (growable)."""

    def __init__(self, r: int, d_in: int, d_out: int, dtype: torch.dtype, device: torch.device, cap: int) -> None:
        self.r = r
        self.At = torch.zeros(cap, d_in, r, dtype=dtype, device=device)
        self.Bt = torch.zeros(cap, r, d_out, dtype=dtype, device=device)
        self.free = list(range(cap))

    def put(self, A: Tensor, B: Tensor, scaling: float, copies: CopyBatch | None = None) -> int:
        """Copy ``A (r, in)`` and ``s·B (out, r)`` into a free entry; returns its index.

        With ``copies``, the copies are only recorded, to be done for all modules in one call.
        """
        if not self.free:
            self._grow()
        local = self.free.pop(0)
        if self.Bt.dtype != torch.float32:  # scaling folded in fp32 before the cast: nothing extra lost
            B, scaling = B.float() * scaling, 1.0
        batch = copies if copies is not None else CopyBatch()
        batch.add(self.At[local], A.t())
        batch.add(self.Bt[local], B.t(), scaling)
        if copies is None:
            batch.run()
        return local

    def release(self, local: int) -> None:
        """Give an entry back; its values stay until overwritten (no row can select it)."""
        self.free.append(local)
        self.free.sort()

    @property
    def used(self) -> int:
        """Entries holding an adapter."""
        return self.At.shape[0] - len(self.free)

    def _grow(self) -> None:
        # Doubling keeps loads amortised O(1); the old stacks are dropped (plans hold copies).
        cap = self.At.shape[0]
        self.At = torch.cat([self.At, torch.zeros_like(self.At)])
        self.Bt = torch.cat([self.Bt, torch.zeros_like(self.Bt)])
        self.free.extend(range(cap, 2 * cap))


class CopyBatch:
    """Copies (and scalings) into the stacks of many modules, done in two fused calls."""

    def __init__(self) -> None:
        self.dst: list[Tensor] = []
        self.src: list[Tensor] = []
        self.scaled: list[Tensor] = []
        self.scales: list[float] = []

    def add(self, dst: Tensor, src: Tensor, scale: float | None = None) -> None:
        """Record ``dst ← src`` (then ``dst *= scale``)."""
        self.dst.append(dst)
        self.src.append(src.to(device=dst.device))
        if scale is not None and scale != 1.0:
            self.scaled.append(dst)
            self.scales.append(float(scale))

    def run(self) -> None:
        """Do every recorded copy (one fused call per step instead of one per tensor)."""
        with torch.no_grad():
            if self.dst:
                foreach_copy_(self.dst, self.src)
            if self.scaled:
                foreach_mul_(self.scaled, self.scales)


@dataclass
class _Plan:
    """Gathered operands for one batch composition at one module."""

    # (rows or None for all rows, At (n, in, r), Bt (n, r, out)) per rank group present.
    lora: list[Group] = field(default_factory=list)
    # Rows whose module is replaced in full (modules_to_save), with stacked Wᵀ (n, in, out) and b (n, 1, out).
    full: tuple[Tensor, Tensor, Tensor | None] | None = None
    # Per-row bias change (bias="lora_only" adapters), shaped (batch, 1, out); None when no row has one.
    bias: Tensor | None = None
    # DoRA rows: per-row column scale c and shift (1 − c)·b, each (batch, 1, out) (ones / zeros elsewhere).
    scale: tuple[Tensor, Tensor | None] | None = None

    @property
    def empty(self) -> bool:
        return not self.lora and self.full is None and self.bias is None and self.scale is None


class BankLinear(nn.Module):
    """A frozen base linear layer plus the LoRA path of every adapter resident in the bank."""

    def __init__(self, base: nn.Module, kind, ctx: BatchContext, group_cap: int = 4) -> None:
        super().__init__()
        adopt_base(self, base)  # as core's LoraLayer: the state dict keeps the base's names
        self.kind = kind
        self.ctx = ctx
        # The type activations flow in here (see "Precision" in the module docstring).
        self.dtype = activation_dtype(base)
        self.d_in, self.d_out = kind.features(base)
        self.group_cap = group_cap
        self.groups: dict[int, RankGroup] = {}
        # slot -> (rank, local index) for adapters that adapt this module.
        self.slot_lora: dict[int, tuple[int, int]] = {}
        # slot -> (Wᵀ (in, out), bias (out,) or None): the module replaced in full (modules_to_save).
        self.slot_full: dict[int, tuple[Tensor, Tensor | None]] = {}
        # slot -> bias change (out,) for adapters trained with bias="lora_only".
        self.slot_bias: dict[int, Tensor] = {}
        # slot -> DoRA's column scale c (out,): the row computes c ⊙ (W0·x + s·B·A·x) + b.
        self.slot_scale: dict[int, Tensor] = {}
        self._plan_key: tuple[int, int] | None = None
        self._plan = _Plan()

    # ---- bank side -------------------------------------------------------------------------
    def add(self, slot: int, A: Tensor | None = None, B: Tensor | None = None, scaling: float = 1.0,
            full: tuple[Tensor, Tensor | None] | None = None, bias_delta: Tensor | None = None,
            copies: CopyBatch | None = None, column_scale: Tensor | None = None) -> None:
        """Make ``slot`` adapt this module (any of: a LoRA pair, a full replacement, a bias change,
        DoRA's column scale)."""
        assert slot not in self.slot_lora and slot not in self.slot_full and slot not in self.slot_bias
        ref = torch.empty(0, dtype=self.dtype, device=self.weight.device)
        if A is not None and B is not None:
            r = A.shape[0]
            group = self.groups.get(r)
            if group is None:
                group = self.groups[r] = RankGroup(r, self.d_in, self.d_out, ref.dtype, ref.device, self.group_cap)
            self.slot_lora[slot] = (r, group.put(A, B, scaling, copies))
        if full is not None:
            weight_t, bias = full
            self.slot_full[slot] = (weight_t.to(ref), None if bias is None else bias.to(ref))
        if bias_delta is not None:
            self.slot_bias[slot] = bias_delta.to(ref)
        if column_scale is not None:
            self.slot_scale[slot] = column_scale.to(ref)

    def remove(self, slot: int) -> None:
        """Forget ``slot`` here (its stack entry becomes free)."""
        hit = self.slot_lora.pop(slot, None)
        if hit is not None:
            r, local = hit
            self.groups[r].release(local)
            if self.groups[r].used == 0:
                del self.groups[r]
        self.slot_full.pop(slot, None)
        self.slot_bias.pop(slot, None)
        self.slot_scale.pop(slot, None)

    @property
    def slots(self) -> set[int]:
        """Slots that change this module."""
        return set(self.slot_lora) | set(self.slot_full) | set(self.slot_bias) | set(self.slot_scale)

    # ---- forward side ----------------------------------------------------------------------
    def _make_plan(self, rows: BatchRows) -> _Plan:
        plan = _Plan()
        dev = self.weight.device
        by_rank: dict[int, tuple[list[int], list[int]]] = {}
        for i, slot in enumerate(rows.slots):
            hit = self.slot_lora.get(slot) if slot >= 0 else None
            if hit is not None:
                row_ids, locals_ = by_rank.setdefault(hit[0], ([], []))
                row_ids.append(i)
                locals_.append(hit[1])
        for r, (row_ids, locals_) in sorted(by_rank.items()):
            group = self.groups[r]
            idx = torch.tensor(locals_, device=dev)
            which = None if len(row_ids) == rows.size else torch.tensor(row_ids, device=dev)
            plan.lora.append((which, None, group.At.index_select(0, idx), group.Bt.index_select(0, idx)))
        full_rows = [i for i, s in enumerate(rows.slots) if s in self.slot_full]
        if full_rows:
            weights = torch.stack([self.slot_full[rows.slots[i]][0] for i in full_rows])
            biases = [self.slot_full[rows.slots[i]][1] for i in full_rows]
            bias = None if any(b is None for b in biases) else torch.stack(biases).unsqueeze(1)
            plan.full = (torch.tensor(full_rows, device=dev), weights, bias)
        if any(s in self.slot_scale for s in rows.slots):
            ones = torch.ones(self.d_out, dtype=self.dtype, device=dev)
            scale = torch.stack([self.slot_scale.get(s, ones) for s in rows.slots]).unsqueeze(1)
            plan.scale = (scale, None if self.bias is None else (1 - scale) * self.bias)
        if any(s in self.slot_bias for s in rows.slots):
            zero = torch.zeros(self.d_out, dtype=self.dtype, device=dev)
            plan.bias = torch.stack([self.slot_bias.get(s, zero) for s in rows.slots]).unsqueeze(1)
        return plan

    def forward(self, x: Tensor) -> Tensor:
        """``W0·x`` for every row, plus each row's own LoRA path (or full replacement)."""
        out = self.kind.base_forward(self, x)
        rows = self.ctx.rows
        if rows is None or not rows.any_adapter or not (self.slot_lora or self.slot_full or self.slot_bias):
            return out
        key = (rows.key, self.ctx.version)
        if self._plan_key != key:
            self._plan, self._plan_key = self._make_plan(rows), key
        plan = self._plan
        if plan.empty:
            return out
        n = x.shape[0]
        if n != rows.size:
            raise RuntimeError(f"batch has {n} rows but the bank was given {rows.size} adapter slots")
        # Every linear in a transformer sees (batch, ..., features): fold the middle dims into one.
        x3 = x.reshape(n, -1, x.shape[-1])
        out3 = out.reshape(n, -1, out.shape[-1])
        # ``out`` is this call's own fresh tensor, so core's shrink/expand adds in place.
        out3 = shrink_expand(out3, x3, plan.lora)
        if plan.scale is not None:  # DoRA: c ⊙ (W0·x + s·B·A·x) + b = c ⊙ out + (1 − c) ⊙ b
            scale, shift = plan.scale
            out3 = out3 * scale if shift is None else torch.addcmul(shift, out3, scale)
        if plan.bias is not None:
            out3 = out3 + plan.bias
        if plan.full is not None:
            which, Wt, b = plan.full
            y = torch.bmm(x3.index_select(0, which).to(Wt.dtype), Wt)
            if b is not None:
                y = y + b
            out3 = out3.index_copy(0, which, y.to(out3.dtype))
        return out3.reshape(out.shape)

    def __getattr__(self, name: str):
        return base_getattr(self, name)

    def extra_repr(self) -> str:
        """Shown by ``print(model)``."""
        ranks = {r: g.used for r, g in sorted(self.groups.items())}
        return f"{self.kind.name}, in={self.d_in}, out={self.d_out}, adapters by rank={ranks}, full={len(self.slot_full)}"

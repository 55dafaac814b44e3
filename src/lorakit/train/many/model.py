"""One frozen base model carrying the LoRA layers of many training jobs (``lorakit train-many``).

Every module that some job adapts is wrapped once in a :class:`ManyLinear`; it keeps each job's own
:class:`~lorakit.core.layers.LoraLayer` (built by the ordinary ``inject``, so initialisation, scaling
and file keys are those of ``lorakit train``) and, in a mixed batch, adds every row's own LoRA path
through :func:`lorakit.core.batched.shrink_expand` (a per-row job index). A classification model's head
becomes a :class:`ManyHead` that applies each job's own head to that job's rows.

:meth:`SharedModel.view` puts one job's layers and head back into the tree: the model is then exactly
the model ``lorakit train`` would hold for that job, so evaluation, checkpoints, best-adapter selection
and ``save_adapter`` run unchanged on it.

Every random draw of a job comes from the job's own torch RNG state, so a job sees the masks it would
see alone. A forward that holds one job's rows runs entirely in that job's stream
(:meth:`MixedRows.running`): the base model's own dropout and the LoRA dropout draw from it in the
order of the solo forward. In a mixed forward of several jobs the LoRA dropout is drawn per job, on
the job's own rows and sequence length; the base's own dropout cannot be (one module draws one mask
for all rows), so a base that draws in training trains each job's rows in its own forward
(:attr:`SharedModel.base_draws`, found by :func:`lorakit.train.many.runner._forward_backward`).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lorakit.core.batched import RowDropout, RowPlan, rank_groups, row_plan, shrink_expand
from lorakit.core.inject import SPEC_ATTR, TARGETS_ATTR, lora_layers, replace_submodule
from lorakit.core.layers import LoraLayer, adopt_base, base_getattr
from lorakit.core.lora_linear import dropout_mask
from lorakit.core.variants import LORA
from lorakit.errors import LorakitError
from lorakit.train.checkpoint import rng_tensors, set_rng_tensors


@dataclass
class Span:
    """The rows of one job in the running mixed batch."""

    job: int
    start: int
    stop: int
    length: int  # the job's own padded sequence length (the mixed batch may be longer)


@dataclass
class MixedRows:
    """Shared by every wrapper: who owns which rows now, and each job's dropout RNG state."""

    spans: list[Span] = field(default_factory=list)
    index: list[int] = field(default_factory=list)  # job number of each row
    rng: dict[int, dict[str, Tensor]] = field(default_factory=dict)  # job -> its torch RNG states (rng_tensors)
    owner: int | None = None  # the job whose RNG state is torch's live one (a forward of its rows alone)
    # (row index, ranks of the jobs in a layer) -> core.batched.row_plan: built once per forward layout for
    # every layer with those ranks (a recomputed block's older layout gets its own entry).
    plans: dict[tuple, RowPlan] = field(default_factory=dict)

    def set(self, spans: list[Span]) -> None:
        """Make ``spans`` the layout of the next forward (None-free, in row order)."""
        self.spans = spans
        self.index = [s.job for s in spans for _ in range(s.start, s.stop)]
        self.plans = {}

    def plan(self, index: list[int], ranks: tuple[int | None, ...], device: torch.device) -> RowPlan:
        """The row plan of this layout for a layer whose jobs have ``ranks`` (cached per forward)."""
        key = (tuple(index), ranks)
        if key not in self.plans:
            self.plans[key] = row_plan(index, ranks, device)
        return self.plans[key]

    def checkpoint_contexts(self) -> tuple[AbstractContextManager, AbstractContextManager]:
        """``context_fn`` of activation checkpointing: a block's recomputation in backward sees the rows
        and the jobs' RNG states of its forward (so it draws the same dropout masks), and leaves the
        live ones as they were. Called at the block's forward."""
        # stream() replaces states, never mutates them. A job's forward of its own (owner set) draws from
        # torch's live state, which torch's checkpoint itself saves at the block's forward and replays.
        snapshot = (self.spans, self.index, dict(self.rng), self.owner)

        @contextmanager
        def replay() -> Iterator[None]:
            live = (self.spans, self.index, self.rng, self.owner)
            self.spans, self.index, self.rng, self.owner = snapshot[0], snapshot[1], dict(snapshot[2]), snapshot[3]
            try:
                yield
            finally:
                self.spans, self.index, self.rng, self.owner = live

        return nullcontext(), replay()

    @contextmanager
    def stream(self, job: int) -> Iterator[None]:
        """Draw from ``job``'s own RNG state (the global one is put back after); inside
        :meth:`running` for ``job`` its state is the live one already."""
        if self.owner == job:
            yield
            return
        outer = rng_tensors()
        set_rng_tensors(self.rng[job])
        try:
            yield
        finally:
            self.rng[job] = rng_tensors()
            set_rng_tensors(outer)

    @contextmanager
    def running(self, job: int) -> Iterator[None]:
        """A forward of ``job``'s rows alone: every draw in it (the base's dropout too) from its stream."""
        with self.stream(job):
            self.owner = job
            try:
                yield
            finally:
                self.owner = None


class ManyLinear(nn.Module):
    """A frozen linear base layer plus the LoRA path of each job that adapts it, per row."""

    def __init__(self, base: nn.Module, kind, rows: MixedRows) -> None:
        super().__init__()
        adopt_base(self, base)
        self.kind, self.rows = kind, rows
        # job -> its LoraLayer; a plain dict, so the jobs' parameters stay out of this module tree.
        object.__setattr__(self, "jobs", {})

    def _dropout(self, x: Tensor) -> RowDropout | None:
        """Each job's LoRA dropout on its own rows and length: the mask its solo run would draw
        (same shape, from the job's own RNG stream), applied by the solo op ``x·mask / (1 − p)``."""
        if not self.training or not any(layer.dropout > 0 for layer in self.jobs.values()):
            return None
        spans, masks = [], []
        for s in self.rows.spans:
            layer = self.jobs.get(s.job)
            if layer is None or layer.dropout <= 0:
                continue
            own = x[s.start:s.stop]
            own = own[:, :s.length] if own.ndim == 3 else own  # a 2-D input has no sequence to trim
            with self.rows.stream(s.job):
                mask = dropout_mask(own, layer.dropout)
            length = s.length if own.ndim == 3 else 1
            spans.append((s.start, s.stop, length, layer.dropout))
            masks.append(mask.reshape(s.stop - s.start, length, x.shape[-1]))
        return RowDropout(tuple(spans), tuple(masks)) if spans else None

    def forward(self, x: Tensor) -> Tensor:
        """``W0·x`` for every row, plus ``s_j·B_j·A_j·dropout(x)`` on the rows of each job ``j``."""
        out = self.kind.base_forward(self, x)
        if not self.rows.index or not self.jobs:
            return out
        if len(self.rows.spans) == 1:  # one job in this forward (the CPU default): its own layer's path
            return self._solo(x, out, self.rows.spans[0].job)
        n = x.shape[0]
        top = max(self.jobs) + 1
        adapters = [None] * top
        for j, layer in self.jobs.items():
            adapters[j] = (layer.lora_A, layer.effective_B(), layer.scaling)
        index = [j if j < top else -1 for j in self.rows.index]
        ranks = tuple(None if a is None else a[0].shape[0] for a in adapters)
        groups = rank_groups(index, adapters, x.device, self.rows.plan(index, ranks, x.device))
        drop = self._dropout(x)
        y = shrink_expand(out.reshape(n, -1, out.shape[-1]), x.reshape(n, -1, x.shape[-1]), groups, drop)
        return y.reshape(out.shape)

    def _solo(self, x: Tensor, out: Tensor, job: int) -> Tensor:
        """The forward holds one job's rows only: exactly what its ``lorakit train`` layer computes (the
        lean single-adapter Function, the same rounding), its dropout drawn from the job's stream."""
        layer = self.jobs.get(job)
        if layer is None:
            return out
        layer.training = self.training  # the job's layer sits outside the tree: follow this wrapper's mode
        draws = self.training and layer.dropout > 0  # nothing to draw: no RNG state to swap
        with self.rows.stream(job) if draws else nullcontext():
            return layer.variant.forward(layer, x, out)

    def __getattr__(self, name: str):
        return base_getattr(self, name)


class ManyHead(nn.Module):
    """Each job's own classification head on its rows; logits padded with zeros to the widest head."""

    def __init__(self, rows: MixedRows) -> None:
        super().__init__()
        self.rows = rows
        object.__setattr__(self, "jobs", {})

    def forward(self, h: Tensor) -> Tensor:
        """``head_j(h[rows_j])`` for each job, in row order (``h (n, ..., hidden)``)."""
        parts = [self.jobs[s.job](h[s.start:s.stop]) for s in self.rows.spans]
        width = max(p.shape[-1] for p in parts)
        return torch.cat([F.pad(p, (0, width - p.shape[-1])) for p in parts])


@dataclass
class JobLayers:
    """What one job trains inside the shared model."""

    layers: dict[str, LoraLayer]  # module path -> the job's LoRA layer
    heads: dict[str, nn.Module]  # module path -> the job's own head (classification), trained in full
    spec: object
    targets: list


class SharedModel:
    """The base model with every job's layers; :meth:`view` shows one job, as ``lorakit train`` would."""

    def __init__(self, model: nn.Module) -> None:
        self.model = model
        self.rows = MixedRows()
        self.jobs: dict[int, JobLayers] = {}
        self.wrappers: dict[str, nn.Module] = {}  # module path -> ManyLinear / ManyHead
        self.plain: dict[str, nn.Module] = {}  # module path -> the original module
        # Whether the base draws random numbers in training (its own dropout): then no forward mixes jobs.
        self.base_draws = False

    def harvest(self, job: int, heads: tuple[str, ...]) -> JobLayers:
        """Take the LoRA layers just injected into the model (and its heads) as ``job``'s own.

        The model is left plain again (base modules back in place, ``requires_grad`` of the job's
        parameters kept), ready for the next job's ``inject``.
        """
        layers = lora_layers(self.model)
        for path, layer in layers.items():  # the model is plain again before anything can raise
            replace_submodule(self.model, path, layer.base)
        for path, layer in layers.items():  # the per-row path is serve's: dense kinds, plain LoRA
            if layer.variant is not LORA or layer.initializer.moves_base \
                    or "serve" not in layer.kind.supports:
                for attr in (SPEC_ATTR, TARGETS_ATTR):
                    delattr(self.model, attr)
                raise LorakitError(f"train-many trains plain LoRA on linear layers; {path} is {layer.kind.name} "
                                   f"with {layer.variant.name} (no DoRA, PiSSA/OLoRA, conv or embedding)")
        found = JobLayers(layers, {h: self.model.get_submodule(h) for h in heads},
                          getattr(self.model, SPEC_ATTR), getattr(self.model, TARGETS_ATTR))
        for attr in (SPEC_ATTR, TARGETS_ATTR):
            delattr(self.model, attr)
        self.jobs[job] = found
        return found

    def assemble(self) -> None:
        """Wrap every adapted module (and the heads) once; the mixed batch runs through these."""
        for j, job in self.jobs.items():
            for path, layer in job.layers.items():
                if path not in self.wrappers:
                    self.plain[path] = layer.base
                    self.wrappers[path] = ManyLinear(layer.base, layer.kind, self.rows)
                self.wrappers[path].jobs[j] = layer
            for path, head in job.heads.items():
                if path not in self.wrappers:
                    self.plain[path] = self.model.get_submodule(path)
                    self.wrappers[path] = ManyHead(self.rows)
                self.wrappers[path].jobs[j] = head
        self._install(self.wrappers)

    def _install(self, modules: dict[str, nn.Module]) -> None:
        for path, module in modules.items():
            replace_submodule(self.model, path, module)

    @contextmanager
    def view(self, job: int) -> Iterator[nn.Module]:
        """The model as ``job`` alone would have it (its LoRA layers, its head); mixed again on exit."""
        mine = self.jobs[job]
        modules = {p: mine.layers.get(p) or mine.heads.get(p) or self.plain[p] for p in self.wrappers}
        training = self.model.training
        self._install(modules)
        setattr(self.model, SPEC_ATTR, mine.spec)
        setattr(self.model, TARGETS_ATTR, mine.targets)
        try:
            yield self.model
        finally:
            delattr(self.model, SPEC_ATTR)
            delattr(self.model, TARGETS_ATTR)
            self._install(self.wrappers)
            self.model.train(training)

    def parameters_of(self, job: int) -> list[nn.Parameter]:
        """The trainable parameters of ``job`` (its LoRA factors and head)."""
        with self.view(job) as model:
            return [p for p in model.parameters() if p.requires_grad]

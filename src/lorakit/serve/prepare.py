"""Turn an adapter file into per-module updates for the bank, validated against the base model.

Everything that can be wrong with an adapter is found here, before the bank changes: targets that
match no module, layer kinds the bank cannot serve, missing / unexpected / mis-shaped tensors,
non-finite values. Each is a ``ValueError`` naming the problem (the HTTP layer answers 400).

Targets are resolved against the base model's *original* module tree (captured before the bank
wrapped anything), so a module already serving other adapters still counts as the Linear it wraps.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from torch import Tensor, nn

from lorakit.core.registry import kind_for
from lorakit.core.targeting import name_matches
from lorakit.errors import LorakitError
from lorakit.io import AdapterFile, targets_for
from lorakit.io.keys import BASE_BIAS, PEFT_PREFIX, check_tensors, expected_shapes, saved_modules


class OriginalTree:
    """The base model's module tree as it was before the bank wrapped anything.

    Offers the two methods target selection reads (``named_modules``, ``get_output_embeddings``).
    """

    def __init__(self, model: nn.Module) -> None:
        # Target resolution by adapter config: adapters sharing a config (the usual case) resolve once.
        self.targets_cache: dict[str, tuple] = {}
        self._modules = list(model.named_modules())
        self._by_path = dict(self._modules)
        get_out = getattr(model, "get_output_embeddings", None)
        self._out = get_out() if callable(get_out) else None

    def named_modules(self) -> Iterator[tuple[str, nn.Module]]:
        """Every (path, module) of the unwrapped model."""
        return iter(self._modules)

    def get_output_embeddings(self) -> nn.Module | None:
        """The model's output head, so that ``all-linear`` leaves it alone as it does on the model."""
        return self._out

    def get_submodule(self, path: str) -> nn.Module:
        """The original module at ``path``."""
        return self._by_path[path]


@dataclass(frozen=True)
class ModuleUpdate:
    """What one adapter changes at one module."""

    A: Tensor | None = None
    B: Tensor | None = None
    scaling: float = 1.0
    # modules_to_save: the module's own weight, transposed (in, out), and bias.
    full: tuple[Tensor, Tensor | None] | None = None
    # bias="lora_only": trained bias minus the base bias.
    bias_delta: Tensor | None = None
    # DoRA: per-output scale c, h = c ⊙ (W0·x + s·B·A·x) + b (norms of W0 + s·B·A computed once, here).
    column_scale: Tensor | None = None


@dataclass(frozen=True)
class PreparedAdapter:
    """An adapter checked against the base, ready to be copied into a bank slot."""

    path: Path
    updates: dict[str, ModuleUpdate]
    task_type: str | None = None
    ranks: dict[str, int] = field(default_factory=dict)

    @property
    def rank(self) -> int:
        """The largest rank over the adapted modules (0 when the adapter only replaces modules)."""
        return max(self.ranks.values(), default=0)


def prepare(tree: OriginalTree, adapter: AdapterFile) -> PreparedAdapter:
    """Validate ``adapter`` against the base model and split it into per-module updates."""
    key = json.dumps(adapter.config.to_json(), sort_keys=True, default=str)
    if key not in tree.targets_cache:
        tree.targets_cache[key] = targets_for(tree, adapter)  # ValueError when a target matches nothing
    spec, targets = tree.targets_cache[key][:2]
    if spec.bias == "all":
        raise LorakitError("adapters trained with bias='all' change every bias of the model and cannot share "
                           "a base with other adapters; serve them merged (lorakit merge) instead")
    variant = spec.variant
    for t in targets:
        base = tree.get_submodule(t.path)
        kind = kind_for(base)
        if "serve" not in kind.supports:
            raise LorakitError(f"cannot serve a LoRA on {t.path!r} ({kind.name}); the bank serves linear layers")
    saved = saved_modules(tree, spec.modules_to_save)
    for path in spec.modules_to_save:
        if not any(name_matches(path, p) for p in saved):
            raise LorakitError(f"modules_to_save entry {path!r} matches no module of the base model")
    for path in saved:
        module = tree.get_submodule(path)
        if type(module) is not nn.Linear:
            raise LorakitError(f"modules_to_save {path!r} is a {type(module).__name__}; the bank serves saved "
                               f"nn.Linear modules only (e.g. a classification head)")
    expected = expected_shapes(tree, spec, targets)  # io's schema, the one loading checks too
    check_tensors(adapter.tensors, expected, f"adapter {adapter.path.name!r}")

    cached = tree.targets_cache[key]
    if len(cached) == 2:  # scalings follow from the config alone: core's factors() once per config
        factors = adapter.factors()
        cached = tree.targets_cache[key] = (spec, targets, {t.path: factors[t.path].scaling for t in targets})
    scalings = cached[2]
    updates: dict[str, ModuleUpdate] = {}
    ranks: dict[str, int] = {}
    for t in targets:
        bias_delta = None
        bias_key = f"{PEFT_PREFIX}{t.path}.{BASE_BIAS}"
        if bias_key in expected:
            base_bias = tree.get_submodule(t.path).bias.detach()
            bias_delta = adapter.tensors[bias_key].to(base_bias) - base_bias
        base = tree.get_submodule(t.path)
        kind = kind_for(base)
        A, B = (adapter.tensors[f"{PEFT_PREFIX}{t.path}.{name}"] for name in kind.names)
        extras = {name: adapter.tensors[f"{PEFT_PREFIX}{t.path}.{name}"] for name in variant.file_shapes(kind, base)}
        scale = variant.column_scale(kind, base, A, B, scalings[t.path], extras)
        updates[t.path] = ModuleUpdate(A=A, B=B, scaling=scalings[t.path], bias_delta=bias_delta, column_scale=scale)
        ranks[t.path] = t.rank
    for path in saved:
        weight = adapter.tensors[f"{PEFT_PREFIX}{path}.weight"]
        bias = adapter.tensors.get(f"{PEFT_PREFIX}{path}.bias")
        updates[path] = ModuleUpdate(full=(weight.t().contiguous(), bias))
    return PreparedAdapter(adapter.path, updates, adapter.config.task_type, ranks)

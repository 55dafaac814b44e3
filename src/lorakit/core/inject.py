"""The verbs that change a model: inject, merge, unmerge, unload, disabled, mark_trainable.

Nothing else in lorakit mutates a model's structure. Merging happens only through :func:`merge`
(never as a side effect of ``model.eval()``), in fp32, checked for finiteness, all-or-nothing.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import nn

from lorakit.core.layers import LoraLayer
from lorakit.core.registry import require_kind
from lorakit.core.spec import LoraSpec
from lorakit.core.targeting import Target, name_matches, select_targets

SPEC_ATTR = "lorakit_spec"
TARGETS_ATTR = "lorakit_targets"


def _set_submodule(model: nn.Module, path: str, module: nn.Module) -> None:
    parent_path, _, child = path.rpartition(".")
    parent = model.get_submodule(parent_path) if parent_path else model
    setattr(parent, child, module)


def lora_layers(model: nn.Module) -> dict[str, LoraLayer]:
    """Every LoRA layer of ``model`` by module path."""
    return {path: m for path, m in model.named_modules() if isinstance(m, LoraLayer)}


def inject(model: nn.Module, spec: LoraSpec, targets: list[Target] | None = None) -> list[Target]:
    """Wrap every module chosen by ``spec`` in a :class:`LoraLayer`, in place; freeze the rest.

    Returns the targets (the same list the dry run :func:`select_targets` gives); ``targets`` may be
    given already resolved (a saved adapter does so). The model's outputs are unchanged until the
    adapter trains, because B starts at zero.
    """
    if lora_layers(model):
        raise ValueError("this model already holds LoRA layers: unload() it before injecting again")
    if targets is None:
        targets = select_targets(model, spec)
    for t in targets:
        base = model.get_submodule(t.path)
        kind = require_kind(base, t.path)
        layer = LoraLayer(
            base, kind, t.rank, t.alpha, scaling=spec.scaling(t.r, t.alpha),
            dropout=spec.dropout, init=spec.init, slices=t.slices,
        )
        _set_submodule(model, t.path, layer)
    setattr(model, SPEC_ATTR, spec)
    setattr(model, TARGETS_ATTR, targets)
    mark_trainable(model, bias=spec.bias, modules_to_save=spec.modules_to_save)
    return targets


def mark_trainable(model: nn.Module, bias: str = "none", modules_to_save: tuple[str, ...] = ()) -> None:
    """Only LoRA factors train, plus biases per ``bias`` mode and the named modules in full."""
    layers = lora_layers(model)
    for name, param in model.named_parameters():
        param.requires_grad = name.endswith((".lora_A", ".lora_B")) or name in ("lora_A", "lora_B")
        if bias == "all" and name.endswith("bias"):
            param.requires_grad = True
    if bias == "lora_only":
        for layer in layers.values():
            if getattr(layer, "bias", None) is not None:
                layer.bias.requires_grad = True
    for pattern in modules_to_save:
        hits = [p for p, _ in model.named_modules() if p and name_matches(pattern, p)]
        if not hits:
            raise ValueError(f"modules_to_save entry {pattern!r} matches no module")
        for path in hits:
            for param in model.get_submodule(path).parameters():
                param.requires_grad = True


@dataclass(frozen=True)
class ParameterReport:
    """Counts of parameters, as the paper reports them."""

    total: int
    trainable: int
    lora: int

    @property
    def percent(self) -> float:
        """Trainable share of all parameters, in percent."""
        return 100.0 * self.trainable / max(self.total, 1)

    def __str__(self) -> str:
        return f"trainable {self.trainable:,} of {self.total:,} parameters ({self.percent:.4f}%), LoRA {self.lora:,}"


def parameter_report(model: nn.Module) -> ParameterReport:
    """Total, trainable and LoRA parameter counts (shared tensors counted once)."""
    seen: set[int] = set()
    total = trainable = lora = 0
    for name, p in model.named_parameters(remove_duplicate=False):
        if id(p) in seen:
            continue
        seen.add(id(p))
        total += p.numel()
        trainable += p.numel() if p.requires_grad else 0
        if name.endswith(("lora_A", "lora_B")):
            lora += p.numel()
    return ParameterReport(total, trainable, lora)


@dataclass(frozen=True)
class MergeReport:
    """What :func:`merge` did: layers merged and the worst difference it caused on a probe input."""

    layers: int
    max_abs_diff: float
    max_rel_diff: float


def _probe(layer: LoraLayer, generator: torch.Generator) -> torch.Tensor:
    w = layer.weight
    if layer.kind.name == "embedding":
        return torch.randint(0, layer.base.num_embeddings, (4, 8), generator=generator).to(w.device)
    if layer.kind.name in ("conv1d", "conv2d"):
        size = [max(k, 5) for k in layer.base.kernel_size]
        return torch.randn(2, layer.base.in_channels, *size, generator=generator).to(w)
    return torch.randn(4, layer.kind.features(layer.base)[0], generator=generator).to(w)


def merge(model: nn.Module) -> MergeReport:
    """Fold ``s·B·A`` into each base weight. Computed in fp32; all-or-nothing.

    Every ΔW is computed and checked for finiteness before any weight changes, so a bad adapter
    never leaves a half-merged model. Each layer is probed with a random input before and after;
    the report carries the largest absolute and relative output difference.
    """
    layers = [m for m in lora_layers(model).values() if not m.merged]
    owners: dict[int, int] = {}
    for _, param in model.named_parameters(remove_duplicate=False):
        owners[id(param)] = owners.get(id(param), 0) + 1
    tied = [p for p, m in lora_layers(model).items() if m in layers and owners.get(id(m.weight), 0) > 1]
    if tied:
        # A tied weight (lm_head = input embeddings) would change both modules; refuse, don't surprise.
        raise ValueError(f"refusing to merge into tied weights of {', '.join(tied)}: untie them first")
    deltas = []
    with torch.no_grad():
        for layer in layers:
            delta = layer.kind.delta_weight(layer.base, layer.lora_A.float(), layer.effective_B().float())
            delta = delta * layer.scaling
            if not torch.isfinite(delta).all():
                raise ValueError(f"refusing to merge: the adapter's update is not finite in {type(layer.base).__name__}")
            deltas.append(delta)
        gen = torch.Generator().manual_seed(0)
        max_abs = max_rel = 0.0
        for layer, delta in zip(layers, deltas, strict=True):
            x = _probe(layer, gen)
            was_training = layer.training
            layer.eval()  # the probe must not see dropout
            before = layer(x).float()
            merged = (layer.weight.float() + delta).to(layer.weight.dtype)
            layer.weight.copy_(merged)
            layer.merged = True
            after = layer(x).float()
            layer.train(was_training)
            diff = (after - before).abs().max().item()
            max_abs = max(max_abs, diff)
            max_rel = max(max_rel, diff / max(before.abs().max().item(), 1e-12))
    return MergeReport(len(layers), max_abs, max_rel)


def unmerge(model: nn.Module) -> int:
    """Subtract ``s·B·A`` again from every merged layer; returns how many were unmerged."""
    count = 0
    with torch.no_grad():
        for layer in lora_layers(model).values():
            if layer.merged:
                delta = layer.kind.delta_weight(layer.base, layer.lora_A.float(), layer.effective_B().float())
                layer.weight.copy_((layer.weight.float() - delta * layer.scaling).to(layer.weight.dtype))
                layer.merged = False
                count += 1
    return count


def unload(model: nn.Module, merge_first: bool = True) -> nn.Module:
    """Put the plain base layers back (merged with the adapter unless ``merge_first=False``).

    The returned model (the same object) has exactly the original state-dict keys.
    """
    if merge_first:
        merge(model)
    else:
        unmerge(model)
    for path, layer in lora_layers(model).items():
        base = layer.base
        # Hand the (possibly moved or merged) parameters back to the base layer under their names.
        for name, _ in list(base.named_parameters(recurse=False)):
            setattr(base, name, getattr(layer, name))
        _set_submodule(model, path, base)
    for attr in (SPEC_ATTR, TARGETS_ATTR):
        if hasattr(model, attr):
            delattr(model, attr)
    return model


@contextmanager
def disabled(model: nn.Module) -> Iterator[nn.Module]:
    """Run the base model with every adapter switched off; restored on exit, even on error."""
    layers = list(lora_layers(model).values())
    if any(layer.merged for layer in layers):
        raise ValueError("cannot disable a merged adapter: unmerge(model) first")
    previous = [layer.disabled for layer in layers]
    try:
        for layer in layers:
            layer.disabled = True
        yield model
    finally:
        for layer, flag in zip(layers, previous, strict=True):
            layer.disabled = flag

"""The verbs that change a model: inject, merge, unmerge, unload, disabled, mark_trainable.

Nothing else in lorakit mutates a model's structure. Merging happens only through :func:`merge`
(never as a side effect of ``model.eval()``), in fp32, checked for finiteness, all-or-nothing.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import nn

from lorakit.core.layers import LoraLayer
from lorakit.core.registry import require_kind
from lorakit.core.spec import BIAS_MODES, LoraSpec
from lorakit.core.targeting import Target, name_matches, select_targets
from lorakit.errors import LorakitError

SPEC_ATTR = "lorakit_spec"
TARGETS_ATTR = "lorakit_targets"


def replace_submodule(model: nn.Module, path: str, module: nn.Module) -> None:
    """Put ``module`` at ``path`` (a dotted module path) in ``model``."""
    parent_path, _, child = path.rpartition(".")
    parent = model.get_submodule(parent_path) if parent_path else model
    setattr(parent, child, module)


def lora_layers(model: nn.Module) -> dict[str, LoraLayer]:
    """Every LoRA layer of ``model`` by module path."""
    return {path: m for path, m in model.named_modules() if isinstance(m, LoraLayer)}


def inject(model: nn.Module, spec: LoraSpec, targets: list[Target] | None = None) -> list[Target]:
    """Wrap every module chosen by ``spec`` in a :class:`LoraLayer`, in place; freeze the rest.

    Returns the targets (the same list the dry run :func:`select_targets` gives); ``targets`` may be
    given already resolved (a saved adapter does so). All or nothing: every layer is built before the
    model changes, and a failure leaves the model as it was. The model's outputs are unchanged (B
    starts at zero, or an SVD init's ``s·B0·A0`` is moved out of the base weight).
    """
    if lora_layers(model):
        raise LorakitError("this model already holds LoRA layers: unload() it before injecting again")
    if targets is None:
        targets = select_targets(model, spec)
    variant = spec.variant
    layers = []
    for t in targets:
        base = model.get_submodule(t.path)
        layers.append(LoraLayer(base, require_kind(base, t.path), t.rank, t.alpha, scaling=spec.scaling(t.r, t.alpha),
                                dropout=spec.dropout, init=spec.init, slices=t.slices, variant=variant))
    done: list[tuple[str, LoraLayer]] = []
    try:
        for t, layer in zip(targets, layers, strict=True):
            replace_submodule(model, t.path, layer)
            done.append((t.path, layer))
        mark_trainable(model, bias=spec.bias, modules_to_save=spec.modules_to_save)
    except BaseException:
        for path, layer in done:
            replace_submodule(model, path, layer.base)
        raise
    setattr(model, SPEC_ATTR, spec)
    setattr(model, TARGETS_ATTR, targets)
    for layer in layers:
        layer.initializer.shift(layer)
    return targets


def adapter_parameters(model: nn.Module) -> dict[str, nn.Parameter]:
    """Every adapter parameter (A, B, a variant's extras) by its name in ``model``."""
    return {f"{path}.{name}": p for path, layer in lora_layers(model).items()
            for name, p in layer.adapter_parameters().items()}


def mark_trainable(model: nn.Module, bias: str = "none", modules_to_save: tuple[str, ...] = ()) -> None:
    """Only adapter parameters train, plus biases per ``bias`` mode and the named modules in full."""
    if bias not in BIAS_MODES:
        raise LorakitError(f"bias must be one of {', '.join(BIAS_MODES)}, got {bias!r}")
    saved = {}
    for pattern in modules_to_save:  # checked before any flag changes
        saved[pattern] = [p for p, _ in model.named_modules() if p and name_matches(pattern, p)]
        if not saved[pattern]:
            raise LorakitError(f"modules_to_save entry {pattern!r} matches no module")
    adapter = {id(p) for p in adapter_parameters(model).values()}
    for name, param in model.named_parameters():
        param.requires_grad = id(param) in adapter or (bias == "all" and name.rpartition(".")[2] == "bias")
    if bias == "lora_only":
        for layer in lora_layers(model).values():
            if getattr(layer, "bias", None) is not None:
                layer.bias.requires_grad = True
    for path in (p for hits in saved.values() for p in hits):
        for param in model.get_submodule(path).parameters():
            param.requires_grad = True


@dataclass(frozen=True)
class MergeReport:
    """What :func:`merge` did: layers merged and the worst difference it caused on a probe input."""

    layers: int
    max_abs_diff: float
    max_rel_diff: float


def merge(model: nn.Module) -> MergeReport:
    """Fold each adapter into its base weight (the variant's merge). Computed in fp32; all-or-nothing.

    Every merged weight is computed and checked for finiteness before any weight changes, so a bad
    adapter never leaves a half-merged model. Each layer is probed (in eval mode) with a random
    input before and after; the report carries the largest absolute and relative output difference.
    """
    layers = [m for m in lora_layers(model).values() if not m.merged]
    owners = Counter(id(param) for _, param in model.named_parameters(remove_duplicate=False))
    tied = [p for p, m in lora_layers(model).items() if m in layers and owners[id(m.weight)] > 1]
    if tied:
        # A tied weight (lm_head = input embeddings) would change both modules; refuse, don't surprise.
        raise LorakitError(f"refusing to merge into tied weights of {', '.join(tied)}: untie them first")
    with torch.no_grad():
        weights = []
        for layer in layers:
            merged = layer.variant.merged(layer, layer.weight.float(), remember=True)
            if not torch.isfinite(merged).all():
                raise LorakitError(f"refusing to merge: the adapter's update is not finite in {type(layer.base).__name__}")
            weights.append(merged)
        gen = torch.Generator().manual_seed(0)
        max_abs = max_rel = 0.0
        for layer, merged in zip(layers, weights, strict=True):
            x = layer.kind.probe(layer.base, gen)
            was_training = layer.training
            layer.eval()  # the probe must not see dropout
            before = layer(x).float()
            layer.weight.copy_(merged.to(layer.weight.dtype))
            layer.merged = True
            after = layer(x).float()
            layer.train(was_training)
            diff = (after - before).abs().max().item()
            max_abs = max(max_abs, diff)
            max_rel = max(max_rel, diff / max(before.abs().max().item(), 1e-12))
    return MergeReport(len(layers), max_abs, max_rel)


def unmerge(model: nn.Module) -> int:
    """Take every merged adapter out of its base weight again; returns how many were unmerged."""
    count = 0
    with torch.no_grad():
        for layer in lora_layers(model).values():
            if layer.merged:
                layer.weight.copy_(layer.variant.unmerged(layer, layer.weight.float()).to(layer.weight.dtype))
                layer.merged = False
                count += 1
    return count


def unload(model: nn.Module, merge_first: bool = True) -> nn.Module:
    """Put the plain base layers back (merged with the adapter unless ``merge_first=False``).

    The returned model (the same object) has exactly the original state-dict keys.
    """
    merge(model) if merge_first else unmerge(model)
    for path, layer in lora_layers(model).items():
        if not layer.merged:
            layer.initializer.shift(layer, +1.0)
        base = layer.base
        # Hand the (possibly moved or merged) parameters back to the base layer under their names.
        for name, _ in list(base.named_parameters(recurse=False)):
            setattr(base, name, getattr(layer, name))
        replace_submodule(model, path, base)
    for attr in (SPEC_ATTR, TARGETS_ATTR):
        if hasattr(model, attr):
            delattr(model, attr)
    return model


@contextmanager
def disabled(model: nn.Module) -> Iterator[nn.Module]:
    """Run the base model with every adapter switched off; restored on exit, even on error."""
    layers = list(lora_layers(model).values())
    if any(layer.merged for layer in layers):
        raise LorakitError("cannot disable a merged adapter: unmerge(model) first")
    previous = [layer.disabled for layer in layers]
    try:
        for layer in layers:
            layer.disabled = True
        yield model
    finally:
        for layer, flag in zip(layers, previous, strict=True):
            layer.disabled = flag

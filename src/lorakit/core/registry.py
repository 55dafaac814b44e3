"""Layer kinds: how LoRA attaches to each supported base layer type, looked up by exact type.

A *kind* is a small strategy object (not an ``nn.Module``) that declares, for one base layer type,
everything the rest of lorakit may ask: the file names of A and B, what it supports (``supports``:
"slices", "serve", "all-linear", "dora", "svd-init"), the checks a base layer must pass, the base
forward, the LoRA path ``B·A·x``, and the layout of ``ΔW`` (``matrix`` / ``layout`` convert between
the base weight and the (out, in) matrix ``B·A``). This is the one extension point: nothing outside
it compares kind names.

Lookup is by the exact type's qualified name, never ``isinstance``: a subclass (a quantised Linear,
say) may compute something different and must be registered on purpose. This module holds the protocol
and the table; the built-in kinds live in :mod:`lorakit.core.kinds` and are registered once, explicitly,
by ``lorakit.core``'s ``__init__`` (:func:`~lorakit.core.kinds.register_builtin_kinds`).
"""

from __future__ import annotations

from typing import Protocol

import torch
from torch import Tensor, nn

from lorakit.errors import LorakitError, UnsupportedLayerError

# PEFT's tensor names for A and B of a linear-like layer (a kind may declare others, e.g. embeddings).
LORA_NAMES = ("lora_A.weight", "lora_B.weight")


def delta_matrix(A: Tensor, B: Tensor) -> Tensor:
    """The unscaled ``B·A`` as an (out, in) matrix (conv kernels flattened): the one ΔW product."""
    r = A.shape[0]
    return B.reshape(B.shape[0], r) @ A.reshape(r, -1)


class LayerKind(Protocol):
    """What lorakit needs to know about one base layer type (see the module docstring).

    Kinds subclass it explicitly and inherit its defaults: PEFT's linear tensor names, nothing extra
    supported, no checks, a base weight already laid out (out, in) like ``B·A``.
    """

    name: str
    names: tuple[str, str] = LORA_NAMES  # PEFT's tensor names for A and B
    supports: frozenset[str] = frozenset()
    fan_in_fan_out: bool = False  # PEFT's flag: the base weight is stored (in, out)

    def check(self, base: nn.Module, path: str) -> None:
        """Raise ``ValueError`` if this particular layer cannot be adapted (the dry run calls it)."""

    def features(self, base: nn.Module) -> tuple[int, int]:
        """(in, out) sizes: ``r·(in + out)`` is the LoRA parameter count (conv: in = C_in·k)."""
        raise NotImplementedError

    def factor_shapes(self, base: nn.Module, r: int) -> tuple[tuple[int, ...], tuple[int, ...]]:
        """Shapes of A and B for rank r, laid out as PEFT stores them."""
        raise NotImplementedError

    def base_forward(self, layer: nn.Module, x: Tensor, bias: bool = True) -> Tensor:
        """The base layer's own forward from ``layer.weight`` (and ``layer.bias`` when ``bias``)."""
        raise NotImplementedError

    def lora_forward(self, layer: nn.Module, x: Tensor, A: Tensor, B: Tensor, p: float, training: bool) -> Tensor:
        """The unscaled LoRA path ``B·A·dropout_p(x)`` in the base output's layout."""
        raise NotImplementedError

    def matrix(self, weight: Tensor) -> Tensor:
        """The base weight as an (out, in) matrix, laid out like ``B·A``."""
        return weight

    def layout(self, matrix: Tensor, base: nn.Module) -> Tensor:
        """An (out, in) matrix laid out like ``base.weight`` (the inverse of :meth:`matrix`)."""
        return matrix

    def probe(self, base: nn.Module, generator: torch.Generator) -> Tensor:
        """A random input for ``base`` (merge compares outputs on it)."""
        raise NotImplementedError




def qualified_name(cls: type) -> str:
    """``module.QualName`` of a type: the registry's key."""
    return f"{cls.__module__}.{cls.__qualname__}"


_REGISTRY: dict[str, LayerKind] = {}


def register(base_type: type | str, kind: LayerKind) -> None:
    """Register ``kind`` for an exact base type (or its qualified name). Registering twice is an error."""
    key = base_type if isinstance(base_type, str) else qualified_name(base_type)
    if key in _REGISTRY:
        raise LorakitError(f"a LoRA kind is already registered for {key} ({_REGISTRY[key].name})")
    _REGISTRY[key] = kind


def kind_for(module: nn.Module) -> LayerKind | None:
    """The kind registered for ``module``'s exact type, or None."""
    return _REGISTRY.get(qualified_name(type(module)))


def registered_kind(qualified: str) -> LayerKind | None:
    """The kind registered under a type's qualified name (``module.QualName``), or None."""
    return _REGISTRY.get(qualified)


def require_kind(module: nn.Module, path: str) -> LayerKind:
    """Like :func:`kind_for`, but an unsupported type raises an error listing the supported ones."""
    if (kind := kind_for(module)) is None:
        raise UnsupportedLayerError(f"cannot adapt {path!r}: layer type {type(module).__name__} is not supported; "
                                    f"supported: {', '.join(supported_types())}")
    return kind


def check_supports(kind: LayerKind, needs: frozenset[str] | set[str], path: str) -> None:
    """Raise if ``kind`` lacks any of ``needs`` (a variant's or init's ``requires``, "slices"); the
    error names the layer, what is missing and what the kind does support."""
    if missing := set(needs) - kind.supports:
        raise LorakitError(f"cannot adapt {path!r} ({kind.name}): {', '.join(sorted(missing))} not supported on "
                           f"this layer kind; it supports: {', '.join(sorted(kind.supports)) or 'plain LoRA only'}")


def factor_names() -> list[tuple[str, str]]:
    """Every distinct (A, B) tensor-name pair the registered kinds store (reading a file without its model)."""
    return sorted({k.names for k in _REGISTRY.values()})


def supported_types() -> list[str]:
    """Short names of every registered base layer type."""
    return sorted(key.rsplit(".", 1)[-1] for key in _REGISTRY)


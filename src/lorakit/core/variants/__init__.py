"""LoRA variants and initialisations as strategy objects, looked up by name (PEFT's ``LoraVariant`` idea).

A *variant* decides what a :class:`~lorakit.core.layers.LoraLayer` computes from its A, B (and any
extra parameters it declares): the forward, the merged weight and the file keys of its extras. An
*init* fills A and B (``LoraSpec.init``). The protocols and their plain defaults are in :mod:`.base`,
DoRA in :mod:`.dora`, the other inits in :mod:`.inits`; this module holds the registry, filled once,
explicitly, by ``lorakit.core``'s ``__init__`` (:func:`register_builtin_variants`), as an extension
would fill it with :func:`register_variant`.
"""

from __future__ import annotations

from lorakit.core.variants.base import KAIMING, LORA, Init, Lora
from lorakit.core.variants.dora import DORA
from lorakit.core.variants.inits import GAUSSIAN, OLORA, PISSA
from lorakit.errors import LorakitError

__all__ = ["DORA", "INITS", "LORA", "VARIANTS", "Init", "Lora", "lookup", "register_builtin_variants", "register_variant"]

VARIANTS: dict[str, Lora] = {}
INITS: dict[str, Init] = {}


def register_variant(strategy: Lora | Init) -> None:
    """Register a variant (a :class:`Lora`) or an init (an :class:`Init`) under its ``name``; twice is an error."""
    table = INITS if isinstance(strategy, Init) else VARIANTS
    if strategy.name in table:
        raise LorakitError(f"a LoRA variant or init named {strategy.name!r} is already registered")
    table[strategy.name] = strategy


def lookup(table: dict, what: str, name: str):
    """``table[name]`` (:data:`VARIANTS` or :data:`INITS`); an unknown name raises listing the registered ones."""
    if name not in table:
        raise LorakitError(f"{what} must be one of {', '.join(table)}, got {name!r}")
    return table[name]


def register_builtin_variants() -> None:
    """Register plain LoRA, DoRA and the inits kaiming, gaussian, pissa, olora; ``lorakit.core`` calls it once."""
    for strategy in (LORA, DORA, KAIMING, GAUSSIAN, PISSA, OLORA):
        register_variant(strategy)

"""LoraSpec: what to adapt and how, as one frozen, validated value.

A spec is validated once, in ``__post_init__``; nothing downstream "fixes" it. Wrong input raises
``ValueError`` naming the bad value and what is allowed (DESIGN principle 6).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from types import MappingProxyType

from lorakit.core.variants import INITS, LORA, VARIANTS, Init, Lora, lookup
from lorakit.errors import LorakitError

BIAS_MODES = ("none", "all", "lora_only")


def _frozen_map(value: Mapping | None, what: str, cast: type) -> Mapping:
    if value is None:
        return MappingProxyType({})
    if not isinstance(value, Mapping):
        raise LorakitError(f"{what} must be a mapping of pattern -> value, got {type(value).__name__}")
    out = {}
    for key, val in value.items():
        if not isinstance(key, str) or not key:
            raise LorakitError(f"{what}: keys must be non-empty strings, got {key!r}")
        try:
            out[key] = cast(val)
        except (TypeError, ValueError):
            raise LorakitError(f"{what}[{key!r}] must be a number, got {val!r}") from None
    return MappingProxyType(out)


@dataclass(frozen=True)
class LoraSpec:
    """How to adapt a model: ``h = W0·x + s·B·A·x`` with ``s = alpha / r`` (or ``alpha / √r``).

    Example: ``LoraSpec(r=8, alpha=16, targets=("qv",))`` adapts the query and value projections.
    """

    # Rank r of the update B·A; the paper's default experiments use 1..64.
    r: int = 8
    # Scale numerator: the LoRA path is multiplied by alpha / r (alpha / sqrt(r) with rslora).
    alpha: float = 16.0
    # Dropout on the LoRA path only (the base path never sees it); inactive in eval mode.
    dropout: float = 0.0
    # What to adapt: presets ("qv", "attention", "ffn", "all-linear"), module-name suffixes
    # ("query", "c_attn[q,v]" for slices of a fused projection) or regexes ("re:.*\.q_proj").
    targets: tuple[str, ...] = ("qv",)
    # Only adapt modules inside these layer indices (the first integer in a module's path).
    layers: tuple[int, ...] | None = None
    # Initialisation: A Kaiming-uniform as nn.Linear ("kaiming") or N(0, 1/r) ("gaussian") with B zero;
    # or A, B from W0's top-r SVD ("pissa") / QR ("olora"), moved out of W0 (saved relative to the original W0).
    init: str = "kaiming"
    # DoRA: a trained magnitude per output row times the normalised direction W0 + s·B·A.
    dora: bool = False
    # Any registered variant by name (``lorakit.core.variants.register_variant``); None: "dora" if dora else
    # "lora". "dora" here is the same as dora=True (PEFT's use_dora), and is stored that way.
    variant_name: str | None = None
    # rsLoRA scaling alpha / sqrt(r), which keeps the update's scale stable as r grows.
    rslora: bool = False
    # Which biases train: "none", "all" (every bias of the model) or "lora_only" (adapted layers).
    bias: str = "none"
    # Modules trained in full and saved with the adapter (e.g. a classification head).
    modules_to_save: tuple[str, ...] = ()
    # Per-target overrides: a suffix or "re:" pattern -> rank / alpha.
    rank_pattern: Mapping[str, int] = field(default_factory=dict)
    alpha_pattern: Mapping[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if isinstance(self.targets, str):
            object.__setattr__(self, "targets", (self.targets,))
        object.__setattr__(self, "targets", tuple(self.targets))
        object.__setattr__(self, "modules_to_save", tuple(self.modules_to_save))
        if self.layers is not None:
            object.__setattr__(self, "layers", tuple(int(i) for i in self.layers))
        object.__setattr__(self, "rank_pattern", _frozen_map(self.rank_pattern, "rank_pattern", int))
        object.__setattr__(self, "alpha_pattern", _frozen_map(self.alpha_pattern, "alpha_pattern", float))
        if isinstance(self.r, bool) or not isinstance(self.r, int) or self.r < 1:
            raise LorakitError(f"rank r must be a positive integer, got {self.r!r}")
        for key, rank in self.rank_pattern.items():
            if rank < 1:
                raise LorakitError(f"rank_pattern[{key!r}] must be a positive integer, got {rank}")
        if not (isinstance(self.alpha, int | float) and math.isfinite(self.alpha) and self.alpha > 0):
            raise LorakitError(f"alpha must be a finite number > 0, got {self.alpha!r}")
        if not (isinstance(self.dropout, int | float) and 0.0 <= self.dropout < 1.0):
            raise LorakitError(f"dropout must be in [0, 1), got {self.dropout!r}")
        if not self.targets or not all(isinstance(t, str) and t.strip() for t in self.targets):
            raise LorakitError(f"targets must be a non-empty list of non-empty strings, got {self.targets!r}")
        if self.variant_name is not None:
            lookup(VARIANTS, "variant", self.variant_name)  # an unknown name raises, listing the registered ones
            if self.dora and self.variant_name != "dora":
                raise LorakitError(f"dora=True contradicts variant_name={self.variant_name!r}: choose one variant")
            if self.variant_name in ("lora", "dora"):  # one spelling of each built-in: PEFT's
                object.__setattr__(self, "dora", self.variant_name == "dora")
                object.__setattr__(self, "variant_name", None)
        if self.initializer.moves_base and self.variant is not LORA:
            raise LorakitError(f"init={self.init!r} cannot be combined with {self.variant.name}: its saved adapter is "
                               "only an ordinary LoRA relative to the original base")
        if self.bias not in BIAS_MODES:
            raise LorakitError(f"bias must be one of {', '.join(BIAS_MODES)}, got {self.bias!r}")
        if self.layers is not None and any(i < 0 for i in self.layers):
            raise LorakitError(f"layers must be non-negative indices, got {self.layers!r}")
        for what, patterns in (("targets", self.targets), ("modules_to_save", self.modules_to_save),
                               ("rank_pattern", tuple(self.rank_pattern)), ("alpha_pattern", tuple(self.alpha_pattern))):
            for pattern in patterns:
                if isinstance(pattern, str) and pattern.startswith("re:"):
                    try:
                        re.compile(pattern[3:])
                    except re.error as exc:
                        raise LorakitError(f"{what}: {pattern!r} is not a valid regex ({exc})") from None

    def __reduce__(self):
        # mappingproxy fields cannot be pickled or deep-copied as they are: rebuild from plain dicts,
        # so deepcopy(model) and pickling of an injected model work.
        kwargs = {f.name: dict(v) if isinstance(v, Mapping) else v for f in fields(self) for v in [getattr(self, f.name)]}
        return (_spec_from_kwargs, (kwargs,))

    @property
    def variant(self) -> Lora:
        """The registered variant this spec asks for (DoRA: :mod:`lorakit.core.variants.dora`)."""
        return lookup(VARIANTS, "variant", self.variant_name or ("dora" if self.dora else "lora"))

    @property
    def initializer(self) -> Init:
        """The registered init named by ``init`` (unknown names raise, listing the registered ones)."""
        return lookup(INITS, "init", self.init)

    def scaling(self, r: int, alpha: float) -> float:
        """The factor s on the LoRA path for a module of rank ``r`` and numerator ``alpha``."""
        return alpha / math.sqrt(r) if self.rslora else alpha / r


def _spec_from_kwargs(kwargs: dict) -> LoraSpec:
    return LoraSpec(**kwargs)

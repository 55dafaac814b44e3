"""Choosing which modules to adapt: pure functions over a model's module tree.

A target is a preset (``qv``, ``attention``, ``ffn``, ``all-linear``), a module-name suffix
(``query``, ``mlp.down_proj``), a suffix with slices of a fused projection (``c_attn[q,v]``,
``c_attn[0,2/3]``) or a regex on the full path (``re:.*layers\\.[0-3]\\..*proj``). Every target must
match something: a target that matches nothing is an error, never a warning.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from torch import nn

from lorakit.core.presets import PRESETS
from lorakit.core.registry import check_supports, kind_for, require_kind, supported_types
from lorakit.core.spec import LoraSpec
from lorakit.errors import LorakitError, UnsupportedLayerError

ALL_LINEAR = "all-linear"
# Sequence-classification heads (BERT-like / decoder models): trained in full, saved as modules_to_save.
CLASSIFIER_HEADS = ("classifier", "score")
# Output heads that "all-linear" leaves alone (the paper adapts the body, not the head).
HEAD_NAMES = ("lm_head", *CLASSIFIER_HEADS, "qa_outputs", "cls")
_QKV = {"q": 0, "k": 1, "v": 2}


@dataclass(frozen=True)
class Target:
    """One module chosen for adaptation."""

    path: str
    kind: str
    in_features: int
    out_features: int
    r: int
    alpha: float
    # (number of equal output slices, selected slice indices) for a fused projection.
    slices: tuple[int, tuple[int, ...]] | None = None

    @property
    def rank(self) -> int:
        """The rank of the stored A/B pair (r per slice times the number of slices)."""
        return self.r * (len(self.slices[1]) if self.slices else 1)

    @property
    def num_params(self) -> int:
        """LoRA parameters of this target: ``r·(in + out)``, per adapted slice for fused ones."""
        if self.slices:
            n, sel = self.slices
            return self.r * len(sel) * (self.in_features + self.out_features // n)
        return self.r * (self.in_features + self.out_features)


def parse_target(target: str) -> tuple[str, tuple[int, tuple[int, ...]] | None]:
    """Split ``"c_attn[q,v]"`` into ``("c_attn", (3, (0, 2)))``; plain names get ``None``."""
    m = re.fullmatch(r"(.+?)\[([^\]]+)\]", target)
    if not m or target.startswith("re:"):
        return target, None
    name, inner = m.group(1), m.group(2).replace(" ", "")
    if "/" in inner:
        picks, _, n_text = inner.partition("/")
        try:
            n, sel = int(n_text), tuple(int(p) for p in picks.split(","))
        except ValueError:
            raise LorakitError(f"bad slice spec in {target!r}: use e.g. c_attn[0,2/3]") from None
    else:
        try:
            n, sel = 3, tuple(_QKV[p] for p in inner.split(","))
        except KeyError:
            raise LorakitError(f"bad slice spec in {target!r}: letters must be q, k, v (or use [0,2/3])") from None
    if len(set(sel)) != len(sel) or any(not 0 <= s < n for s in sel) or n < 1:
        raise LorakitError(f"bad slice spec in {target!r}: indices must be distinct and in 0..{n - 1}")
    return name, (n, tuple(sorted(sel)))


def name_matches(pattern: str, path: str) -> bool:
    """Suffix match on whole path components, or a regex (``re:`` prefix) on the full path."""
    if pattern.startswith("re:"):
        return re.fullmatch(pattern[3:], path) is not None
    return path == pattern or path.endswith("." + pattern)


def layer_index(path: str) -> int | None:
    """The first integer component of a module path (``model.layers.7.mlp`` → 7)."""
    for part in path.split("."):
        if part.isdigit():
            return int(part)
    return None


def override(patterns, path: str, default):
    """The value of the first pattern matching ``path`` (rank/alpha patterns), else ``default``."""
    for pattern, value in patterns.items():
        if name_matches(pattern, path):
            return value
    return default


def _head_paths(model: nn.Module) -> set[str]:
    heads = set()
    get_out = getattr(model, "get_output_embeddings", None)
    out = get_out() if callable(get_out) else None
    for path, module in model.named_modules():
        if module is out or path.split(".")[-1] in HEAD_NAMES or path.split(".")[0] in HEAD_NAMES:
            heads.add(path)
    return heads


def _is_inside(path: str, prefixes: Iterable[str]) -> bool:
    return any(path == p or path.startswith(p + ".") for p in prefixes)


def select_targets(model: nn.Module, spec: LoraSpec) -> list[Target]:
    """Resolve ``spec.targets`` against ``model``: the dry run, with no side effect.

    Raises ``ValueError`` if any target matches nothing (after the layer restriction) and
    ``TypeError`` if a named module has an unsupported layer type.
    """
    modules = dict(model.named_modules())
    saved = [p for p in modules if any(name_matches(m, p) for m in spec.modules_to_save)]
    chosen: dict[str, tuple[int, tuple[int, ...]] | None] = {}
    for target in spec.targets:
        hits = _resolve_one(model, modules, target, spec, saved)
        # A target that names only fully-trained modules (PEFT lists the head in its target list
        # when modules_to_save holds it) is covered by them: nothing to adapt, nothing missing.
        covered = saved and not hits and all(
            _is_inside(p, saved) for p, _ in _resolve_one(model, modules, target, spec, []) or [("", None)]
        )
        if not hits and not covered:
            where = f" in layers {list(spec.layers)}" if spec.layers is not None else ""
            raise LorakitError(
                f"target {target!r} matches no module{where}; presets: {', '.join([*PRESETS, ALL_LINEAR])}; "
                f"a suffix like 'q_proj' or a regex like 're:.*attn.*' (see `lorakit inspect MODEL`)"
            )
        for path, slices in hits:
            if path in chosen and chosen[path] != slices:
                raise LorakitError(f"module {path!r} is targeted twice with different slices")
            chosen[path] = slices
    targets = []
    requires = spec.variant.requires | spec.initializer.requires
    for path in sorted(chosen, key=list(modules).index):
        module = modules[path]
        kind = require_kind(module, path)
        slices = chosen[path]
        kind.check(module, path)
        needs = requires | ({"slices"} if slices is not None else set())
        check_supports(kind, needs, path)
        if slices is not None and spec.initializer.moves_base:
            raise LorakitError(f"init={spec.init!r} cannot adapt slices of a fused projection ({path!r})")
        d_in, d_out = kind.features(module)
        if slices is not None and d_out % slices[0]:
            raise LorakitError(f"{path!r}: {d_out} output features do not split into {slices[0]} slices")
        r = int(override(spec.rank_pattern, path, spec.r))
        alpha = float(override(spec.alpha_pattern, path, spec.alpha))
        targets.append(Target(path, kind.name, d_in, d_out, r, alpha, slices))
    return targets


def _resolve_one(model, modules, target, spec, saved) -> list[tuple[str, tuple | None]]:
    def allowed(path: str) -> bool:
        return bool(path) and not _is_inside(path, saved) and (spec.layers is None or layer_index(path) in spec.layers)

    if target == ALL_LINEAR:
        heads = _head_paths(model)
        return [(p, None) for p, m in modules.items()
                if allowed(p) and not _is_inside(p, heads) and "all-linear" in getattr(kind_for(m), "supports", ())]
    hits: dict[str, tuple | None] = {}
    for item in PRESETS.get(target, (target,)):
        name, slices = parse_target(item)
        for p, m in modules.items():
            if p in hits or not (allowed(p) and name_matches(name, p)):
                continue
            if kind_for(m) is not None:
                hits[p] = slices
            elif target not in PRESETS:  # presets skip what cannot be adapted: "query" may also name a container
                raise UnsupportedLayerError(f"target {target!r} matches {p!r}, a {type(m).__name__}, which cannot be adapted; "
                                            f"supported: {', '.join(supported_types())}")
    return list(hits.items())

"""The analyses applied module by module to whole adapters (``{module path: factors}``).

Still pure: dicts of factors (``lorakit.io.LoraFactors`` or anything with ``A``, ``B``,
``scaling``) and adapter files in; dicts of results, a new config and tensors out. Where something
is worth telling the user (a module only one adapter has, a stripped path prefix) it is returned as
a note, never printed here.
"""

from __future__ import annotations

import dataclasses
import re
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import torch
from torch import Tensor, nn

from lorakit.analysis.algebra import METHODS, FactorsLike, Method, combine_modules
from lorakit.analysis.amplification import Amplification, amplification
from lorakit.analysis.lowrank import as_matrix
from lorakit.analysis.spectrum import Spectrum, spectrum_from_factors
from lorakit.analysis.subspace import Matrix, phi_grid, subspace_dim
from lorakit.core.registry import LORA_NAMES, delta_matrix, factor_names, kind_for
from lorakit.errors import LorakitError
from lorakit.io import AdapterConfig, AdapterFile
from lorakit.io.keys import peft_key

F = TypeVar("F")


def select_modules(factors: Mapping[str, F], pattern: str | None) -> dict[str, F]:
    """The modules whose path matches ``pattern`` (``re.search``; None keeps all); none is an error."""
    if pattern is None:
        return dict(factors)
    try:
        regex = re.compile(pattern)
    except re.error as err:
        raise LorakitError(f"--modules {pattern!r} is not a valid regular expression ({err})") from None
    chosen = {path: f for path, f in factors.items() if regex.search(path)}
    if not chosen:
        some = ", ".join(list(factors)[:4]) + (" …" if len(factors) > 4 else "")
        raise LorakitError(f"--modules {pattern!r} matches none of the {len(factors)} adapted modules ({some})")
    return chosen


def subspace_by_module(
    first: Mapping[str, FactorsLike], second: Mapping[str, FactorsLike], matrix: Matrix = "A",
) -> tuple[dict[str, Tensor], dict[str, int], list[str]]:
    """φ grids of the modules both adapters adapt: ``(grids, ambient dims, notes)``."""
    common = [path for path in first if path in second]
    notes = [f"{len(only)} module(s) adapted by adapter {n} only, skipped: {', '.join(only[:3])}"
             + (" …" if len(only) > 3 else "")
             for n, only in ((1, [p for p in first if p not in second]), (2, [p for p in second if p not in first]))
             if only]
    if not common:
        raise LorakitError("the two adapters have no adapted module in common")
    grids, dims = {}, {}
    for path in common:
        m1, m2 = (first[path].A, second[path].A) if matrix == "A" else (first[path].B, second[path].B)
        try:
            grids[path] = phi_grid(m1, m2, matrix)
        except ValueError as err:
            raise LorakitError(f"module {path}: {err}") from None
        dims[path] = subspace_dim(m1, matrix)
    return grids, dims, notes


def spectrum_by_module(factors: Mapping[str, FactorsLike], threshold: float = 0.9) -> dict[str, Spectrum]:
    """The spectrum of every module's ``s·B·A``."""
    return {path: spectrum_from_factors(f.A, f.B, f.scaling, threshold) for path, f in factors.items()}


def resolve_module(model: nn.Module, path: str) -> tuple[str, nn.Module]:
    """``model``'s module at ``path``, dropping leading components (PEFT's ``bert.`` on a bare
    encoder) until one is found; returns the path actually used."""
    parts = path.split(".")
    for start in range(len(parts)):
        candidate = ".".join(parts[start:])
        try:
            return candidate, model.get_submodule(candidate)
        except AttributeError:
            continue
    raise LorakitError(f"the model has no module {path!r} (nor any suffix of it): is it the adapter's base model?")


def base_matrix(module: nn.Module) -> Tensor:
    """The base weight as an (out, in) matrix laid out like ``B·A`` (GPT-2 Conv1D and embeddings
    store it transposed; conv kernels are flattened)."""
    weight = getattr(module, "weight", None)
    if not isinstance(weight, Tensor):
        raise LorakitError(f"{type(module).__name__} has no weight tensor")
    kind = kind_for(module)
    return kind.matrix(weight) if kind is not None else as_matrix(weight)


def amplification_by_module(
    model: nn.Module, factors: Mapping[str, FactorsLike], *, n_random: int = 8, seed: int = 0,
) -> tuple[dict[str, Amplification], list[str]]:
    """Table 7 for each adapted module against ``model``'s base weights: ``(results, notes)``."""
    results, notes = {}, []
    for path, f in factors.items():
        found, module = resolve_module(model, path)
        if found != path:
            notes.append(f"{path}: not in the model; used {found}")
        delta = delta_matrix(f.A.to(torch.float64), f.B.to(torch.float64)) * f.scaling
        try:
            results[path] = amplification(base_matrix(module), delta, rank=as_matrix(f.A).shape[0],
                                          n_random=n_random, seed=seed)
        except ValueError as err:
            raise LorakitError(f"module {path}: {err}") from None
    return results, notes


@dataclass(frozen=True)
class CombinedAdapter:
    """A combined adapter ready for ``write_adapter``, with what the user should know about it."""

    config: AdapterConfig
    tensors: dict[str, Tensor]
    # Per module: share of ‖Σ wᵢΔWᵢ‖²_F the stored pair keeps (1.0 for concat; less after truncation).
    kept_energy: dict[str, float]
    notes: tuple[str, ...]


def combine_adapter_files(
    adapters: Sequence[AdapterFile],
    weights: Sequence[float],
    *,
    method: Method = "svd",
    rank: int | None = None,
    saved_from: int | None = None,
) -> CombinedAdapter:
    """One adapter holding ``Σ wᵢ·ΔWᵢ`` (scaling 1 everywhere), as config + PEFT-named tensors.

    Modules are combined by :func:`~lorakit.analysis.algebra.combine_modules` (an absent module
    counts as ΔW = 0). Full-weight tensors (``modules_to_save``, trained biases) cannot be summed:
    each is kept when only one adapter has it or all have the same values; otherwise
    ``saved_from`` (0-based) must name the adapter to take them from.
    """
    if method not in METHODS:
        raise LorakitError(f"method must be one of {', '.join(METHODS)}, got {method!r}")
    if saved_from is not None and not 0 <= saved_from < len(adapters):
        raise LorakitError(f"saved_from must index one of the {len(adapters)} adapters, got {saved_from}")
    factors = [a.factors() for a in adapters]
    if any(getattr(f, "magnitude", None) is not None for fs in factors for f in fs.values()):
        raise LorakitError("cannot combine DoRA adapters: their update is not s·B·A alone (merge them instead)")
    kinds = _kinds(factors)
    pairs = combine_modules(factors, weights, method=method, rank=rank)
    exact = pairs if method == "concat" else combine_modules(factors, weights, method="concat")
    kept = {}
    for path, (A, B) in exact.items():
        energy = spectrum_from_factors(A, B).energy
        r_out = pairs[path][0].shape[0]
        kept[path] = float(energy[min(r_out, energy.numel()) - 1]) if energy[-1] > 0 else 1.0
    tensors: dict[str, Tensor] = {}
    for path, (A, B) in pairs.items():
        tensors[peft_key(path, "lora_A", kinds[path])] = A
        tensors[peft_key(path, "lora_B", kinds[path])] = B
    lora_keys = {peft_key(p, w, kinds[p]) for fs in factors for p in fs for w in ("lora_A", "lora_B")}
    extras, source_cfg = _extra_tensors(adapters, lora_keys, saved_from)
    tensors.update(extras)
    ranks = {path: A.shape[0] for path, (A, _) in pairs.items()}
    config = _combined_config(adapters, weights, ranks, method, source_cfg)
    notes = []
    for i, (a, fs) in enumerate(zip(adapters, factors, strict=True)):
        missing = [p for p in pairs if p not in fs]
        if missing:
            notes.append(f"adapter {i + 1} ({a.path}) does not adapt {len(missing)} module(s), e.g. {missing[0]}: "
                         "they hold the other adapters' weighted updates only")
    if len({a.config.base_model_name_or_path for a in adapters}) > 1:
        names = ", ".join(sorted({str(a.config.base_model_name_or_path) for a in adapters}))
        notes.append(f"the adapters name different base models ({names}); their shapes agree, so they were combined")
    if any(a.config.lorakit.get("slices") for a in adapters):
        notes.append("fused-projection slices are stored as plain dense pairs in the combined adapter")
    return CombinedAdapter(config, tensors, kept, tuple(notes))


def _kinds(factors: Sequence[Mapping[str, Any]]) -> dict[str, tuple[str, str]]:
    """Each module's PEFT tensor names (which tell a linear pair from an embedding pair)."""
    kinds: dict[str, tuple[str, str]] = {}
    for fs in factors:
        for path, f in fs.items():
            names = tuple(getattr(f, "names", LORA_NAMES))
            if kinds.setdefault(path, names) != names:
                raise LorakitError(f"module {path} is stored as {kinds[path]} in one adapter and {names} in another")
            if names not in factor_names():
                raise LorakitError(f"module {path}: cannot combine factors stored as {names}")
    return kinds


def _extra_tensors(adapters: Sequence[AdapterFile], lora_keys: set[str],
                   saved_from: int | None) -> tuple[dict[str, Tensor], AdapterConfig]:
    """Non-LoRA tensors to carry over and the config that describes them (bias, modules_to_save)."""
    if saved_from is not None:
        chosen = adapters[saved_from]
        return {k: v for k, v in chosen.tensors.items() if k not in lora_keys}, chosen.config
    extras: dict[str, Tensor] = {}
    conflicts = []
    for a in adapters:
        for key, value in a.tensors.items():
            if key in lora_keys:
                continue
            if key in extras and not (extras[key].shape == value.shape and torch.equal(extras[key], value)):
                conflicts.append(key)
            extras.setdefault(key, value)
    modes = {a.config.bias for a in adapters}
    if conflicts or len(modes) > 1:
        what = (f"{len(conflicts)} full-weight tensor(s) differ between the adapters, e.g. {conflicts[0]}"
                if conflicts else f"the adapters train biases differently ({', '.join(sorted(modes))})")
        raise LorakitError(f"{what}; they cannot be summed: pick the adapter to take them from with --saved-from")
    saved = sorted({m for a in adapters for m in (a.config.modules_to_save or [])})
    return extras, dataclasses.replace(adapters[0].config, modules_to_save=saved or None)


def _combined_config(adapters: Sequence[AdapterFile], weights: Sequence[float], ranks: Mapping[str, int],
                     method: str, source: AdapterConfig) -> AdapterConfig:
    """``source``'s config with r = the most common rank, lora_alpha = r (scaling 1) and per-module
    rank/alpha patterns where a module's rank differs, so PEFT and lorakit both read scaling 1."""
    r = Counter(ranks.values()).most_common(1)[0][0]
    other = {re.escape(path): rank for path, rank in ranks.items() if rank != r}
    targets = {(repr(a.config.target_modules), repr(a.config.layers_to_transform), repr(a.config.layers_pattern))
               for a in adapters}
    same_targets = len(targets) == 1
    return dataclasses.replace(
        source,
        r=r, lora_alpha=r, rank_pattern=other, alpha_pattern=dict(other), use_rslora=False,
        # Different target lists are replaced by the exact module paths, which both PEFT and lorakit match.
        target_modules=source.target_modules if same_targets else sorted(ranks),
        layers_to_transform=source.layers_to_transform if same_targets else None,
        layers_pattern=source.layers_pattern if same_targets else None,
        lorakit={"combined": {"method": method, "sources": [
            {"path": str(a.path), "weight": float(w)} for a, w in zip(adapters, weights, strict=True)]}},
    )

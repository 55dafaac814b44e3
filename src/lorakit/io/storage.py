"""Adapter folders in PEFT's layout: ``adapter_config.json`` + ``adapter_model.safetensors``.

This is lorakit's native format, so PEFT, vLLM and LoRAX read what lorakit writes and the other way
round. lorakit's own extras live under one ``"lorakit"`` key (with a format version) that PEFT
ignores. Only safetensors is read: a pickle file is refused, never unpickled.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from lorakit.core.inject import SPEC_ATTR, TARGETS_ATTR, inject, lora_layers, unload
from lorakit.core.layers import LoraLayer
from lorakit.core.registry import LORA_NAMES, delta_matrix, factor_names, kind_for, require_kind
from lorakit.core.spec import LoraSpec
from lorakit.core.targeting import Target, layer_index, override, select_targets
from lorakit.core.variants import DORA
from lorakit.errors import LorakitError
from lorakit.io.atomic import replacing, write_json_atomic
from lorakit.io.config import CONFIG_NAME, FORMAT_VERSION, AdapterConfig
from lorakit.io.keys import PEFT_PREFIX, adapter_state_dict, load_adapter_state, peft_key

__all__ = ["AdapterConfig", "AdapterFile", "LoraFactors", "read_adapter", "write_adapter", "save_adapter",
           "load_adapter", "peft_key"]

WEIGHTS_NAME = "adapter_model.safetensors"
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt")


@dataclass(frozen=True)
class LoraFactors:
    """The A/B pair of one adapted module, as stored, with its scaling and PEFT tensor names."""

    A: Tensor
    B: Tensor
    scaling: float
    names: tuple[str, str] = LORA_NAMES
    # DoRA's magnitude per output row (None for plain LoRA): ΔW is then not s·B·A alone.
    magnitude: Tensor | None = None

    @property
    def rank(self) -> int:
        """Rank of the stored pair."""
        return self.A.shape[0]

    def delta_weight(self) -> Tensor:
        """``s·B·A`` as a 2-D (out, in) matrix (conv kernels flattened), in float32."""
        return delta_matrix(self.A.float(), self.B.float()) * self.scaling


@dataclass(frozen=True)
class AdapterFile:
    """An adapter read from disk: its config and tensors (PEFT key names)."""

    path: Path
    config: AdapterConfig
    tensors: dict[str, Tensor]

    def factors(self) -> dict[str, LoraFactors]:
        """A/B/scaling of each adapted module, keyed by module path."""
        spec = self.config.to_spec()
        slices = self.config.lorakit.get("slices", {})
        out = {}
        for key, A in self.tensors.items():
            for a_name, b_name in factor_names():
                if key.startswith(PEFT_PREFIX) and key.endswith("." + a_name):
                    path = key[len(PEFT_PREFIX):-len(a_name) - 1]
                    B = self.tensors.get(f"{PEFT_PREFIX}{path}.{b_name}")
                    if B is None:
                        raise LorakitError(f"{self.path}: {key} has no matching {b_name}")
                    r_slice, alpha = _module_rank_alpha(spec, path, A.shape[0], slices.get(path))
                    out[path] = LoraFactors(A, B, spec.scaling(r_slice, alpha), (a_name, b_name),
                                            self.tensors.get(f"{PEFT_PREFIX}{path}.{DORA.params['lora_magnitude']}"))
        return out


def _module_rank_alpha(spec: LoraSpec, path: str, stored_rank: int, sliced: dict | None) -> tuple[int, float]:
    if sliced:
        return int(sliced["r"]), float(sliced["alpha"])
    return stored_rank, float(override(spec.alpha_pattern, path, spec.alpha))


def _check_no_pickle(folder: Path) -> None:
    pickles = sorted(p.name for p in folder.iterdir() if p.suffix in PICKLE_SUFFIXES)
    if pickles and not (folder / WEIGHTS_NAME).exists():
        raise LorakitError(
            f"{folder}: found {', '.join(pickles)} but no {WEIGHTS_NAME}; lorakit never unpickles files "
            f"(they can run arbitrary code). Convert it to safetensors with the tool that wrote it"
        )


def read_adapter(path: str | Path) -> AdapterFile:
    """Read an adapter folder. Errors are ``ValueError`` with one readable line."""
    folder = Path(path)
    if not folder.is_dir():
        raise LorakitError(f"adapter folder not found: {folder}")
    _check_no_pickle(folder)
    config_path, weights_path = folder / CONFIG_NAME, folder / WEIGHTS_NAME
    if not config_path.is_file():
        raise LorakitError(f"{folder}: no {CONFIG_NAME} (not an adapter folder)")
    if not weights_path.is_file():
        raise LorakitError(f"{folder}: no {WEIGHTS_NAME}")
    try:
        data = json.loads(config_path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise LorakitError(f"{config_path}: not valid JSON ({exc})") from None
    except RecursionError:  # e.g. "[[[[…" nested deeper than the interpreter's recursion limit
        raise LorakitError(f"{config_path}: not valid JSON (nested too deeply)") from None
    except OSError as exc:
        raise LorakitError(f"{config_path}: cannot be read ({exc.strerror or exc})") from None
    config = AdapterConfig.from_json(data, str(config_path))
    try:
        tensors = load_file(str(weights_path))
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise LorakitError(f"{weights_path}: not a readable safetensors file ({exc})") from None
    return AdapterFile(folder, config, tensors)


def write_adapter(out_dir: str | Path, config: AdapterConfig, tensors: dict[str, Tensor]) -> Path:
    """Write a PEFT-layout folder; each file is written atomically (:mod:`lorakit.io.atomic`)."""
    folder = Path(out_dir)
    extras = {"format_version": FORMAT_VERSION, **config.lorakit}
    config = dataclasses.replace(config, lorakit=extras)
    with replacing(folder / WEIGHTS_NAME) as tmp:
        save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, tmp, metadata={"format": "pt"})
    write_json_atomic(folder / CONFIG_NAME, config.to_json(), indent=2, sort_keys=True)
    return folder


def _target_modules(model: nn.Module, targets: list[Target]) -> list[str]:
    """Leaf names if suffix-matching them picks exactly ``targets``; else the full paths."""
    chosen = {t.path for t in targets}
    leaves = sorted({p.rsplit(".", 1)[-1] for p in chosen})
    # Modules already wrapped count by their base layer's kind.
    picked = {p for p, m in model.named_modules()
              if p and p.rsplit(".", 1)[-1] in leaves and kind_for(m.base if isinstance(m, LoraLayer) else m)}
    layer_ids = {layer_index(p) for p in chosen}
    picked_in_layers = {p for p in picked if layer_index(p) in layer_ids}
    if picked == chosen or picked_in_layers == chosen:
        return leaves
    return sorted(chosen)


def config_for(model: nn.Module, *, task_type: str | None = None, base_model: str | None = None,
               extra: dict[str, Any] | None = None) -> AdapterConfig:
    """The adapter config describing the LoRA layers injected in ``model``."""
    spec: LoraSpec | None = getattr(model, SPEC_ATTR, None)
    targets: list[Target] | None = getattr(model, TARGETS_ATTR, None)
    if spec is None or targets is None:
        raise LorakitError("this model holds no lorakit adapter (inject or load one first)")
    names = _target_modules(model, targets)
    layers_to_transform = None
    if spec.layers is not None and names and "." not in names[0]:
        layers_to_transform = sorted({layer_index(t.path) for t in targets})
    # An SVD init (PiSSA, OLoRA) is saved relative to the original base at twice the rank (PEFT's conversion).
    m = 2 if spec.initializer.moves_base else 1
    r, alpha0 = spec.r * m, spec.alpha * (math.sqrt(m) if spec.rslora else m)
    rank_pattern, alpha_pattern, slices = {}, {}, {}
    for t in targets:
        # A stored rank of r·k keeps the same scale in PEFT's terms when alpha grows k-fold (√k for rsLoRA).
        k = m * (len(t.slices[1]) if t.slices else 1)
        alpha = t.alpha * (math.sqrt(k) if spec.rslora else k)
        if t.slices:
            slices[t.path] = {"n": t.slices[0], "selected": list(t.slices[1]), "r": t.r, "alpha": t.alpha}
        if t.rank * m != r:
            rank_pattern[re.escape(t.path)] = t.rank * m
        if alpha != alpha0:
            alpha_pattern[re.escape(t.path)] = alpha
    lorakit = {"targets": list(spec.targets), **({"slices": slices} if slices else {}),
               **({"variant": spec.variant_name} if spec.variant_name else {}), **(extra or {})}
    return AdapterConfig(
        r=r, lora_alpha=alpha0, lora_dropout=spec.dropout, target_modules=names,
        layers_to_transform=layers_to_transform, rank_pattern=rank_pattern, alpha_pattern=alpha_pattern,
        use_rslora=spec.rslora, use_dora=spec.dora, bias=spec.bias, modules_to_save=list(spec.modules_to_save) or None,
        fan_in_fan_out=any(layer.kind.fan_in_fan_out for layer in lora_layers(model).values()), task_type=task_type, base_model_name_or_path=base_model, lorakit=lorakit,
    )


def save_adapter(model: nn.Module, out_dir: str | Path, *, task_type: str | None = None,
                 base_model: str | None = None, extra: dict[str, Any] | None = None) -> Path:
    """Save the injected adapter of ``model`` in PEFT's layout."""
    config = config_for(model, task_type=task_type, base_model=base_model, extra=extra)
    spec: LoraSpec = getattr(model, SPEC_ATTR)
    tensors = adapter_state_dict(model, spec.bias, spec.modules_to_save)
    return write_adapter(out_dir, config, tensors)


def targets_for(model: nn.Module, adapter: AdapterFile) -> tuple[LoraSpec, list[Target]]:
    """Resolve a saved adapter's targets on ``model`` (PEFT's matching rules plus lorakit's slices)."""
    spec = adapter.config.to_spec()
    targets = select_targets(model, spec)
    slices = adapter.config.lorakit.get("slices", {})
    out = []
    for t in targets:
        s = slices.get(t.path)
        if s:
            t = dataclasses.replace(t, r=int(s["r"]), alpha=float(s["alpha"]),
                                    slices=(int(s["n"]), tuple(int(i) for i in s["selected"])))
            if "slices" not in require_kind(model.get_submodule(t.path), t.path).supports or t.out_features % t.slices[0]:
                raise LorakitError(f"lorakit.slices[{t.path!r}]: {t.kind} layer with {t.out_features} outputs "
                                   f"cannot be split into {t.slices[0]} slices")
        out.append(t)
    return spec, out


def _check_rank_limits(model: nn.Module, adapter: AdapterFile, targets: list[Target]) -> None:
    """Refuse, before anything is allocated, a rank above ``min(in, out)`` that the file does not hold.

    A few bytes of config can claim ``r = 10**9``; injecting first would try to allocate that. A rank
    up to the layer's size is checked against the file after injection, with every other problem.
    """
    problems = []
    for t in targets:
        limit = min(t.in_features, t.out_features)
        if t.rank <= limit:
            continue
        kind = require_kind(model.get_submodule(t.path), t.path)
        stored = adapter.tensors.get(peft_key(t.path, "lora_A", kind.names))
        stored_rank = stored.shape[0] if stored is not None and stored.ndim else None
        if stored_rank != t.rank:
            problems.append(f"{t.path} (rank {t.rank} in the config, {stored_rank} in the file; "
                            f"the layer allows at most min(in, out) = {limit})")
    if problems:
        more = f" … and {len(problems) - 8} more" if len(problems) > 8 else ""
        raise LorakitError(f"adapter does not fit this model: rank above the layer's limit ({len(problems)}): "
                           + ", ".join(problems[:8]) + more)


def load_adapter(model: nn.Module, path: str | Path | AdapterFile, *, trainable: bool = False) -> list[Target]:
    """Inject the adapter saved at ``path`` into ``model`` and load its tensors (validated).

    On any mismatch the model is left without LoRA layers and a ``ValueError`` lists the problems.
    """
    adapter = path if isinstance(path, AdapterFile) else read_adapter(path)
    if lora_layers(model):
        raise LorakitError("this model already holds LoRA layers: unload() it before loading an adapter")
    spec, targets = targets_for(model, adapter)
    _check_rank_limits(model, adapter, targets)
    try:
        inject(model, spec, targets)
        load_adapter_state(model, adapter.tensors, spec.bias, spec.modules_to_save)
    except BaseException:
        # All or nothing: a refused adapter leaves no layer (inject itself is all-or-nothing).
        if lora_layers(model):
            unload(model, merge_first=False)
        raise
    if not trainable:
        for p in model.parameters():
            p.requires_grad = False
    return targets


def adapter_summary(model: nn.Module) -> list[dict[str, Any]]:
    """One row per LoRA layer: path, kind, variant, rank, alpha, scaling, parameter count."""
    return [
        {"module": p, "kind": m.kind.name, "variant": m.variant.name, "rank": m.r, "alpha": m.alpha,
         "scaling": m.scaling, "params": sum(t.numel() for t in m.adapter_parameters().values())}
        for p, m in lora_layers(model).items()
    ]

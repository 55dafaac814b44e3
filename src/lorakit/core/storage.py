"""Adapter folders in PEFT's layout: ``adapter_config.json`` + ``adapter_model.safetensors``.

This is lorakit's native format, so PEFT, vLLM and LoRAX read what lorakit writes and the other way
round. lorakit's own extras live under one ``"lorakit"`` key (with a format version) that PEFT
ignores. Only safetensors is read: a pickle file is refused, never unpickled.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re
import tempfile
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from lorakit.core.inject import SPEC_ATTR, TARGETS_ATTR, inject, lora_layers
from lorakit.core.layers import LoraLayer
from lorakit.core.registry import kind_for, require_kind
from lorakit.core.spec import LoraSpec
from lorakit.core.state import PEFT_PREFIX, LoraFactors, adapter_state_dict, load_adapter_state, peft_key
from lorakit.core.targeting import Target, layer_index, select_targets

__all__ = ["AdapterConfig", "AdapterFile", "read_adapter", "write_adapter", "save_adapter", "load_adapter", "peft_key"]

CONFIG_NAME = "adapter_config.json"
WEIGHTS_NAME = "adapter_model.safetensors"
FORMAT_VERSION = 1
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt")
# PEFT LoraConfig fields that lorakit reads or that carry no meaning for loading; others warn.
_IGNORED_PEFT_KEYS = {
    "peft_type", "auto_mapping", "revision", "inference_mode", "init_lora_weights", "loftq_config",
    "megatron_config", "megatron_core", "peft_version", "eva_config", "corda_config", "exclude_modules",
    "layer_replication", "use_dora", "lora_bias", "target_parameters", "trainable_token_indices",
    "alora_invocation_tokens", "arrow_config", "ensure_weight_tying", "kasa_config", "lora_ga_config",
    "monteclora_config", "qalora_group_size", "use_qalora", "use_bdlora", "velora_config",
}
# Fields whose non-default value changes the math: refused rather than silently mis-loaded.
_UNSUPPORTED = {"use_dora": (False, None), "lora_bias": (False, None), "layer_replication": (None,),
                "use_qalora": (False, None), "target_parameters": (None, [])}


@dataclass(frozen=True)
class AdapterConfig:
    """The fields of PEFT's ``adapter_config.json`` that define a LoRA adapter."""

    r: int = 8
    lora_alpha: float = 8.0
    lora_dropout: float = 0.0
    target_modules: list[str] | str = field(default_factory=list)
    layers_to_transform: list[int] | None = None
    layers_pattern: str | list[str] | None = None
    rank_pattern: dict[str, int] = field(default_factory=dict)
    alpha_pattern: dict[str, float] = field(default_factory=dict)
    use_rslora: bool = False
    bias: str = "none"
    modules_to_save: list[str] | None = None
    fan_in_fan_out: bool = False
    task_type: str | None = None
    base_model_name_or_path: str | None = None
    # lorakit's extras: format version, fused-projection slices, provenance.
    lorakit: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """The JSON object written to disk (PEFT's keys plus ``peft_type``)."""
        data = dataclasses.asdict(self)
        data["peft_type"] = "LORA"
        data["inference_mode"] = True
        return data

    @classmethod
    def from_json(cls, data: Any, source: str = CONFIG_NAME) -> AdapterConfig:
        """Parse and type-check a config object; unknown keys warn, wrong types raise."""
        if not isinstance(data, dict):
            raise ValueError(f"{source}: expected a JSON object, got {type(data).__name__}")
        if data.get("peft_type", "LORA") != "LORA":
            raise ValueError(f"{source}: peft_type is {data.get('peft_type')!r}; only LORA adapters are supported")
        for key, allowed in _UNSUPPORTED.items():
            if key in data and data[key] not in allowed:
                raise ValueError(f"{source}: {key}={data[key]!r} is not supported by lorakit")
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names - _IGNORED_PEFT_KEYS)
        if unknown:
            warnings.warn(f"{source}: ignoring unknown keys {', '.join(unknown)}", stacklevel=2)
        kwargs = {k: v for k, v in data.items() if k in names}
        cfg = cls(**kwargs)
        cfg._validate(source)
        return cfg

    def _validate(self, source: str) -> None:
        def bad(name: str, want: str) -> ValueError:
            return ValueError(f"{source}: {name} must be {want}, got {getattr(self, name)!r}")

        if isinstance(self.r, bool) or not isinstance(self.r, int) or self.r < 1:
            raise bad("r", "a positive integer")
        if isinstance(self.lora_alpha, bool) or not isinstance(self.lora_alpha, int | float) \
                or not math.isfinite(self.lora_alpha) or self.lora_alpha <= 0:
            raise bad("lora_alpha", "a positive number")
        if not isinstance(self.lora_dropout, int | float) or not 0 <= self.lora_dropout < 1:
            raise bad("lora_dropout", "a number in [0, 1)")
        tm = self.target_modules
        if not (isinstance(tm, str) and tm) and not (isinstance(tm, list) and tm and all(isinstance(t, str) for t in tm)):
            raise bad("target_modules", "a non-empty list of names or a regex string")
        if self.layers_to_transform is not None and not (
            isinstance(self.layers_to_transform, int)
            or (isinstance(self.layers_to_transform, list) and all(isinstance(i, int) for i in self.layers_to_transform))
        ):
            raise bad("layers_to_transform", "a list of layer indices")
        for name in ("rank_pattern", "alpha_pattern"):
            value = getattr(self, name)
            if not isinstance(value, dict) or not all(
                isinstance(k, str) and isinstance(v, int | float) and not isinstance(v, bool)
                and math.isfinite(v) and v > 0
                for k, v in value.items()
            ):
                raise bad(name, "an object of pattern -> positive finite number")
        if self.bias not in ("none", "all", "lora_only"):
            raise bad("bias", "one of none, all, lora_only")
        if self.modules_to_save is not None and not (
            isinstance(self.modules_to_save, list) and all(isinstance(m, str) for m in self.modules_to_save)
        ):
            raise bad("modules_to_save", "a list of module names")
        if not isinstance(self.use_rslora, bool):
            raise bad("use_rslora", "true or false")
        if not isinstance(self.lorakit, dict):
            raise bad("lorakit", "an object")
        version = self.lorakit.get("format_version", FORMAT_VERSION)
        if not isinstance(version, int) or version > FORMAT_VERSION:
            raise ValueError(f"{source}: written by a newer lorakit (format_version {version!r}); "
                             f"this one reads up to {FORMAT_VERSION}: upgrade lorakit")
        _validate_slices(self.lorakit.get("slices", {}), source)

    def to_spec(self) -> LoraSpec:
        """The equivalent spec, keeping PEFT's matching rules (list: suffixes; str: full regex)."""
        tm = self.target_modules
        targets = ("re:" + tm,) if isinstance(tm, str) else tuple(tm)
        layers = self.layers_to_transform
        layers = (layers,) if isinstance(layers, int) else (tuple(layers) if layers is not None else None)
        # PEFT matches pattern keys as "(.*\.)?KEY$"; a regex target keeps exactly that meaning.
        rank_pattern = {f"re:(.*\\.)?({k})": v for k, v in self.rank_pattern.items()}
        alpha_pattern = {f"re:(.*\\.)?({k})": v for k, v in self.alpha_pattern.items()}
        return LoraSpec(
            r=self.r, alpha=float(self.lora_alpha), dropout=float(self.lora_dropout), targets=targets,
            layers=layers, rslora=self.use_rslora, bias=self.bias, modules_to_save=tuple(self.modules_to_save or ()),
            rank_pattern=rank_pattern, alpha_pattern=alpha_pattern,
        )


def _validate_slices(slices: Any, source: str) -> None:
    """``lorakit.slices``: module path -> {n, selected, r, alpha} of a fused projection, all typed."""

    def is_int(v: Any) -> bool:
        return isinstance(v, int) and not isinstance(v, bool)

    if not isinstance(slices, dict):
        raise ValueError(f"{source}: lorakit.slices must be an object of module path -> slices, got {slices!r}")
    for path, s in slices.items():
        ok = isinstance(s, dict) and all(k in s for k in ("n", "selected", "r", "alpha"))
        if ok:
            n, sel, r, alpha = s["n"], s["selected"], s["r"], s["alpha"]
            ok = (is_int(n) and n >= 1 and isinstance(sel, list) and sel and all(is_int(i) and 0 <= i < n for i in sel)
                  and len(set(sel)) == len(sel) and is_int(r) and r >= 1
                  and isinstance(alpha, int | float) and not isinstance(alpha, bool) and math.isfinite(alpha) and alpha > 0)
        if not ok:
            raise ValueError(f"{source}: lorakit.slices[{path!r}] must be {{n: int >= 1, selected: distinct indices "
                             f"in 0..n-1, r: int >= 1, alpha: number > 0}}, got {s!r}")


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
            for a_name, b_name, kind in (("lora_A.weight", "lora_B.weight", "linear"),
                                         ("lora_embedding_A", "lora_embedding_B", "embedding")):
                if key.startswith(PEFT_PREFIX) and key.endswith("." + a_name):
                    path = key[len(PEFT_PREFIX):-len(a_name) - 1]
                    B = self.tensors.get(f"{PEFT_PREFIX}{path}.{b_name}")
                    if B is None:
                        raise ValueError(f"{self.path}: {key} has no matching {b_name}")
                    r_slice, alpha = _module_rank_alpha(spec, path, A.shape[0], slices.get(path))
                    out[path] = LoraFactors(A, B, spec.scaling(r_slice, alpha), kind)
        return out


def _module_rank_alpha(spec: LoraSpec, path: str, stored_rank: int, sliced: dict | None) -> tuple[int, float]:
    from lorakit.core.targeting import _override

    if sliced:
        return int(sliced["r"]), float(sliced["alpha"])
    return stored_rank, float(_override(spec.alpha_pattern, path, spec.alpha))


def _check_no_pickle(folder: Path) -> None:
    pickles = sorted(p.name for p in folder.iterdir() if p.suffix in PICKLE_SUFFIXES)
    if pickles and not (folder / WEIGHTS_NAME).exists():
        raise ValueError(
            f"{folder}: found {', '.join(pickles)} but no {WEIGHTS_NAME}; lorakit never unpickles files "
            f"(they can run arbitrary code). Convert it to safetensors with the tool that wrote it"
        )


def read_adapter(path: str | Path) -> AdapterFile:
    """Read an adapter folder. Errors are ``ValueError`` with one readable line."""
    folder = Path(path)
    if not folder.is_dir():
        raise ValueError(f"adapter folder not found: {folder}")
    _check_no_pickle(folder)
    config_path, weights_path = folder / CONFIG_NAME, folder / WEIGHTS_NAME
    if not config_path.is_file():
        raise ValueError(f"{folder}: no {CONFIG_NAME} (not an adapter folder)")
    if not weights_path.is_file():
        raise ValueError(f"{folder}: no {WEIGHTS_NAME}")
    try:
        data = json.loads(config_path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"{config_path}: not valid JSON ({exc})") from None
    except RecursionError:  # e.g. "[[[[…" nested deeper than the interpreter's recursion limit
        raise ValueError(f"{config_path}: not valid JSON (nested too deeply)") from None
    except OSError as exc:
        raise ValueError(f"{config_path}: cannot be read ({exc.strerror or exc})") from None
    config = AdapterConfig.from_json(data, str(config_path))
    try:
        tensors = load_file(str(weights_path))
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise ValueError(f"{weights_path}: not a readable safetensors file ({exc})") from None
    return AdapterFile(folder, config, tensors)


def _atomic_write_bytes(path: Path, payload: bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(payload)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_adapter(out_dir: str | Path, config: AdapterConfig, tensors: dict[str, Tensor]) -> Path:
    """Write a PEFT-layout folder; each file goes to a temp name first, then is renamed into place."""
    folder = Path(out_dir)
    folder.mkdir(parents=True, exist_ok=True)
    extras = {"format_version": FORMAT_VERSION, **config.lorakit}
    config = dataclasses.replace(config, lorakit=extras)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{WEIGHTS_NAME}.")
    os.close(fd)
    try:
        save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, tmp, metadata={"format": "pt"})
        os.replace(tmp, folder / WEIGHTS_NAME)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _atomic_write_bytes(folder / CONFIG_NAME, json.dumps(config.to_json(), indent=2, sort_keys=True).encode())
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
        raise ValueError("this model holds no lorakit adapter (inject or load one first)")
    names = _target_modules(model, targets)
    layers_to_transform = None
    if spec.layers is not None and names and "." not in names[0]:
        layers_to_transform = sorted({layer_index(t.path) for t in targets})
    rank_pattern, alpha_pattern, slices = {}, {}, {}
    for t in targets:
        alpha = t.alpha
        if t.slices:
            k = len(t.slices[1])
            # Stored rank is r·k; keep the same scale in PEFT's terms (alpha' / (r·k) = alpha / r).
            alpha = t.alpha * (math.sqrt(k) if spec.rslora else k)
            slices[t.path] = {"n": t.slices[0], "selected": list(t.slices[1]), "r": t.r, "alpha": t.alpha}
        if t.rank != spec.r:
            rank_pattern[re.escape(t.path)] = t.rank
        if alpha != spec.alpha:
            alpha_pattern[re.escape(t.path)] = alpha
    lorakit = {"targets": list(spec.targets), **({"slices": slices} if slices else {}), **(extra or {})}
    return AdapterConfig(
        r=spec.r, lora_alpha=spec.alpha, lora_dropout=spec.dropout, target_modules=names,
        layers_to_transform=layers_to_transform, rank_pattern=rank_pattern, alpha_pattern=alpha_pattern,
        use_rslora=spec.rslora, bias=spec.bias, modules_to_save=list(spec.modules_to_save) or None,
        fan_in_fan_out=any(t.kind == "hf_conv1d" for t in targets), task_type=task_type, base_model_name_or_path=base_model, lorakit=lorakit,
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
            if not require_kind(model.get_submodule(t.path), t.path).sliceable or t.out_features % t.slices[0]:
                raise ValueError(f"lorakit.slices[{t.path!r}]: {t.kind} layer with {t.out_features} outputs "
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
        stored = adapter.tensors.get(peft_key(t.path, "lora_A", kind.peft_names))
        stored_rank = stored.shape[0] if stored is not None and stored.ndim else None
        if stored_rank != t.rank:
            problems.append(f"{t.path} (rank {t.rank} in the config, {stored_rank} in the file; "
                            f"the layer allows at most min(in, out) = {limit})")
    if problems:
        more = f" … and {len(problems) - 8} more" if len(problems) > 8 else ""
        raise ValueError(f"adapter does not fit this model: rank above the layer's limit ({len(problems)}): "
                         + ", ".join(problems[:8]) + more)


def load_adapter(model: nn.Module, path: str | Path | AdapterFile, *, trainable: bool = False) -> list[Target]:
    """Inject the adapter saved at ``path`` into ``model`` and load its tensors (validated).

    On any mismatch the model is left without LoRA layers and a ``ValueError`` lists the problems.
    """
    adapter = path if isinstance(path, AdapterFile) else read_adapter(path)
    if lora_layers(model):
        raise ValueError("this model already holds LoRA layers: unload() it before loading an adapter")
    spec, targets = targets_for(model, adapter)
    _check_rank_limits(model, adapter, targets)
    try:
        inject(model, spec, targets)
        load_adapter_state(model, adapter.tensors, spec.bias, spec.modules_to_save)
    except BaseException:
        # All or nothing: a refused adapter (or one that fails half-way through inject) leaves no layer.
        from lorakit.core.inject import unload
        unload(model, merge_first=False)
        raise
    if not trainable:
        for p in model.parameters():
            p.requires_grad = False
    return targets


def adapter_summary(model: nn.Module) -> list[dict[str, Any]]:
    """One row per LoRA layer: path, kind, rank, alpha, scaling, parameter count."""
    return [
        {"module": p, "kind": m.kind.name, "rank": m.r, "alpha": m.alpha, "scaling": m.scaling,
         "params": m.lora_A.numel() + m.lora_B.numel()}
        for p, m in lora_layers(model).items()
    ]

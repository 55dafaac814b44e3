"""AdapterConfig: PEFT's ``adapter_config.json`` as a typed, validated value.

Unknown keys warn, keys that change the math in ways lorakit does not implement (lora_bias, ...) are
refused, wrong types raise ``ValueError`` naming the field. lorakit's extras live under ``"lorakit"``
with a format version.
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from dataclasses import dataclass, field
from typing import Any

from lorakit.core.spec import LoraSpec
from lorakit.errors import LorakitError

CONFIG_NAME = "adapter_config.json"
FORMAT_VERSION = 1
# lorakit's task -> PEFT's ``task_type`` (the head an adapter was trained with), and back.
PEFT_TASK_TYPES = {"classify": "SEQ_CLS", "generate": "CAUSAL_LM"}
TASK_OF_PEFT_TYPE = {peft: task for task, peft in PEFT_TASK_TYPES.items()}
# PEFT LoraConfig fields that lorakit reads or that carry no meaning for loading; others warn.
_IGNORED_PEFT_KEYS = {
    "peft_type", "auto_mapping", "revision", "inference_mode", "init_lora_weights", "loftq_config",
    "megatron_config", "megatron_core", "peft_version", "eva_config", "corda_config", "exclude_modules",
    "layer_replication", "lora_bias", "target_parameters", "trainable_token_indices",
    "alora_invocation_tokens", "arrow_config", "ensure_weight_tying", "kasa_config", "lora_ga_config",
    "monteclora_config", "qalora_group_size", "use_qalora", "use_bdlora", "velora_config",
}
# Fields whose non-default value changes the math: refused rather than silently mis-loaded.
_UNSUPPORTED = {"lora_bias": (False, None), "layer_replication": (None,),
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
    use_dora: bool = False
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
            raise LorakitError(f"{source}: expected a JSON object, got {type(data).__name__}")
        if data.get("peft_type", "LORA") != "LORA":
            raise LorakitError(f"{source}: peft_type is {data.get('peft_type')!r}; only LORA adapters are supported")
        for key, allowed in _UNSUPPORTED.items():
            if key in data and data[key] not in allowed:
                raise LorakitError(f"{source}: {key}={data[key]!r} is not supported by lorakit")
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names - _IGNORED_PEFT_KEYS)
        if unknown:
            warnings.warn(f"{source}: ignoring unknown keys {', '.join(unknown)}", stacklevel=2)
        kwargs = {k: v for k, v in data.items() if k in names and not (k == "use_dora" and v is None)}
        cfg = cls(**kwargs)
        cfg._validate(source)
        return cfg

    def _validate(self, source: str) -> None:
        def bad(name: str, want: str) -> LorakitError:
            return LorakitError(f"{source}: {name} must be {want}, got {getattr(self, name)!r}")

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
        for name in ("use_rslora", "use_dora"):
            if not isinstance(getattr(self, name), bool):
                raise bad(name, "true or false")
        if not isinstance(self.lorakit, dict):
            raise bad("lorakit", "an object")
        version = self.lorakit.get("format_version", FORMAT_VERSION)
        if not isinstance(version, int) or version > FORMAT_VERSION:
            raise LorakitError(f"{source}: written by a newer lorakit (format_version {version!r}); "
                               f"this one reads up to {FORMAT_VERSION}: upgrade lorakit")
        _validate_slices(self.lorakit.get("slices", {}), source)
        if not isinstance(self.lorakit.get("variant", ""), str):
            raise bad("lorakit.variant", "a variant name")

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
            layers=layers, rslora=self.use_rslora, dora=self.use_dora, bias=self.bias, modules_to_save=tuple(self.modules_to_save or ()),
            rank_pattern=rank_pattern, alpha_pattern=alpha_pattern, variant_name=self.lorakit.get("variant"),
        )


def _validate_slices(slices: Any, source: str) -> None:
    """``lorakit.slices``: module path -> {n, selected, r, alpha} of a fused projection, all typed."""

    def is_int(v: Any) -> bool:
        return isinstance(v, int) and not isinstance(v, bool)

    if not isinstance(slices, dict):
        raise LorakitError(f"{source}: lorakit.slices must be an object of module path -> slices, got {slices!r}")
    for path, s in slices.items():
        ok = isinstance(s, dict) and all(k in s for k in ("n", "selected", "r", "alpha"))
        if ok:
            n, sel, r, alpha = s["n"], s["selected"], s["r"], s["alpha"]
            ok = (is_int(n) and n >= 1 and isinstance(sel, list) and sel and all(is_int(i) and 0 <= i < n for i in sel)
                  and len(set(sel)) == len(sel) and is_int(r) and r >= 1
                  and isinstance(alpha, int | float) and not isinstance(alpha, bool) and math.isfinite(alpha) and alpha > 0)
        if not ok:
            raise LorakitError(f"{source}: lorakit.slices[{path!r}] must be {{n: int >= 1, selected: distinct indices "
                               f"in 0..n-1, r: int >= 1, alpha: number > 0}}, got {s!r}")

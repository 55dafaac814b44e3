"""Adapters that do not fit their base model, one per check, and the exact message lorakit gives.

Each case starts from one valid adapter (tiny Llama, ``q_proj`` of layer 0, r=4), changes one thing
and loads it with :func:`lorakit.load_adapter`. The table these rows make is printed by
``benchmarks/reliability_mismatch_table.py`` and kept in ``RELIABILITY.md``; a test checks that the
document and the code agree.
"""

from __future__ import annotations

import copy
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

import lorakit
from lorakit.core import lora_layers
from lorakit.io import AdapterConfig, AdapterFile, config_for
from lorakit.io.keys import adapter_state_dict

KEY = "base_model.model.model.layers.0.self_attn.q_proj"


@dataclass(frozen=True)
class MismatchCase:
    """One check lorakit makes, how the case breaks it, and the message it must give."""

    check: str
    case: str
    build: Callable[[AdapterConfig, dict[str, torch.Tensor]], tuple[dict[str, Any], dict[str, torch.Tensor]]]
    # Applied to the base model before loading (e.g. one that already holds an adapter).
    prepare: Callable[[nn.Module], None] | None = None


def _base() -> tuple[AdapterConfig, dict[str, torch.Tensor]]:
    from benchmarks.tiny_models import tiny_llama

    model = tiny_llama()
    lorakit.inject(model, lorakit.LoraSpec(r=4, alpha=8, targets=("q_proj",), layers=(0,)))
    with torch.no_grad():
        for layer in lora_layers(model).values():
            layer.lora_B.normal_(std=0.1, generator=torch.Generator().manual_seed(0))
    return config_for(model), adapter_state_dict(model)


def _other_llama_adapter() -> dict[str, torch.Tensor]:
    """The same adapter trained on a Llama with hidden size 48 (another base model)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=128, hidden_size=48, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128)
    model = LlamaForCausalLM(cfg)
    lorakit.inject(model, lorakit.LoraSpec(r=4, alpha=8, targets=("q_proj",), layers=(0,)))
    return adapter_state_dict(model)


def _cfg(config: AdapterConfig, **changes: Any) -> dict[str, Any]:
    data = config.to_json()
    data.update(changes)
    return data


def _with(tensors: dict[str, torch.Tensor], name: str, value: torch.Tensor | None) -> dict[str, torch.Tensor]:
    """``tensors`` with ``KEY.name`` replaced by ``value`` (removed when None)."""
    out = dict(tensors)
    if value is None:
        out.pop(f"{KEY}.{name}")
    else:
        out[f"{KEY}.{name}"] = value
    return out


def _nan(t: torch.Tensor) -> torch.Tensor:
    t = t.clone()
    t.view(-1)[0] = float("nan")
    return t


def _inject_other(model: nn.Module) -> None:
    lorakit.inject(model, lorakit.LoraSpec(r=2, targets=("v_proj",)))


CASES: list[MismatchCase] = [
    MismatchCase("shape", "adapter trained on another base (hidden 48, not 32)",
                 lambda c, t: (c.to_json(), _other_llama_adapter())),
    MismatchCase("shape", "config says r=8, file holds r=4", lambda c, t: (_cfg(c, r=8), t)),
    MismatchCase("shape", "A transposed", lambda c, t: (c.to_json(), _with(t, "lora_A.weight", t[f"{KEY}.lora_A.weight"].T))),
    MismatchCase("rank limit", "config claims r=1,000,000 (file holds 4): refused before allocating",
                 lambda c, t: (_cfg(c, r=1_000_000), t)),
    MismatchCase("rank limit", "rank_pattern gives q_proj r=64 > min(in, out)=32",
                 lambda c, t: (_cfg(c, rank_pattern={"q_proj": 64}), t)),
    MismatchCase("key set", "lora_B missing", lambda c, t: (c.to_json(), _with(t, "lora_B.weight", None))),
    MismatchCase("key set", "an extra tensor for a module the config does not target",
                 lambda c, t: (c.to_json(), {**t, "base_model.model.model.layers.1.self_attn.q_proj.lora_A.weight":
                                             torch.zeros(4, 32)})),
    MismatchCase("key set", "keys without PEFT's base_model.model. prefix",
                 lambda c, t: (c.to_json(), {k.removeprefix("base_model.model."): v for k, v in t.items()})),
    MismatchCase("dtype", "int8 factors", lambda c, t: (c.to_json(), {k: v.to(torch.int8) for k, v in t.items()})),
    MismatchCase("dtype", "complex64 factors", lambda c, t: (c.to_json(), {k: v.to(torch.complex64) for k, v in t.items()})),
    MismatchCase("finite values", "one NaN in lora_A", lambda c, t: (c.to_json(), _with(t, "lora_A.weight", _nan(t[f"{KEY}.lora_A.weight"])))),
    MismatchCase("finite values", "+Inf in lora_B (stored as float16)",
                 lambda c, t: (c.to_json(), _with(t, "lora_B.weight", torch.full_like(t[f"{KEY}.lora_B.weight"], float("inf")).half()))),
    MismatchCase("0 matched modules", "target_modules names a module the model lacks (BERT's query)",
                 lambda c, t: (_cfg(c, target_modules=["query"]), t)),
    MismatchCase("0 matched modules", "layers_to_transform=[7] on a 2-layer model",
                 lambda c, t: (_cfg(c, layers_to_transform=[7]), t)),
    MismatchCase("0 matched modules", "regex target that matches nothing",
                 lambda c, t: (_cfg(c, target_modules=".*\\.k_proj_typo"), t)),
    MismatchCase("layer type", "target names a container (self_attn), not a layer",
                 lambda c, t: (_cfg(c, target_modules=["self_attn"]), t)),
    MismatchCase("slices", "lorakit.slices asks for 5 slices of a 32-output layer",
                 lambda c, t: (_cfg(c, lorakit={"slices": {"model.layers.0.self_attn.q_proj":
                                                            {"n": 5, "selected": [0], "r": 4, "alpha": 8}}}), t)),
    MismatchCase("config", "use_dora=true but the file holds no magnitude vectors", lambda c, t: (_cfg(c, use_dora=True), t)),
    MismatchCase("config", "written by a newer lorakit (format_version 2)",
                 lambda c, t: (_cfg(c, lorakit={"format_version": 2}), t)),
    MismatchCase("model state", "the model already holds an adapter", lambda c, t: (c.to_json(), t), _inject_other),
]


@dataclass(frozen=True)
class Row:
    """One line of the table: the check, the case, and what lorakit said."""

    check: str
    case: str
    error: str
    message: str
    model_untouched: bool


def run_case(case: MismatchCase, base: tuple[AdapterConfig, dict[str, torch.Tensor]] | None = None) -> Row:
    """Load the broken adapter onto a fresh tiny Llama; return the error and whether the model is as before."""
    from benchmarks.tiny_models import tiny_llama

    config, tensors = base if base is not None else _base()
    data, new_tensors = case.build(config, {k: v.clone() for k, v in tensors.items()})
    model = tiny_llama()
    if case.prepare is not None:
        case.prepare(model)
    before = copy.deepcopy(model.state_dict())
    layers_before = sorted(lora_layers(model))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            adapter = AdapterFile(Path("adapter"), AdapterConfig.from_json(data, "adapter_config.json"), new_tensors)
            lorakit.load_adapter(model, adapter)
    except (ValueError, TypeError) as exc:
        after = model.state_dict()
        same = sorted(lora_layers(model)) == layers_before and list(after) == list(before) and all(
            torch.equal(after[k], before[k]) for k in before)
        return Row(case.check, case.case, type(exc).__name__, str(exc), same)
    return Row(case.check, case.case, "", "(loaded)", False)


def rows() -> list[Row]:
    """Every case of :data:`CASES`, run."""
    base = _base()
    return [run_case(c, base) for c in CASES]


def markdown(table: list[Row]) -> str:
    """The table as it appears in RELIABILITY.md."""
    def cell(text: str) -> str:
        return text.replace("|", "\\|").replace("\n", " ")

    lines = ["| check | case | error | message (exact) |", "|---|---|---|---|"]
    # Double backticks: some messages quote a command in single ones.
    lines += [f"| {r.check} | {cell(r.case)} | {r.error} | `` {cell(r.message)} `` |" for r in table]
    return "\n".join(lines)


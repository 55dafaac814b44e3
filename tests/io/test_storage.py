"""Adapter files: bad input gives one readable error; nothing is unpickled; nothing half-loads."""

from __future__ import annotations

import json
import pickle
import warnings

import pytest
import torch
from safetensors.torch import save_file

import lorakit
from lorakit.core import lora_layers
from lorakit.io import read_adapter
from tests.conftest import tiny_bert, tiny_llama


@pytest.fixture
def saved(tmp_path):
    model = tiny_llama()
    lorakit.inject(model, lorakit.LoraSpec(r=4, targets=("qv",)))
    return lorakit.save_adapter(model, tmp_path / "ad", task_type="CAUSAL_LM")


def test_layout_and_config(saved):
    assert sorted(p.name for p in saved.iterdir()) == ["adapter_config.json", "adapter_model.safetensors"]
    cfg = json.loads((saved / "adapter_config.json").read_text())
    assert cfg["peft_type"] == "LORA" and cfg["r"] == 4 and cfg["target_modules"] == ["q_proj", "v_proj"]
    assert cfg["lorakit"]["format_version"] == 1
    keys = read_adapter(saved).tensors
    assert "base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight" in keys


def test_pickle_is_refused_and_never_loaded(tmp_path):
    canary = tmp_path / "canary"

    class Evil:
        def __reduce__(self):
            return (open, (str(canary), "w"))

    folder = tmp_path / "evil"
    folder.mkdir()
    (folder / "adapter_config.json").write_text(json.dumps({"r": 4, "target_modules": ["q_proj"]}))
    (folder / "adapter_model.bin").write_bytes(pickle.dumps(Evil()))
    with pytest.raises(ValueError, match="never unpickles"):
        read_adapter(folder)
    assert not canary.exists()


def test_truncated_safetensors(saved):
    data = (saved / "adapter_model.safetensors").read_bytes()
    (saved / "adapter_model.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="not a readable safetensors file"):
        read_adapter(saved)


def test_wrong_rank_in_config_is_a_shape_mismatch(saved):
    cfg = json.loads((saved / "adapter_config.json").read_text())
    cfg["r"] = 8
    (saved / "adapter_config.json").write_text(json.dumps(cfg))
    model = tiny_llama()
    with pytest.raises(ValueError, match=r"shape mismatch \(8\).*file \(4, 32\), model \(8, 32\)"):
        lorakit.load_adapter(model, saved)
    assert not lora_layers(model)  # nothing half-loaded


def test_keys_from_another_model(saved):
    with pytest.raises(ValueError, match="'q_proj' matches no module"):
        lorakit.load_adapter(tiny_bert(), saved)


def test_missing_and_unexpected_keys_are_listed(saved):
    tensors = read_adapter(saved).tensors
    tensors.pop("base_model.model.model.layers.1.self_attn.v_proj.lora_B.weight")
    tensors["base_model.model.model.layers.9.self_attn.q_proj.lora_A.weight"] = torch.zeros(4, 32)
    save_file(tensors, str(saved / "adapter_model.safetensors"))
    with pytest.raises(ValueError, match=r"missing \(1\): .*layers\.1\.self_attn\.v_proj.*unexpected \(1\)"):
        lorakit.load_adapter(tiny_llama(), saved)


def test_non_finite_values_refused(saved):
    tensors = read_adapter(saved).tensors
    key = next(iter(tensors))
    tensors[key][0, 0] = float("nan")
    save_file(tensors, str(saved / "adapter_model.safetensors"))
    with pytest.raises(ValueError, match="non-finite"):
        lorakit.load_adapter(tiny_llama(), saved)


@pytest.mark.parametrize(
    ("patch", "match"),
    [
        ({"r": "eight"}, "r must be a positive integer"),
        ({"lora_alpha": None}, "lora_alpha must be"),
        ({"target_modules": []}, "target_modules must be"),
        ({"peft_type": "IA3"}, "only LORA"),
        ({"use_dora": "yes"}, "use_dora must be true or false"),
        ({"bias": 3}, "bias must be one of"),
        ({"lorakit": {"format_version": 99}}, "newer lorakit"),
    ],
)
def test_bad_config_values(saved, patch, match):
    cfg = json.loads((saved / "adapter_config.json").read_text())
    cfg.update(patch)
    (saved / "adapter_config.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match=match):
        read_adapter(saved)


def test_unknown_config_keys_warn(saved):
    cfg = json.loads((saved / "adapter_config.json").read_text())
    cfg["some_future_field"] = 1
    (saved / "adapter_config.json").write_text(json.dumps(cfg))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        read_adapter(saved)
    assert any("some_future_field" in str(w.message) for w in caught)


def test_invalid_json(saved):
    (saved / "adapter_config.json").write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        read_adapter(saved)


def test_factors_give_delta_weight(saved, tmp_path):
    model = tiny_llama()
    lorakit.inject(model, lorakit.LoraSpec(r=4, alpha=12, targets=("qv",)))
    for layer in lora_layers(model).values():
        torch.nn.init.normal_(layer.lora_B)
    lorakit.save_adapter(model, tmp_path / "b")
    factors = read_adapter(tmp_path / "b").factors()
    layer = lora_layers(model)["model.layers.0.self_attn.q_proj"]
    torch.testing.assert_close(factors["model.layers.0.self_attn.q_proj"].delta_weight(), layer.delta_weight())
    assert factors["model.layers.0.self_attn.q_proj"].scaling == 3.0


def test_bias_lora_only_round_trip(tmp_path):
    ids = torch.tensor([[3, 4, 5, 6]])
    model = tiny_bert()
    lorakit.inject(model, lorakit.LoraSpec(r=2, targets=("qv",), bias="lora_only"))
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert any(n.endswith("query.bias") for n in trainable) and not any(n.endswith("key.bias") for n in trainable)
    with torch.no_grad():
        model.encoder.layer[0].attention.self.query.bias.add_(1.0)
    expected = model(input_ids=ids).last_hidden_state
    lorakit.save_adapter(model, tmp_path / "a")
    fresh = tiny_bert()
    lorakit.load_adapter(fresh, tmp_path / "a")
    torch.testing.assert_close(fresh(input_ids=ids).last_hidden_state, expected)

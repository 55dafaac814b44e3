"""Table-driven tests over every registered layer type, on tiny in-file models."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import lorakit
from lorakit.core import lora_layers, supported_types
from lorakit.io.keys import adapter_state_dict


def _hf_conv1d():
    from transformers.pytorch_utils import Conv1D

    return nn.Sequential(Conv1D(12, 8), nn.Tanh(), Conv1D(6, 12))


CASES = {
    "linear": (lambda: nn.Sequential(nn.Linear(8, 12), nn.Tanh(), nn.Linear(12, 6)), lambda: torch.randn(3, 8)),
    "embedding": (lambda: nn.Sequential(nn.Embedding(20, 8, padding_idx=0), nn.Linear(8, 4)),
                  lambda: torch.randint(0, 20, (3, 5))),
    "conv1d": (lambda: nn.Sequential(nn.Conv1d(3, 6, 3, padding=1), nn.Tanh(), nn.Conv1d(6, 4, 3, stride=2)),
               lambda: torch.randn(2, 3, 11)),
    "conv2d": (lambda: nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.Tanh(), nn.Conv2d(6, 4, (3, 1), dilation=2)),
               lambda: torch.randn(2, 3, 9, 9)),
    "hf_conv1d": (_hf_conv1d, lambda: torch.randn(3, 8)),
}
TARGETS = {"linear": ("0", "2"), "embedding": ("0",), "conv1d": ("0", "2"), "conv2d": ("0", "2"), "hf_conv1d": ("0", "2")}


def build(name: str, seed: int = 0, dropout: float = 0.0):
    torch.manual_seed(seed)
    make_model, make_input = CASES[name]
    model = make_model().eval()
    x = make_input()
    return model, x, lorakit.LoraSpec(r=2, alpha=4, targets=TARGETS[name], dropout=dropout)


def randomize_b(model: nn.Module) -> None:
    with torch.no_grad():
        for layer in lora_layers(model).values():
            layer.lora_B.normal_(0, 0.5)


def test_every_registered_type_is_covered():
    # bitsandbytes' kinds are covered by tests/models/test_precision.py, the oneDNN-packed Linear by
    # tests/models/test_packed.py.
    others = set(supported_types()) - {"Linear4bit", "Linear8bitLt", "PackedLinear"}
    assert sorted(others) == sorted(["Linear", "Embedding", "Conv1d", "Conv2d", "Conv1D"])


@pytest.mark.parametrize("name", CASES)
def test_init_output_equals_base(name):
    model, x, spec = build(name)
    before = model(x)
    lorakit.inject(model, spec)
    assert all(torch.count_nonzero(m.lora_A) > 0 for m in lora_layers(model).values())
    torch.testing.assert_close(model(x), before, rtol=0, atol=0)


@pytest.mark.parametrize("name", CASES)
def test_gradients_reach_only_lora(name):
    model, x, spec = build(name)
    lorakit.inject(model, spec)
    randomize_b(model)  # with B = 0 the gradient of A is zero by construction
    model.train()
    model(x).float().pow(2).sum().backward()
    for pname, p in model.named_parameters():
        is_lora = pname.endswith(("lora_A", "lora_B"))
        assert p.requires_grad == is_lora, pname
        if is_lora:
            assert p.grad is not None and p.grad.abs().sum() > 0, pname
        else:
            assert p.grad is None, pname


@pytest.mark.parametrize("name", CASES)
def test_merge_unmerge_round_trip(name):
    model, x, spec = build(name)
    base_state = {k: v.clone() for k, v in model.state_dict().items()}
    lorakit.inject(model, spec)
    randomize_b(model)
    unmerged = model(x)
    report = lorakit.merge(model)
    assert report.layers == len(spec.targets)
    assert report.max_rel_diff < 1e-5
    merged = model(x)
    torch.testing.assert_close(merged, unmerged, rtol=1e-5, atol=1e-5)
    assert lorakit.unmerge(model) == len(spec.targets)
    torch.testing.assert_close(model(x), unmerged, rtol=1e-5, atol=1e-5)
    lorakit.unload(model, merge_first=False)
    assert set(model.state_dict()) == set(base_state)
    for k, v in model.state_dict().items():
        torch.testing.assert_close(v, base_state[k], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", CASES)
def test_unload_merged_keeps_original_keys_and_outputs(name):
    model, x, spec = build(name)
    keys = list(model.state_dict())
    # Merged inference costs nothing extra only if the model is the base again, tensor for tensor:
    # same module types, shapes, dtypes and memory layout (strides) as before injection.
    layout = {k: (v.shape, v.dtype, v.stride()) for k, v in model.state_dict().items()}
    types = [type(m) for m in model.modules()]
    lorakit.inject(model, spec)
    randomize_b(model)
    expected = model(x)
    plain = lorakit.unload(model)
    assert list(plain.state_dict()) == keys
    assert not lora_layers(plain)
    assert {k: (v.shape, v.dtype, v.stride()) for k, v in plain.state_dict().items()} == layout
    assert [type(m) for m in plain.modules()] == types
    torch.testing.assert_close(plain(x), expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", CASES)
def test_save_load_round_trip(name, tmp_path):
    model, x, spec = build(name)
    lorakit.inject(model, spec)
    randomize_b(model)
    expected = model(x)
    lorakit.save_adapter(model, tmp_path / "a")
    fresh, _, _ = build(name)  # same seed: same base weights
    lorakit.load_adapter(fresh, tmp_path / "a")
    torch.testing.assert_close(fresh(x), expected, rtol=0, atol=0)
    saved = adapter_state_dict(model)
    for k, v in adapter_state_dict(fresh).items():
        assert torch.equal(v, saved[k]), k


@pytest.mark.parametrize("name", CASES)
def test_dropout_only_in_train_mode(name):
    model, x, spec = build(name, dropout=0.5)
    lorakit.inject(model, spec)
    randomize_b(model)
    model.eval()
    torch.testing.assert_close(model(x), model(x), rtol=0, atol=0)
    if name != "embedding":  # token ids are never dropped
        model.train()
        torch.manual_seed(1)
        a = model(x)
        torch.manual_seed(2)
        assert not torch.allclose(a, model(x))


@pytest.mark.parametrize("name", CASES)
def test_disabled_runs_the_base(name):
    model, x, spec = build(name)
    base_out = model(x)
    lorakit.inject(model, spec)
    randomize_b(model)
    adapted = model(x)
    with lorakit.disabled(model):
        torch.testing.assert_close(model(x), base_out, rtol=0, atol=0)
    torch.testing.assert_close(model(x), adapted, rtol=0, atol=0)


def test_injected_model_deepcopies_and_pickles():
    import copy
    import pickle

    model, x, spec = build("linear")
    lorakit.inject(model, lorakit.LoraSpec(r=2, targets=("0",), rank_pattern={"0": 3}))
    randomize_b(model)
    for clone in (copy.deepcopy(model), pickle.loads(pickle.dumps(model))):
        torch.testing.assert_close(clone(x), model(x), rtol=0, atol=0)
        assert clone.lorakit_spec == model.lorakit_spec
        lorakit.merge(clone)  # the clone's layers own their parameters
        torch.testing.assert_close(clone(x), model(x), rtol=1e-5, atol=1e-5)


def test_merge_refuses_tied_weights():
    from tests.conftest import tiny_llama

    model = tiny_llama()
    assert model.lm_head.weight is model.model.embed_tokens.weight
    lorakit.inject(model, lorakit.LoraSpec(r=2, targets=("lm_head",)))
    with pytest.raises(ValueError, match="tied weights of lm_head"):
        lorakit.merge(model)
    assert not any(layer.merged for layer in lora_layers(model).values())

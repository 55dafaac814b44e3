"""ARCHITECTURE.md's two extension examples (a layer kind, a variant) run as written against the real core."""

from __future__ import annotations

import re
from collections import OrderedDict
from pathlib import Path

import pytest
import torch
from torch import nn

from lorakit.core import LoraSpec, inject, lora_layers, merge, registry
from lorakit.core import variants as variant_registry
from lorakit.errors import LorakitError
from lorakit.io import load_adapter, save_adapter

TEXT = (Path(__file__).resolve().parents[1] / "ARCHITECTURE.md").read_text(encoding="utf-8")


def _example(path_comment: str) -> dict:
    """Exec the python block whose first line names ``path_comment``; its namespace."""
    blocks = re.findall(r"```python\n(.*?)```", TEXT, re.S)
    (code,) = [b for b in blocks if b.startswith(f"# {path_comment}")]
    namespace: dict = {}
    exec(compile(code, "ARCHITECTURE.md", "exec"), namespace)
    return namespace


def test_the_kind_example_adapts_an_embedding_bag(monkeypatch) -> None:
    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))  # registered for this test only
    kind = _example("src/lorakit/core/kinds/embedding_bag.py")["EmbeddingBagKind"]()
    registry.register(nn.EmbeddingBag, kind)
    torch.manual_seed(0)
    model = nn.Sequential(OrderedDict(bag=nn.EmbeddingBag(20, 6, mode="mean")))
    x = torch.randint(0, 20, (3, 4))
    want = model(x)
    inject(model, LoraSpec(r=2, alpha=4, targets=("bag",)))
    torch.testing.assert_close(model(x), want)  # B = 0: the base model at step 0
    layer = lora_layers(model)["bag"]
    with torch.no_grad():
        layer.lora_B.normal_()
    adapted = model(x)
    merge(model)
    torch.testing.assert_close(model(x), adapted, atol=1e-5, rtol=1e-5)  # merging keeps the output


@pytest.fixture
def gain():
    """The example variant, registered for one test (the registry is one dict that every module shares)."""
    strategy = _example("src/lorakit/core/variants/gain.py")["GAIN"]
    variant_registry.register_variant(strategy)
    yield strategy
    del variant_registry.VARIANTS[strategy.name]


def test_the_variant_example_is_selected_by_name_saved_and_loaded(gain, tmp_path) -> None:
    torch.manual_seed(0)
    make = lambda: nn.Sequential(OrderedDict(fc=nn.Linear(5, 4)))  # noqa: E731
    model = make()
    inject(model, LoraSpec(r=2, alpha=2, targets=("fc",), variant_name="gain"))
    layer = lora_layers(model)["fc"]
    assert layer.variant is gain
    x = torch.randn(3, 5)
    with torch.no_grad():
        layer.lora_B.normal_()
        layer.lora_gain.uniform_(0.5, 1.5)
        want = layer.lora_gain * (x @ (layer.base.weight + layer.lora_delta()).T) + layer.base.bias
    torch.testing.assert_close(model(x), want, atol=1e-5, rtol=1e-5)
    save_adapter(model, tmp_path / "gain")  # the file names the variant; loading picks it again
    torch.manual_seed(0)
    again = make()
    load_adapter(again, tmp_path / "gain")
    assert lora_layers(again)["fc"].variant is gain
    torch.testing.assert_close(again(x), want, atol=1e-5, rtol=1e-5)
    merge(model)  # the variant's merged weight gives the same output
    torch.testing.assert_close(model(x), want, atol=1e-5, rtol=1e-5)


def test_variant_names_are_checked() -> None:
    with pytest.raises(LorakitError, match="variant must be one of lora, dora, got 'gain'"):
        LoraSpec(variant_name="gain")  # not registered here
    with pytest.raises(LorakitError, match="dora=True contradicts"):
        LoraSpec(dora=True, variant_name="lora")
    assert LoraSpec(variant_name="dora") == LoraSpec(dora=True)  # one spelling of each built-in

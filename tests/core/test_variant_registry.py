"""The variant / init registry: core holds plain LoRA and "kaiming"; lorakit.core.variants.dora and .inits define the rest."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import lorakit
from lorakit.core.variants import DORA, INITS, LORA, VARIANTS, Init, lookup, register_variant


def test_builtins_register_when_lorakit_is_imported():
    assert list(VARIANTS) == ["lora", "dora"] and VARIANTS["dora"] is DORA
    assert tuple(INITS) == ("kaiming", "gaussian", "pissa", "olora")
    assert lorakit.LoraSpec(dora=True).variant is DORA and lorakit.LoraSpec().variant is LORA
    assert lorakit.LoraSpec(init="olora").initializer.moves_base and not lorakit.LoraSpec().initializer.moves_base


def test_unknown_names_raise_listing_the_registered_ones():
    with pytest.raises(ValueError, match="variant must be one of lora, dora, got 'vera'"):
        lookup(VARIANTS, "variant", "vera")
    with pytest.raises(ValueError, match="init must be one of kaiming, gaussian, pissa, olora, got 'loftq'"):
        lorakit.LoraSpec(init="loftq")


def test_registering_a_name_twice_is_an_error():
    with pytest.raises(ValueError, match="'kaiming' is already registered"):
        register_variant(Init())
    with pytest.raises(ValueError, match="'dora' is already registered"):
        register_variant(type(DORA)())


def test_the_layer_keeps_its_init_for_shift_and_save():
    model = nn.Sequential(nn.Linear(6, 5))
    base = model[0].weight.detach().clone()
    lorakit.inject(model, lorakit.LoraSpec(r=2, targets=("0",), init="pissa"))
    layer = model[0]
    assert layer.initializer is INITS["pissa"]
    A, B = layer.initializer.file_factors(layer, layer.lora_A, layer.lora_B)
    assert A.shape == (4, 6) and B.shape == (5, 4)  # [A; A0], [B, −B0]: rank 2r, relative to the original base
    lorakit.unload(model, merge_first=False)
    torch.testing.assert_close(model[0].weight, base)

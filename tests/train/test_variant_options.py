"""The LoRA-variant options of ``lorakit train``: parsed once into LoraSpec arguments; LoRA+ groups."""

from __future__ import annotations

import argparse

import pytest
from torch import nn

import lorakit
from lorakit.cli.train import add_arguments, config_from_args
from lorakit.core.variants import INITS
from lorakit.train.config import LORA_INITS, TrainConfig
from lorakit.train.loop import make_optimizer


def test_the_builtin_inits_are_offered():
    # --init's choices come from the core's registry (one list of inits), read when the parser is built.
    assert set(LORA_INITS) == {"kaiming", "gaussian", "pissa", "olora"} == set(INITS)


def test_cli_options_become_spec_arguments():
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    args = parser.parse_args(["minilm", "sst2", "--dora", "--rslora", "--init", "gaussian", "--lora-plus-ratio", "16",
                              "--layers", "0-2,5", "--rank-pattern", "query=16", "re:.*value=4", "--alpha-pattern", "query=32"])
    cfg = config_from_args(args)
    assert cfg.variant_options() == {"dora": True, "rslora": True, "init": "gaussian", "layers": (0, 1, 2, 5),
                                     "rank_pattern": {"query": 16, "re:.*value": 4}, "alpha_pattern": {"query": 32.0}}
    assert cfg.lora_plus_ratio == 16.0


@pytest.mark.parametrize("kw, match", [(dict(layers="3-1"), "layers must"), (dict(rank_pattern=("q",)), "rank_pattern"),
                                       (dict(alpha_pattern=("q=-1",)), "alpha_pattern"), (dict(init="lora"), "init"),
                                       (dict(lora_plus_ratio=0.0), "lora_plus_ratio"),
                                       (dict(full=True, dora=True), "trains no adapter"),
                                       (dict(dora=True, init="olora"), "cannot be combined")])  # LoraSpec's check
def test_bad_values_raise(kw, match):
    with pytest.raises(ValueError, match=match):
        TrainConfig(**kw)


def test_lora_plus_puts_every_b_in_a_faster_group():
    model = nn.Sequential(nn.Linear(6, 6), nn.Linear(6, 6))
    lorakit.inject(model, lorakit.LoraSpec(r=2, targets=("0", "1"), bias="all"))
    opt = make_optimizer(model, TrainConfig(lr=1e-3, lora_plus_ratio=16.0))
    by_scale: dict[float, set[int]] = {}
    for g in opt.param_groups:
        by_scale.setdefault(g.get("lr_scale", 1.0), set()).update(id(p) for p in g["params"])
    assert by_scale[16.0] == {id(model[0].lora_B), id(model[1].lora_B)}
    assert {id(model[0].lora_A), id(model[0].bias)} <= by_scale[1.0]
    plain = make_optimizer(model, TrainConfig(lr=1e-3))
    assert all("lr_scale" not in g for g in plain.param_groups)
    assert sum(len(g["params"]) for g in plain.param_groups) == sum(len(g["params"]) for g in opt.param_groups)

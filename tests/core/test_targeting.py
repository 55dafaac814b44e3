"""Targeting: presets across model families, suffixes, regexes, slices, layers, overrides, errors."""

from __future__ import annotations

import pytest
from torch import nn

from lorakit.core import LoraSpec, select_targets
from lorakit.core.targeting import parse_target
from tests.conftest import tiny_bert, tiny_gpt2, tiny_llama


def paths(model, **kw):
    return [t.path for t in select_targets(model, LoraSpec(**kw))]


def leaves(model, **kw):
    return sorted({p.split(".", 3)[-1] if p.count(".") >= 3 else p for p in paths(model, **kw)})


@pytest.mark.parametrize(
    ("make", "preset", "per_layer"),
    [
        (tiny_bert, "qv", {"attention.self.query", "attention.self.value"}),
        (tiny_bert, "attention", {"attention.self.query", "attention.self.key", "attention.self.value",
                                  "attention.output.dense"}),
        (tiny_bert, "ffn", {"intermediate.dense", "output.dense"}),
        (tiny_llama, "qv", {"self_attn.q_proj", "self_attn.v_proj"}),
        (tiny_llama, "attention", {"self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj"}),
        (tiny_llama, "ffn", {"mlp.gate_proj", "mlp.up_proj", "mlp.down_proj"}),
        (tiny_gpt2, "qv", {"attn.c_attn"}),
        (tiny_gpt2, "attention", {"attn.c_attn", "attn.c_proj"}),
        (tiny_gpt2, "ffn", {"mlp.c_fc", "mlp.c_proj"}),
    ],
)
def test_presets_per_family(make, preset, per_layer):
    model = make()
    found = paths(model, targets=(preset,))
    assert len(found) == 2 * len(per_layer)  # two layers in every tiny model
    layer0 = {p.split(".0.", 1)[1] for p in found if ".0." in p}
    assert layer0 == per_layer


def test_all_linear_excludes_head_and_counts():
    llama = tiny_llama()
    found = paths(llama, targets=("all-linear",))
    assert "lm_head" not in found and len(found) == 2 * 7
    bert = tiny_bert(num_labels=2)
    found = paths(bert, targets=("all-linear",))
    assert "classifier" not in found and "bert.pooler.dense" in found and len(found) == 2 * 6 + 1


def test_gpt2_slices_and_param_count():
    ts = select_targets(tiny_gpt2(), LoraSpec(r=4, targets=("c_attn[q,v]",)))
    assert [t.slices for t in ts] == [(3, (0, 2))] * 2
    assert ts[0].num_params == 4 * 2 * (32 + 32) and ts[0].rank == 8
    assert parse_target("c_attn[0,1/3]") == ("c_attn", (3, (0, 1)))
    with pytest.raises(ValueError, match="letters must be"):
        parse_target("c_attn[x]")
    with pytest.raises(ValueError, match="distinct"):
        parse_target("c_attn[0,0/3]")


def test_regex_layers_and_overrides():
    model = tiny_llama()
    found = paths(model, targets=("re:.*layers\\.1\\..*proj",))
    assert len(found) == 7 and all(".layers.1." in p for p in found)
    assert paths(model, targets=("q_proj",), layers=(1,)) == ["model.layers.1.self_attn.q_proj"]
    ts = select_targets(model, LoraSpec(r=4, alpha=8, targets=("qv",), rank_pattern={"v_proj": 2},
                                        alpha_pattern={"re:.*layers\\.0\\.self_attn\\.q_proj": 1.0}))
    by = {t.path: t for t in ts}
    assert by["model.layers.0.self_attn.v_proj"].r == 2 and by["model.layers.0.self_attn.q_proj"].r == 4
    assert by["model.layers.0.self_attn.q_proj"].alpha == 1.0 and by["model.layers.1.self_attn.q_proj"].alpha == 8.0
    # r·(d + k): q is 32 -> 32, v is 32 -> 16 (two KV heads of 8)
    assert by["model.layers.1.self_attn.q_proj"].num_params == 4 * 64
    assert by["model.layers.1.self_attn.v_proj"].num_params == 2 * 48


def test_errors_are_clear():
    model = tiny_llama()
    with pytest.raises(ValueError, match="'nope' matches no module"):
        select_targets(model, LoraSpec(targets=("qv", "nope")))
    with pytest.raises(ValueError, match="in layers \\[7\\]"):
        select_targets(model, LoraSpec(targets=("q_proj",), layers=(7,)))
    with pytest.raises(TypeError, match="supported: .*Linear"):
        select_targets(model, LoraSpec(targets=("input_layernorm",)))
    with pytest.raises(TypeError, match="LayerNorm"):
        select_targets(nn.Sequential(nn.LayerNorm(4)), LoraSpec(targets=("0",)))


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"r": 0}, "rank r must be a positive integer"),
        ({"r": 2.5}, "rank r"),
        ({"alpha": -1}, "alpha must be"),
        ({"dropout": 1.0}, "dropout must be in"),
        ({"targets": ()}, "targets must be"),
        ({"init": "zeros"}, "init must be one of"),
        ({"bias": "some"}, "bias must be one of"),
        ({"rank_pattern": {"q": "x"}}, "must be a number"),
    ],
)
def test_spec_validation(kwargs, match):
    with pytest.raises(ValueError, match=match):
        LoraSpec(**kwargs)

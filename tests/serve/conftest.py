"""Fixtures for the serving tests: tiny models, a character tokenizer, seeded random adapters."""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmarks.reliability.servekit import CHAT_TEMPLATE, SPECIALS, make_adapter  # noqa: F401
from benchmarks.reliability.servekit import char_tokenizer as _char_tokenizer
from tests.conftest import tiny_bert, tiny_llama


# The character tokenizer and the seeded random adapters are the reliability benchmarks' (one copy).
def char_tokenizer(bert: bool = False):
    """A character-level fast tokenizer (3 specials + printable ASCII); BERT pads on the right."""
    return _char_tokenizer("right" if bert else "left")


# name -> spec of the mixed-batch adapters: different ranks and target sets.
LLAMA_ADAPTERS = {
    "qv4": dict(r=4, alpha=8, targets=("qv",)),
    "qv8": dict(r=8, alpha=16, targets=("qv",)),
    "attn2": dict(r=2, alpha=2, targets=("attention",)),
    "ffn16": dict(r=16, alpha=8, targets=("ffn",), layers=(1,)),
    "all4rs": dict(r=4, alpha=4, targets=("all-linear",), rslora=True),
}
BERT_ADAPTERS = {
    "cls_qv4": dict(r=4, alpha=8, targets=("qv",), modules_to_save=("classifier",)),
    "cls_ffn8": dict(r=8, alpha=8, targets=("ffn",), modules_to_save=("classifier",)),
    "cls_bias": dict(r=2, alpha=4, targets=("attention",), modules_to_save=("classifier",), bias="lora_only"),
}


@pytest.fixture(scope="session")
def llama_adapters(tmp_path_factory) -> Path:
    """A folder of tiny-Llama adapters (see LLAMA_ADAPTERS)."""
    root = tmp_path_factory.mktemp("llama_adapters")
    for i, (name, spec) in enumerate(LLAMA_ADAPTERS.items()):
        make_adapter(tiny_llama, root / name, seed=100 + i, **spec)
    return root


@pytest.fixture(scope="session")
def bert_adapters(tmp_path_factory) -> Path:
    """A folder of tiny-BERT classifier adapters (see BERT_ADAPTERS)."""
    root = tmp_path_factory.mktemp("bert_adapters")
    for i, (name, spec) in enumerate(BERT_ADAPTERS.items()):
        make_adapter(lambda: tiny_bert(num_labels=3), root / name, seed=200 + i, **spec)
    return root


@pytest.fixture(scope="session")
def tokenizer():
    """Left-padding character tokenizer for the tiny Llama."""
    return char_tokenizer()

"""Fixtures for the serving tests: tiny models, a character tokenizer, seeded random adapters."""

from __future__ import annotations

import string
from pathlib import Path

import pytest
import torch

import lorakit
from lorakit.core import lora_layers
from tests.conftest import tiny_bert, tiny_llama

# Ids 0..2 are special; every printable ASCII character is one token (fits tiny_llama's 128 ids).
SPECIALS = ["<pad>", "<s>", "</s>"]
CHAT_TEMPLATE = ("{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
                 "{% if add_generation_prompt %}assistant:{% endif %}")


def char_tokenizer(bert: bool = False):
    """A character-level fast tokenizer: 3 specials + printable ASCII (< 120 ids)."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    chars = [c for c in string.printable if c not in "\x0b\x0c\r"]
    vocab = {tok: i for i, tok in enumerate(SPECIALS + chars)}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<pad>"))
    tok.pre_tokenizer = pre_tokenizers.Split(Regex("."), behavior="isolated")
    tok.decoder = decoders.Fuse()
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", bos_token="<s>", eos_token="</s>",
                                   unk_token="<pad>")
    fast.chat_template = CHAT_TEMPLATE
    fast.padding_side = "right" if bert else "left"
    return fast


def make_adapter(model_factory, out: Path, seed: int, **spec_kwargs) -> Path:
    """Inject a LoRA with ``spec_kwargs`` into a fresh base, randomise A and B (seeded), save it."""
    model = model_factory()
    spec = lorakit.LoraSpec(**spec_kwargs)
    lorakit.inject(model, spec)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for layer in lora_layers(model).values():
            layer.lora_A.copy_(torch.randn(layer.lora_A.shape, generator=gen) * 0.3)
            layer.lora_B.copy_(torch.randn(layer.lora_B.shape, generator=gen) * 0.3)
        for path in spec.modules_to_save:
            for p in model.get_submodule(path).parameters():
                p.add_(torch.randn(p.shape, generator=gen) * 0.5)
    task = "SEQ_CLS" if spec.modules_to_save else "CAUSAL_LM"
    return lorakit.save_adapter(model, out, task_type=task)


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

"""Shared fixtures: tiny models built from configs (no downloads), a tiny tokenizer, the data root."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

# Never reach for a model hub from the test suite.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))

REPO = Path(__file__).resolve().parents[1]
DATA_ROOT = Path(os.environ.get("LORAKIT_DATA", REPO.parent / "shared" / "data"))


def tiny_bert(num_labels: int | None = None, seed: int = 0):
    """A 2-layer BERT (hidden 32) with random weights; a classifier head when num_labels is set."""
    from transformers import BertConfig, BertForSequenceClassification, BertModel

    torch.manual_seed(seed)
    cfg = BertConfig(vocab_size=120, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                     intermediate_size=64, max_position_embeddings=64, num_labels=num_labels or 2)
    model = BertForSequenceClassification(cfg) if num_labels else BertModel(cfg)
    return model.eval()


def tiny_llama(seed: int = 0):
    """A 2-layer Llama (hidden 32, GQA 4/2 heads) causal LM with random weights."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=128, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
                      tie_word_embeddings=True, pad_token_id=0, bos_token_id=1, eos_token_id=2)
    return LlamaForCausalLM(cfg).eval()


def tiny_gpt2(seed: int = 0):
    """A 2-layer GPT-2 (Conv1D projections, fused c_attn) with random weights."""
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(seed)
    cfg = GPT2Config(vocab_size=100, n_embd=32, n_layer=2, n_head=4, n_positions=64)
    return GPT2LMHeadModel(cfg).eval()


@pytest.fixture
def data_root() -> Path:
    """The shared real data sets; tests that need them skip with a reason when absent."""
    if not DATA_ROOT.is_dir():
        pytest.skip(f"data root {DATA_ROOT} not present")
    return DATA_ROOT


def tiny_tokenizer(vocab_size: int = 100):
    """A word-level fast tokenizer over a made-up vocabulary, with [PAD]/[UNK]/[CLS]/[SEP] and a chat template."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]"]
    words = [f"w{i}" for i in range(vocab_size - len(specials))]
    vocab = {tok: i for i, tok in enumerate(specials + words)}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B [SEP]", special_tokens=[("[CLS]", 2), ("[SEP]", 3)]
    )
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="[PAD]", unk_token="[UNK]",
                                   cls_token="[CLS]", sep_token="[SEP]", eos_token="[SEP]")
    return fast


def save_tiny_folder(model, path: Path) -> Path:
    """Save a tiny model and a matching tokenizer as a local Hugging Face folder."""
    path.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(path)
    tiny_tokenizer(model.config.vocab_size).save_pretrained(path)
    return path


@pytest.fixture
def tiny_bert_dir(tmp_path) -> Path:
    """A local folder holding a tiny BERT encoder and tokenizer."""
    return save_tiny_folder(tiny_bert(), tmp_path / "tiny-bert")


@pytest.fixture
def tiny_llama_dir(tmp_path) -> Path:
    """A local folder holding a tiny Llama causal LM and tokenizer."""
    return save_tiny_folder(tiny_llama(), tmp_path / "tiny-llama")

"""Tiny models built from configs (random weights, no download) and tiny data, for tests and benchmarks.

In memory: :func:`tiny_bert`, :func:`tiny_llama`, :func:`tiny_gpt2` and :func:`tiny_tokenizer`
(``tests/conftest.py`` re-exports them). As local folders (HF config + weights + a word-level
tokenizer): :func:`make_tiny_bert_dir`, :func:`make_tiny_llama_dir`, :func:`save_tiny_folder`; and tiny
data sets. Everything is built from scratch in seconds. It lives here, not under tests/, because the
reliability benchmarks build the same models and benchmarks never import tests (tests may import
benchmarks).
"""

from __future__ import annotations

import json
import random
from pathlib import Path

WORDS = ["good", "great", "fine", "fun", "bad", "awful", "dull", "poor", "movie", "film", "plot", "actor", "the", "a", "is", "was", "very", "not", "and", "name", "food", "area", "price", "near", "eatType", "restaurant", "pub", "cheap", "high", "centre", "riverside"]
CHAT_TEMPLATE = ("{% for m in messages %}<|{{ m['role'] }}|> {{ m['content'] }} {% endfor %}"
                 "{% if add_generation_prompt %}<|assistant|> {% endif %}")


def _tokenizer(folder: Path, chat: bool):
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    specials = ["[PAD]", "[UNK]", "[BOS]", "[EOS]", "[CLS]", "[SEP]", "<|user|>", "<|assistant|>"]
    vocab = {tok: i for i, tok in enumerate(specials + sorted(set(WORDS)) + list("0123456789,.[]"))}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Punctuation()])
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="[PAD]", unk_token="[UNK]", bos_token="[BOS]",
                                   eos_token="[EOS]", cls_token="[CLS]", sep_token="[SEP]")
    if chat:
        fast.chat_template = CHAT_TEMPLATE
    fast.save_pretrained(folder)
    return fast, len(vocab)


def make_tiny_bert_dir(folder: Path, seed: int = 0, dropout: float = 0.0) -> Path:
    """A 2-layer BERT encoder folder (no head: ``classify`` adds one) with a word-level tokenizer.

    ``dropout``: the base's own hidden and attention dropout (real BERT's is 0.1).
    """
    import torch
    from transformers import BertConfig, BertModel

    folder.mkdir(parents=True, exist_ok=True)
    _, vocab = _tokenizer(folder, chat=False)
    torch.manual_seed(seed)
    cfg = BertConfig(vocab_size=vocab, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                     intermediate_size=64, max_position_embeddings=64, pad_token_id=0,
                     hidden_dropout_prob=dropout, attention_probs_dropout_prob=dropout)
    BertModel(cfg).save_pretrained(folder)
    return folder


def make_tiny_llama_dir(folder: Path, seed: int = 0, dropout: float = 0.0) -> Path:
    """A 2-layer Llama causal LM folder with a word-level tokenizer and a chat template.

    ``dropout``: the base's own attention dropout (Llama's default is 0).
    """
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    folder.mkdir(parents=True, exist_ok=True)
    _, vocab = _tokenizer(folder, chat=True)
    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=vocab, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
                      tie_word_embeddings=True, pad_token_id=0, bos_token_id=2, eos_token_id=3,
                      attention_dropout=dropout)
    LlamaForCausalLM(cfg).save_pretrained(folder)
    return folder


def make_classify_data(folder: Path, n_train: int = 64, n_dev: int = 16, seed: int = 0) -> Path:
    """``train.jsonl`` / ``dev.jsonl`` of a learnable 2-class task (good words vs bad words)."""
    rng = random.Random(seed)
    folder.mkdir(parents=True, exist_ok=True)
    pos, neg = ["good", "great", "fine", "fun"], ["bad", "awful", "dull", "poor"]
    for split, n in (("train", n_train), ("dev", n_dev)):
        with open(folder / f"{split}.jsonl", "w") as fh:
            for _ in range(n):
                label = rng.randrange(2)
                words = [rng.choice(pos if label else neg)] + rng.sample(["the", "movie", "film", "plot", "was"], 3)
                rng.shuffle(words)
                fh.write(json.dumps({"text": " ".join(words), "label": label}) + "\n")
    return folder


def make_generate_data(folder: Path, n_train: int = 32, n_dev: int = 8, seed: int = 0) -> Path:
    """``train.jsonl`` / ``dev.jsonl`` / ``test.jsonl`` of prompt → completion pairs (copy a word)."""
    rng = random.Random(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for split, n in (("train", n_train), ("dev", n_dev), ("test", n_dev)):
        with open(folder / f"{split}.jsonl", "w") as fh:
            for _ in range(n):
                name, food = rng.choice(["fine", "great", "cheap"]), rng.choice(["food", "pub", "restaurant"])
                fh.write(json.dumps({"prompt": f"name [ {name} ] eatType [ {food} ]",
                                     "completion": f"the {food} is {name} .",
                                     "references": [f"the {food} is {name} .", f"a {name} {food} ."]}) + "\n")
    return folder


def tiny_bert(num_labels: int | None = None, seed: int = 0):
    """A 2-layer BERT (hidden 32) with random weights; a classifier head when num_labels is set."""
    import torch
    from transformers import BertConfig, BertForSequenceClassification, BertModel

    torch.manual_seed(seed)
    cfg = BertConfig(vocab_size=120, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                     intermediate_size=64, max_position_embeddings=64, num_labels=num_labels or 2)
    model = BertForSequenceClassification(cfg) if num_labels else BertModel(cfg)
    return model.eval()


def tiny_llama(seed: int = 0):
    """A 2-layer Llama (hidden 32, GQA 4/2 heads) causal LM with random weights."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=128, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
                      tie_word_embeddings=True, pad_token_id=0, bos_token_id=1, eos_token_id=2)
    return LlamaForCausalLM(cfg).eval()


def tiny_gpt2(seed: int = 0):
    """A 2-layer GPT-2 (Conv1D projections, fused c_attn) with random weights."""
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(seed)
    cfg = GPT2Config(vocab_size=100, n_embd=32, n_layer=2, n_head=4, n_positions=64)
    return GPT2LMHeadModel(cfg).eval()


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

"""Builders of tiny local model folders (HF config + weights + a word-level tokenizer) and tiny data.

Everything is built from scratch in tmp folders: no download, no embedded model, seconds to build.
Shared by tests/train and tests/cli (which imports it by path).
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


def make_tiny_bert_dir(folder: Path, seed: int = 0) -> Path:
    """A 2-layer BERT encoder folder (no head: ``classify`` adds one) with a word-level tokenizer."""
    import torch
    from transformers import BertConfig, BertModel

    folder.mkdir(parents=True, exist_ok=True)
    _, vocab = _tokenizer(folder, chat=False)
    torch.manual_seed(seed)
    cfg = BertConfig(vocab_size=vocab, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                     intermediate_size=64, max_position_embeddings=64, pad_token_id=0,
                     hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)  # exact comparisons
    BertModel(cfg).save_pretrained(folder)
    return folder


def make_tiny_llama_dir(folder: Path, seed: int = 0) -> Path:
    """A 2-layer Llama causal LM folder with a word-level tokenizer and a chat template."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    folder.mkdir(parents=True, exist_ok=True)
    _, vocab = _tokenizer(folder, chat=True)
    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=vocab, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
                      tie_word_embeddings=True, pad_token_id=0, bos_token_id=2, eos_token_id=3)
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

"""The Llama sizes of the scaling series, saved once as real checkpoints that runs then load from disk.

A size is a ``LlamaConfig`` (SmolLM2-135M's, SmolLM2-360M's and TinyLlama-1.1B's shapes, plus a
``tiny`` one for tests) with random weights: speed and memory do not depend on the values. Each is
built once, saved with ``save_pretrained`` (safetensors, bf16, with a word-level tokenizer) under the
cache folder, and from then on loaded the way a user loads a checkpoint: ``lorakit.models.load_model``
on the folder. The cache is ``--cache``, else ``$LORAKIT_BENCH_CACHE``, else ``~/.cache/lorakit/bench``.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

CACHE_ENV = "LORAKIT_BENCH_CACHE"
# name -> LlamaConfig fields (vocab, hidden, intermediate, layers, heads, kv heads)
LLAMA_SIZES = {
    "tiny": dict(vocab_size=1000, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                 num_attention_heads=4, num_key_value_heads=2),
    "llama-135m": dict(vocab_size=49152, hidden_size=576, intermediate_size=1536, num_hidden_layers=30,
                       num_attention_heads=9, num_key_value_heads=3),
    "llama-360m": dict(vocab_size=49152, hidden_size=960, intermediate_size=2560, num_hidden_layers=32,
                       num_attention_heads=15, num_key_value_heads=5),
    "llama-1b": dict(vocab_size=32000, hidden_size=2048, intermediate_size=5632, num_hidden_layers=22,
                     num_attention_heads=32, num_key_value_heads=4),
}
WEIGHTS = "model.safetensors"


def default_cache() -> Path:
    """``$LORAKIT_BENCH_CACHE``, else ``~/.cache/lorakit/bench``."""
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "lorakit" / "bench").expanduser()


def param_count(name: str) -> int:
    """Parameters of a size, computed from its config (tied embeddings)."""
    c = LLAMA_SIZES[name]
    h, i, layers, v = c["hidden_size"], c["intermediate_size"], c["num_hidden_layers"], c["vocab_size"]
    kv = h // c["num_attention_heads"] * c["num_key_value_heads"]
    per_layer = 2 * h * h + 2 * h * kv + 3 * h * i + 2 * h
    return v * h + layers * per_layer + h


def random_llama(name: str, dtype):
    """A randomly initialised ``LlamaForCausalLM`` of size ``name``, built directly in ``dtype``."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    if name not in LLAMA_SIZES:
        raise ValueError(f"unknown size {name!r}; expected one of {', '.join(LLAMA_SIZES)}")
    cfg = LlamaConfig(**LLAMA_SIZES[name], tie_word_embeddings=True, max_position_embeddings=2048,
                      pad_token_id=0, bos_token_id=2, eos_token_id=3)
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)  # never materialise an fp32 copy of a bf16 model
    try:
        model = LlamaForCausalLM(cfg)
    finally:
        torch.set_default_dtype(previous)
    return model


def checkpoint(name: str, cache: Path | None = None) -> Path:
    """The folder of size ``name``'s checkpoint, built and saved first if it is not there yet.

    Built in a temporary folder beside it and renamed into place, so an interrupted build never
    leaves a folder that looks complete.
    """
    import torch

    from benchmarks.tiny_models import tiny_tokenizer

    folder = (default_cache() if cache is None else Path(cache)) / f"{name}-seed0-bf16"
    if (folder / WEIGHTS).is_file() and (folder / "config.json").is_file():
        return folder
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = folder.with_name(folder.name + f".tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    torch.manual_seed(0)
    random_llama(name, torch.bfloat16).save_pretrained(tmp, safe_serialization=True)
    tiny_tokenizer(min(LLAMA_SIZES[name]["vocab_size"], 1000)).save_pretrained(tmp)  # the runs feed random ids
    shutil.rmtree(folder, ignore_errors=True)
    tmp.rename(folder)
    return folder

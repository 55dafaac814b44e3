"""GGUF export round trip: lorakit merges, writes GGUF; transformers' GGUF loader reads it back.

The reference is lorakit's merged model itself; the file read back must give the same logits within
the export dtype's rounding, and the same tokenizer (ids of a test text).
"""

from __future__ import annotations

import pytest
import torch

import lorakit
from lorakit.core import lora_layers
from lorakit.models.gguf_export import export_gguf

TEXT = "LoRA freezes the pretrained weights; the merged model costs nothing extra. 12345 !?"
# Relative to the largest logit: f16 keeps ~3 decimal digits, q8_0 ~2 (8-bit blocks of 32), and the
# rounding of every layer adds up in a random model.
TOLERANCE = {"f16": 5e-3, "q8_0": 2e-1}


def byte_level_tokenizer():
    """A byte-level BPE tokenizer (llama.cpp's 'gpt2' kind) trained on a few sentences, with a chat template."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=300, special_tokens=["<unk>", "<s>", "</s>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator([TEXT, "the quick brown fox jumps over the lazy dog", "weights adapters rank alpha"] * 20,
                            trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", bos_token="<s>", eos_token="</s>",
                                   pad_token="</s>")
    fast.chat_template = "{% for m in messages %}{{ m['content'] }}\n{% endfor %}"
    return fast


def tiny_llama_for(tokenizer, tied: bool):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=len(tokenizer) + 4, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
                      tie_word_embeddings=tied, bos_token_id=1, eos_token_id=2, rope_theta=10000.0)
    return LlamaForCausalLM(cfg).eval()


def rounded_like_export(model, dtype: str):
    """A copy of ``model`` whose matrices went through the export dtype and back (gguf's own quantizer)."""
    import copy

    import gguf

    qtype = {"f16": gguf.GGMLQuantizationType.F16, "q8_0": gguf.GGMLQuantizationType.Q8_0}[dtype]
    rounded = copy.deepcopy(model)
    with torch.no_grad():
        for param in rounded.parameters():
            if param.ndim == 2:
                data = param.float().numpy()
                back = gguf.quants.dequantize(gguf.quants.quantize(data, qtype), qtype).reshape(data.shape)
                param.copy_(torch.from_numpy(back))
    return rounded


def merged_with_adapter(model):
    """Inject an all-linear LoRA with random A and B (as if trained) and merge it away, through lorakit."""
    lorakit.inject(model, lorakit.LoraSpec(r=4, alpha=8, targets=("all-linear",)))
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for layer in lora_layers(model).values():
            layer.lora_A.copy_(torch.randn(layer.lora_A.shape, generator=gen) * 0.2)
            layer.lora_B.copy_(torch.randn(layer.lora_B.shape, generator=gen) * 0.2)
    return lorakit.unload(model, merge_first=True)


@pytest.mark.parametrize("dtype,tied", [("f16", True), ("q8_0", False)])
def test_round_trip_through_transformers(tmp_path, dtype, tied):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = byte_level_tokenizer()
    base = tiny_llama_for(tokenizer, tied)
    ids = torch.tensor([tokenizer(TEXT)["input_ids"]])
    with torch.inference_mode():
        before = base(ids).logits
    model = merged_with_adapter(base)
    with torch.inference_mode():
        want = model(ids).logits
    assert (want - before).abs().max() > 1e-2  # the adapter moved the model: the test compares something
    path = export_gguf(model, tokenizer, tmp_path / "m.gguf", dtype=dtype)
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path, gguf_file=path.name, dtype=torch.float32).eval()
    with torch.inference_mode():
        got = loaded(ids).logits
    error = ((got - want).abs().max() / want.abs().max()).item()
    assert error < TOLERANCE[dtype], error
    # Exactly the export dtype's rounding, no layout error: the merged model with every matrix rounded
    # the way the file stores it gives the same logits.
    with torch.inference_mode():
        rounded = rounded_like_export(model, dtype)(ids).logits
    assert (got - rounded).abs().max() < 1e-4
    assert loaded.config.tie_word_embeddings == tied
    back = AutoTokenizer.from_pretrained(tmp_path, gguf_file=path.name)
    assert back(TEXT)["input_ids"] == tokenizer(TEXT)["input_ids"]
    assert back.eos_token == "</s>" and back.chat_template == tokenizer.chat_template


def test_refusals(tmp_path):
    from tests.conftest import tiny_gpt2

    tokenizer = byte_level_tokenizer()
    model = tiny_llama_for(tokenizer, True)
    with pytest.raises(ValueError, match="dtype"):
        export_gguf(model, tokenizer, tmp_path / "x.gguf", dtype="q4_k")
    with pytest.raises(ValueError, match="architecture"):
        export_gguf(tiny_gpt2(), tokenizer, tmp_path / "x.gguf")
    lorakit.inject(model, lorakit.LoraSpec(r=2, targets=("qv",)))
    with pytest.raises(ValueError, match="merge"):
        export_gguf(model, tokenizer, tmp_path / "x.gguf")
    assert not list(tmp_path.iterdir())  # nothing half-written


@pytest.mark.slow
def test_smollm2_with_its_published_adapter(tmp_path):
    """The real model: the e2e adapter merged and exported; read back by transformers and by gguf."""
    import gguf
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from lorakit.cli.main import main
    from lorakit.models import load_model
    from lorakit.models.embedded import locate_embedded
    from tests.conftest import REPO

    adapter = REPO / "adapters" / "smollm2" / "e2e"
    out = tmp_path / "e2e.gguf"
    assert main(["export", "smollm2", "--adapter", str(adapter), "--gguf", str(out)]) == 0
    reference = load_model("smollm2", task="generate")
    lorakit.load_adapter(reference.model, adapter)
    lorakit.merge(reference.model)
    ids = torch.tensor([reference.tokenizer("name[The Eagle], eatType[pub], food[Italian]")["input_ids"]])
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path, gguf_file=out.name, dtype=torch.float32).eval()
    with torch.inference_mode():
        want, got = reference.model(ids).logits, loaded(ids).logits
    assert ((got - want).abs().max() / want.abs().max()).item() < 1e-2
    with torch.no_grad():  # the file's own rounding: every matrix through f16 and back
        for param in reference.model.parameters():
            if param.ndim == 2:
                param.copy_(param.half().float())
    with torch.inference_mode():
        rounded = reference.model(ids).logits
    assert ((got - rounded).abs().max() / rounded.abs().max()).item() < 1e-4
    back = AutoTokenizer.from_pretrained(tmp_path, gguf_file=out.name)
    assert back(TEXT)["input_ids"] == reference.tokenizer(TEXT)["input_ids"]
    written, shipped = gguf.GGUFReader(str(out)).fields, gguf.GGUFReader(str(locate_embedded("smollm2"))).fields
    for key in [k for k in shipped if k.startswith("tokenizer.")]:
        assert written[key].contents() == shipped[key].contents(), key

"""``lorakit export``: merge an adapter and write a GGUF file that transformers' GGUF loader reads back."""

from __future__ import annotations

import pytest
import torch

import lorakit
from lorakit.cli.main import main
from lorakit.core import lora_layers
from tests.conftest import save_tiny_folder, tiny_bert
from tests.models.test_gguf_export import TEXT, byte_level_tokenizer, tiny_llama_for


@pytest.fixture(scope="module")
def llama_folder(tmp_path_factory):
    """A tiny Llama folder with a byte-level BPE tokenizer, and a trained-looking adapter for it."""
    root = tmp_path_factory.mktemp("export")
    tokenizer = byte_level_tokenizer()
    model = tiny_llama_for(tokenizer, tied=True)
    model.save_pretrained(root / "base")
    tokenizer.save_pretrained(root / "base")
    lorakit.inject(model, lorakit.LoraSpec(r=4, alpha=8, targets=("qv",)))
    gen = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for layer in lora_layers(model).values():
            layer.lora_B.copy_(torch.randn(layer.lora_B.shape, generator=gen) * 0.3)
    lorakit.save_adapter(model, root / "adapter", task_type="CAUSAL_LM")
    return root


def test_export_merges_and_round_trips(llama_folder, tmp_path, capsys):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from lorakit.models import load_model

    out = tmp_path / "merged.gguf"
    assert main(["export", str(llama_folder / "base"), "--adapter", str(llama_folder / "adapter"),
                 "--gguf", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "merged" in printed and "wrote" in printed
    reference = load_model(llama_folder / "base", task="generate")
    lorakit.load_adapter(reference.model, llama_folder / "adapter")
    ids = torch.tensor([reference.tokenizer(TEXT)["input_ids"]])
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path, gguf_file=out.name, dtype=torch.float32).eval()
    with torch.inference_mode():
        want, got = reference.model(ids).logits, loaded(ids).logits
        base = AutoModelForCausalLM.from_pretrained(llama_folder / "base").eval()(ids).logits
    assert (want - base).abs().max() > 1e-2  # the adapter changes the model, and the file carries it
    assert ((got - want).abs().max() / want.abs().max()).item() < 5e-3  # f16 rounding
    assert AutoTokenizer.from_pretrained(tmp_path, gguf_file=out.name)(TEXT)["input_ids"] == ids[0].tolist()


def test_export_errors_are_one_line(llama_folder, tmp_path, capsys):
    out = tmp_path / "x.gguf"
    out.write_bytes(b"keep me")
    assert main(["export", str(llama_folder / "base"), "--gguf", str(out)]) == 2
    assert capsys.readouterr().err.startswith("error: ") and out.read_bytes() == b"keep me"
    assert main(["export", str(llama_folder / "base"), "--gguf", str(out), "--force", "--dtype", "q8_0"]) == 0
    bert = save_tiny_folder(tiny_bert(), tmp_path / "bert")
    assert main(["export", str(bert), "--gguf", str(tmp_path / "b.gguf")]) == 2
    assert "decoder" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["export", str(llama_folder / "base"), "--gguf", str(tmp_path / "c.gguf"), "--dtype", "q4_0"])

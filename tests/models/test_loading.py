"""load_model / save_merged / model_family on tiny local HF folders (built from configs, no downloads)."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from lorakit.models import TASKS, LoadedModel, load_model, model_family, save_merged
from tests.conftest import tiny_bert, tiny_gpt2, tiny_llama

WORDS = ["the", "movie", "was", "great", "bad", "a", "plot", "hello", "world", "user", "assistant"]
CHAT_TEMPLATE = "{% for m in messages %}<s>{{ m['role'] }} {{ m['content'] }}</s>{% endfor %}"


def _tokenizer(specials: list[str], **special_tokens: str):
    """A word-level fast tokenizer over WORDS, made with `tokenizers` (no vocab download)."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {tok: i for i, tok in enumerate(specials + WORDS)}
    backend = Tokenizer(models.WordLevel(vocab, unk_token=specials[1] if len(specials) > 1 else specials[0]))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(tokenizer_object=backend, **special_tokens)


@pytest.fixture(scope="module")
def bert_dir(tmp_path_factory) -> Path:
    """A tiny BertModel folder with a BERT-style tokenizer (has a pad token)."""
    out = tmp_path_factory.mktemp("tiny-bert")
    tiny_bert().save_pretrained(out)
    tok = _tokenizer(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"], pad_token="[PAD]", unk_token="[UNK]",
                     cls_token="[CLS]", sep_token="[SEP]", mask_token="[MASK]")
    tok.save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def llama_dir(tmp_path_factory) -> Path:
    """A tiny LlamaForCausalLM folder without pad token (in config or tokenizer), with a chat template."""
    out = tmp_path_factory.mktemp("tiny-llama")
    model = tiny_llama()
    model.config.pad_token_id = None
    model.generation_config.pad_token_id = None
    model.save_pretrained(out)
    tok = _tokenizer(["<pad-unused>", "<unk>", "<s>", "</s>"], unk_token="<unk>", bos_token="<s>", eos_token="</s>")
    tok.chat_template = CHAT_TEMPLATE
    tok.save_pretrained(out)
    return out


def _batch(tokenizer, texts=("the movie was great", "bad plot")):
    return tokenizer(list(texts), return_tensors="pt", padding=True)


# --- load_model: each task ------------------------------------------------------------------------


def test_base_encoder_loads_the_saved_weights(bert_dir: Path) -> None:
    loaded = load_model(str(bert_dir))
    assert isinstance(loaded, LoadedModel)
    assert type(loaded.model).__name__ == "BertModel"
    assert (loaded.task, loaded.name, loaded.source_path) == ("base", str(bert_dir), bert_dir)
    assert not loaded.model.training
    saved = load_file(bert_dir / "model.safetensors")
    state = loaded.model.state_dict()
    assert all(torch.equal(state[k], v) for k, v in saved.items())
    assert loaded.tokenizer.pad_token == "[PAD]"
    out = loaded.model(**_batch(loaded.tokenizer))
    assert out.last_hidden_state.shape[-1] == 32


def test_base_decoder_is_a_causal_lm_with_pad_fallback_and_chat_template(llama_dir: Path) -> None:
    loaded = load_model(llama_dir)
    assert type(loaded.model).__name__ == "LlamaForCausalLM"
    tok = loaded.tokenizer
    assert tok.pad_token == tok.eos_token == "</s>"
    assert tok.chat_template == CHAT_TEMPLATE
    assert loaded.model.generation_config.pad_token_id == tok.eos_token_id
    assert model_family(loaded.model) == "llama"


def test_generate_pads_left_and_generates(llama_dir: Path) -> None:
    loaded = load_model(str(llama_dir), "generate")
    assert loaded.tokenizer.padding_side == "left"
    batch = _batch(loaded.tokenizer, ["hello world the movie", "hello"])
    assert batch["attention_mask"][1, 0] == 0  # the short row is padded on the left
    out = loaded.model.generate(**batch, max_new_tokens=3, do_sample=False)
    assert out.shape == (2, batch["input_ids"].shape[1] + 3)


def test_generate_on_an_encoder_is_refused(bert_dir: Path) -> None:
    with pytest.raises(ValueError, match="needs a decoder.*encoder.*'bert'"):
        load_model(str(bert_dir), "generate")


def test_classify_encoder_new_head_is_logged_in_one_line(bert_dir: Path, caplog) -> None:
    with caplog.at_level(logging.INFO):
        loaded = load_model(str(bert_dir), "classify", num_labels=3)
    assert type(loaded.model).__name__ == "BertForSequenceClassification"
    assert loaded.model.classifier.out_features == 3
    assert loaded.model(**_batch(loaded.tokenizer)).logits.shape == (2, 3)
    ours = [r for r in caplog.records if r.name.startswith("lorakit.models")]
    assert [r.levelno for r in ours] == [logging.INFO]
    assert "classifier.weight" in ours[0].getMessage()
    # transformers' multi-line LOAD REPORT table (a WARNING) must not be emitted.
    assert not [r for r in caplog.records if "LOAD REPORT" in r.getMessage()]


def test_classify_decoder_gets_a_pad_token_id(llama_dir: Path) -> None:
    loaded = load_model(str(llama_dir), "classify", num_labels=2)
    assert type(loaded.model).__name__ == "LlamaForSequenceClassification"
    assert loaded.model.config.pad_token_id == loaded.tokenizer.pad_token_id is not None
    # Without a pad id in the config, Llama's classifier refuses batches of more than one row.
    assert loaded.model(**_batch(loaded.tokenizer)).logits.shape == (2, 2)


def test_classify_needs_num_labels_for_a_new_head(bert_dir: Path) -> None:
    with pytest.raises(ValueError, match="pass num_labels"):
        load_model(str(bert_dir), "classify")


def test_classify_reuses_an_existing_head(tmp_path: Path, bert_dir: Path) -> None:
    tiny_bert(num_labels=4).save_pretrained(tmp_path)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        (tmp_path / name).write_bytes((bert_dir / name).read_bytes())
    assert load_model(str(tmp_path), "classify").model.config.num_labels == 4
    assert load_model(str(tmp_path), "classify", num_labels=4).model.config.num_labels == 4
    with pytest.raises(ValueError, match="already has a classification head with 4 labels"):
        load_model(str(tmp_path), "classify", num_labels=2)


def test_missing_body_weights_are_a_warning(tmp_path: Path, bert_dir: Path, caplog) -> None:
    for path in bert_dir.iterdir():
        (tmp_path / path.name).write_bytes(path.read_bytes())
    tensors = load_file(bert_dir / "model.safetensors")
    dropped = next(k for k in tensors if k.endswith("output.dense.bias"))
    save_file({k: v for k, v in tensors.items() if k != dropped}, tmp_path / "model.safetensors",
              metadata={"format": "pt"})
    with caplog.at_level(logging.INFO, logger="lorakit.models"):
        load_model(str(tmp_path))
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and dropped in warnings[0]


def test_dtype_is_applied(bert_dir: Path) -> None:
    model = load_model(str(bert_dir), dtype=torch.bfloat16).model
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16}


# --- load_model: bad input ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"task": "train"}, "unknown task 'train'; expected one of base, classify, generate"),
        ({"task": "base", "num_labels": 2}, "only applies to task 'classify'"),
        ({"task": "classify", "num_labels": 0}, "positive int"),
        ({"task": "classify", "num_labels": True}, "positive int"),
    ],
)
def test_bad_arguments(bert_dir: Path, kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        load_model(str(bert_dir), **kwargs)


def test_bad_dtype(bert_dir: Path) -> None:
    with pytest.raises(TypeError, match="torch.dtype"):
        load_model(str(bert_dir), dtype="float32")  # type: ignore[arg-type]


def test_bad_names_say_what_is_accepted(tmp_path: Path) -> None:
    (tmp_path / "weights.bin").write_bytes(b"x")
    cases = {
        "bert-base-uncased": "'bert-base-uncased' is neither an embedded model nor an existing folder",
        str(tmp_path): "has no config.json",
        str(tmp_path / "weights.bin"): "is a file, not a model folder",
    }
    for name, why in cases.items():
        with pytest.raises(ValueError) as err:
            load_model(name)
        message = str(err.value)
        assert why in message
        assert "minilm, smollm2" in message and "a local folder with config.json" in message


def test_tasks_constant() -> None:
    assert TASKS == ("base", "classify", "generate")


# --- model_family -------------------------------------------------------------------------------


def test_model_family() -> None:
    assert model_family(tiny_bert()) == "bert"
    assert model_family(tiny_llama()) == "llama"
    assert model_family(tiny_gpt2()) == "gpt2"
    assert model_family(torch.nn.Linear(2, 2)) == "other"
    from transformers import T5Config, T5Model

    t5 = T5Model(T5Config(vocab_size=32, d_model=8, d_kv=4, d_ff=16, num_layers=1, num_heads=2))
    assert model_family(t5) == "other"


# --- save_merged --------------------------------------------------------------------------------


def test_save_merged_round_trips_with_plain_transformers(llama_dir: Path, tmp_path: Path) -> None:
    loaded = load_model(str(llama_dir), "generate")
    with torch.no_grad():  # stand-in for a merged LoRA delta: the saved weights must be the new ones
        loaded.model.model.layers[0].self_attn.q_proj.weight.add_(0.5)
    out = save_merged(loaded.model, loaded.tokenizer, tmp_path / "merged")
    assert out == tmp_path / "merged"
    files = {p.name for p in out.iterdir()}
    assert "model.safetensors" in files and not any(f.endswith((".bin", ".pt", ".pth")) for f in files)
    assert "lorakit" not in (out / "config.json").read_text()

    from transformers import AutoModelForCausalLM, AutoTokenizer

    again = AutoModelForCausalLM.from_pretrained(out, local_files_only=True)
    tok = AutoTokenizer.from_pretrained(out, local_files_only=True)
    ids = tok(["hello world"], return_tensors="pt")["input_ids"]
    with torch.no_grad():
        assert torch.allclose(again(ids).logits, loaded.model(ids).logits)
    assert tok.chat_template == CHAT_TEMPLATE
    assert json.loads((out / "config.json").read_text())["architectures"] == ["LlamaForCausalLM"]


class _LeftoverLora(torch.nn.Module):
    """Stands in for a LoRA layer that was not unloaded."""

    def __init__(self, base: torch.nn.Linear) -> None:
        super().__init__()
        self.base = base

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.base(x)


def test_save_merged_refuses_leftover_foreign_layers(llama_dir: Path, tmp_path: Path) -> None:
    loaded = load_model(str(llama_dir))
    attn = loaded.model.model.layers[1].self_attn
    attn.v_proj = _LeftoverLora(attn.v_proj)
    with pytest.raises(ValueError, match=r"1 modules.*model\.layers\.1\.self_attn\.v_proj \(.*_LeftoverLora\)"):
        save_merged(loaded.model, loaded.tokenizer, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_import_is_cheap() -> None:
    code = "import sys, lorakit.models; print('transformers' in sys.modules, 'tokenizers' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]

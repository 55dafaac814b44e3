"""Shared fixtures: tiny models built from configs (no downloads), a tiny tokenizer, the data root."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

# The builders live in benchmarks/ (the reliability benchmarks build the same models); re-exported here.
from benchmarks.tiny_models import save_tiny_folder, tiny_bert, tiny_gpt2, tiny_llama, tiny_tokenizer  # noqa: F401

# Never reach for a model hub from the test suite.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
# Two threads, or one per pytest-xdist worker when several share the cores (no oversubscription).
_WORKERS = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
torch.set_num_threads(max(1, min(2, (os.cpu_count() or 1) // max(_WORKERS, 1))))

REPO = Path(__file__).resolve().parents[1]
DATA_ROOT = Path(os.environ.get("LORAKIT_DATA", REPO.parent / "shared" / "data"))


@pytest.fixture
def data_root() -> Path:
    """The shared real data sets; tests that need them skip with a reason when absent."""
    if not DATA_ROOT.is_dir():
        pytest.skip(f"data root {DATA_ROOT} not present")
    return DATA_ROOT


@pytest.fixture
def tiny_bert_dir(tmp_path) -> Path:
    """A local folder holding a tiny BERT encoder and tokenizer."""
    return save_tiny_folder(tiny_bert(), tmp_path / "tiny-bert")


@pytest.fixture
def tiny_llama_dir(tmp_path) -> Path:
    """A local folder holding a tiny Llama causal LM and tokenizer."""
    return save_tiny_folder(tiny_llama(), tmp_path / "tiny-llama")

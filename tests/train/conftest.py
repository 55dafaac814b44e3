"""Fixtures of the train tests: tiny model folders and data sets, built once per session."""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmarks.tiny_models import (
    make_classify_data,
    make_generate_data,
    make_tiny_bert_dir,
    make_tiny_llama_dir,
)


@pytest.fixture(scope="session")
def tiny_dirs(tmp_path_factory) -> dict[str, Path]:
    """Model folders and data folders shared by the train tests (built once per session)."""
    root = tmp_path_factory.mktemp("tiny")
    return {
        "bert": make_tiny_bert_dir(root / "bert"),
        "llama": make_tiny_llama_dir(root / "llama"),
        "bert_dropout": make_tiny_bert_dir(root / "bert_dropout", dropout=0.1),  # as real BERT's base
        "llama_dropout": make_tiny_llama_dir(root / "llama_dropout", dropout=0.1),
        "cls_data": make_classify_data(root / "cls_data"),
        "gen_data": make_generate_data(root / "gen_data"),
    }

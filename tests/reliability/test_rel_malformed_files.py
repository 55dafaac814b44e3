"""Promise 2: a malformed adapter fails cleanly.

Fuzzes the whole load path (``read_adapter`` on a folder, then ``load_adapter`` onto a tiny model) and
``AdapterConfig.from_json`` with hypothesis. Every case must load or raise ``LorakitError`` (a library's
``ValueError`` counts as a crash) with a message; a refused load leaves the model untouched; no case runs past its deadline; memory stays
bounded. The default run is bounded (a few hundred cases, seconds); ``LORAKIT_FUZZ_EXAMPLES=N`` scales it,
and ``benchmarks/reliability_fuzz.py`` runs the big campaign and prints the figures.

Regression cases pin every crash the fuzz found (each was fixed in lorakit, see RELIABILITY.md).
"""

from __future__ import annotations

import json
import os
import struct
import warnings
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from safetensors.torch import save as safetensors_save

from benchmarks.reliability.fuzzkit import (
    ALLOWED_ERRORS,
    Harness,
    cases,
    default_factories,
    entries_for,
    mutated_config,
    rss_mb,
    safetensors_bytes,
)
from lorakit.io import AdapterConfig

EXAMPLES = int(os.environ.get("LORAKIT_FUZZ_EXAMPLES", "100"))
# A case may take this long before it counts as a hang (generous: 2 CPU cores are shared).
CASE_SECONDS = 10.0
# RSS growth allowed over a whole fuzz run, in MiB (an r=10**6 config used to add ~850 MiB).
RSS_GROWTH_MB = 150.0
FUZZ_SETTINGS = settings(max_examples=EXAMPLES, deadline=None, database=None, derandomize=True,
                         suppress_health_check=list(HealthCheck))


@pytest.fixture(scope="module")
def harness() -> Iterator[Harness]:
    h = Harness(default_factories(), case_seconds=CASE_SECONDS)
    yield h
    h.close()


def test_fuzz_read_and_load(harness: Harness) -> None:
    outcomes: Counter[str] = Counter()

    @FUZZ_SETTINGS
    @given(st.data())
    def one_case(data: st.DataObject) -> None:
        base, config, weights = data.draw(cases(harness))
        outcomes[harness.run(base, config, weights).status] += 1  # raises Crash / Hang

    before = rss_mb()
    one_case()
    growth = rss_mb() - before
    assert sum(outcomes.values()) >= EXAMPLES * 0.9
    assert outcomes["refused"] and outcomes["ok"], outcomes  # both paths were exercised
    assert growth < RSS_GROWTH_MB, f"RSS grew by {growth:.0f} MiB over {sum(outcomes.values())} cases"


def test_fuzz_the_servers_load_path(harness: Harness) -> None:
    """The same cases through ``AdapterBank.load`` (the server validates with its own ``prepare``)."""
    for name, base in harness.bases.items():  # the valid adapters load through the bank
        assert harness.run_bank(name, json.dumps(base.config).encode(), base.weights).status == "ok", name
    outcomes: Counter[str] = Counter()

    @settings(max_examples=max(EXAMPLES // 3, 10), deadline=None, database=None, derandomize=True,
              suppress_health_check=list(HealthCheck))
    @given(st.data())
    def one_case(data: st.DataObject) -> None:
        base, config, weights = data.draw(cases(harness))
        outcomes[harness.run_bank(base, config, weights).status] += 1

    one_case()
    assert outcomes["refused"] and sum(outcomes.values()) >= max(EXAMPLES // 3, 10) * 0.9, outcomes


def test_fuzz_config_from_json(harness: Harness) -> None:
    configs = [b.config for b in harness.bases.values()]

    @settings(max_examples=EXAMPLES * 2, deadline=None, database=None, derandomize=True,
              suppress_health_check=list(HealthCheck))
    @given(st.sampled_from(configs).flatmap(mutated_config))
    def one_config(data: object) -> None:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                config = AdapterConfig.from_json(data, "adapter_config.json")
                config.to_spec()
        except ALLOWED_ERRORS as exc:
            assert str(exc).strip(), f"{type(exc).__name__} without a message"

    one_config()


# --- Hand-made safetensors files: each must be refused as "not a readable safetensors file". ---------

_A = "base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight"


def _hand(header: object, data: bytes = b"", header_len: int | None = None) -> bytes:
    return safetensors_bytes(header, data, header_len)


_good_header, _good_size = entries_for({_A: ("F32", [4, 32])})
BAD_FILES = {
    "empty file": b"",
    "7 bytes (shorter than the length field)": b"\x10\x00\x00\x00\x00\x00\x00",
    "declared header length 2**64-1": _hand(_good_header, bytes(_good_size), 2**64 - 1),
    "declared header length 2**63": _hand(_good_header, bytes(_good_size), 2**63),
    "declared header length one too long": _hand(_good_header, bytes(_good_size), len(json.dumps(_good_header)) + 1),
    "declared header length one too short": _hand(_good_header, bytes(_good_size), len(json.dumps(_good_header)) - 1),
    "data truncated by one byte": _hand(_good_header, bytes(_good_size - 1)),
    "overlapping offsets": _hand({"a": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]},
                                  "b": {"dtype": "F32", "shape": [4], "data_offsets": [8, 24]}}, bytes(24)),
    "same offsets twice": _hand({"a": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]},
                                 "b": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}}, bytes(16)),
    "reversed offsets": _hand({"a": {"dtype": "F32", "shape": [0], "data_offsets": [16, 0]}}, bytes(16)),
    "offsets past the end": _hand({"a": {"dtype": "F32", "shape": [4], "data_offsets": [0, 2**62]}}, bytes(16)),
    "huge shape (2**40 x 2**40)": _hand({"a": {"dtype": "F32", "shape": [2**40, 2**40], "data_offsets": [0, 16]}},
                                        bytes(16)),
    "shape 2**64-1": _hand({"a": {"dtype": "U8", "shape": [2**64 - 1], "data_offsets": [0, 16]}}, bytes(16)),
    "negative shape": _hand({"a": {"dtype": "F32", "shape": [-4], "data_offsets": [0, 16]}}, bytes(16)),
    "shape disagrees with the byte range": _hand({"a": {"dtype": "F32", "shape": [5], "data_offsets": [0, 16]}},
                                                 bytes(16)),
    "unknown dtype": _hand({"a": {"dtype": "F128", "shape": [1], "data_offsets": [0, 16]}}, bytes(16)),
    "dtype not a string": _hand({"a": {"dtype": 4, "shape": [4], "data_offsets": [0, 16]}}, bytes(16)),
    "header is a JSON list": _hand([1, 2, 3]),
    "header is not JSON": _hand(b"{not json", b""),
    "header is not UTF-8": _hand(b'{"a\xff": 1}', b""),
    "metadata values not strings": _hand({"__metadata__": {"format": 1}}),
    "missing data_offsets": _hand({"a": {"dtype": "F32", "shape": [4]}}, bytes(16)),
}


@pytest.mark.parametrize("name", list(BAD_FILES))
def test_hand_made_safetensors_is_refused(harness: Harness, name: str) -> None:
    base = harness.bases["llama"]
    outcome = harness.run("llama", json.dumps(base.config).encode(), BAD_FILES[name])
    assert outcome.status == "refused" and outcome.error == "LorakitError"
    assert "not a readable safetensors file" in outcome.message, outcome.message


# --- Regression cases: each escaped as an untyped exception (or allocated unbounded memory) before. ---

def _cfg(base: dict, **changes: object) -> bytes:
    return json.dumps({**base, **changes}).encode()


def _llama_weights(harness: Harness, dtype: torch.dtype | None = None, nan: bool = False) -> bytes:
    tensors = {k: v.clone() for k, v in harness.bases["llama"].tensors.items()}
    if nan:
        tensors[_A].view(-1)[0] = float("nan")
    if dtype is not None:
        tensors = {k: v.to(dtype) for k, v in tensors.items()}
    return safetensors_save(tensors)


REGRESSIONS = {
    # name: (base, config changes or raw bytes, weights or None for the valid file, expected message part)
    "JSON nested 100,000 deep (was RecursionError)": ("llama", b"[" * 100_000, None, "nested too deeply"),
    "rank_pattern value Infinity (was OverflowError)": ("llama", {"rank_pattern": {"q_proj": float("inf")}}, None,
                                                        "rank_pattern must be"),
    "alpha_pattern value Infinity (was accepted: infinite scaling)": (
        "llama", {"alpha_pattern": {"q_proj": float("inf")}}, None, "alpha_pattern must be"),
    "target_modules regex '((' (was re.error)": ("llama", {"target_modules": "(("}, None, "not a valid regex"),
    "rank_pattern key '((' (was re.error)": ("llama", {"rank_pattern": {"((": 2}}, None, "not a valid regex"),
    "modules_to_save 're:((' (was re.error)": ("llama", {"modules_to_save": ["re:(("]}, None, "not a valid regex"),
    "lorakit.slices a list (was AttributeError)": ("gpt2", {"lorakit": {"slices": []}}, None, "lorakit.slices must"),
    "lorakit.slices without alpha (was KeyError)": (
        "gpt2", {"lorakit": {"slices": {"transformer.h.0.attn.c_attn": {"n": 3, "selected": [0, 2], "r": 2}}}},
        None, "lorakit.slices["),
    "lorakit.slices n=0 (was ZeroDivisionError)": (
        "gpt2", {"lorakit": {"slices": {"transformer.h.0.attn.c_attn": {"n": 0, "selected": [0], "r": 2,
                                                                        "alpha": 4}}}}, None, "lorakit.slices["),
    "lorakit.slices r=0 (was ZeroDivisionError)": (
        "gpt2", {"lorakit": {"slices": {"transformer.h.0.attn.c_attn": {"n": 3, "selected": [0], "r": 0,
                                                                        "alpha": 4}}}}, None, "lorakit.slices["),
    "r=10**12 (was RuntimeError from the allocator; r=10**6 allocated ~1 GB)": (
        "llama", {"r": 10**12}, None, "rank above the layer's limit"),
    "float8_e4m3 tensor with a NaN (was NotImplementedError)": ("llama", {}, "f8-nan", "non-finite"),
}


@pytest.mark.parametrize("name", list(REGRESSIONS))
def test_regression(harness: Harness, name: str) -> None:
    base_name, config, weights, expected = REGRESSIONS[name]
    base = harness.bases[base_name]
    config_bytes = config if isinstance(config, bytes) else _cfg(base.config, **config)
    weight_bytes = _llama_weights(harness, torch.float8_e4m3fn, nan=True) if weights == "f8-nan" else base.weights
    before = rss_mb()
    outcome = harness.run(base_name, config_bytes, weight_bytes)
    assert outcome.status == "refused" and expected in outcome.message, outcome
    assert rss_mb() - before < 100


def test_float8_adapter_loads(harness: Harness) -> None:
    """An adapter stored in float8 is valid input (it used to crash the finiteness check)."""
    base = harness.bases["llama"]
    assert harness.run("llama", json.dumps(base.config).encode(), _llama_weights(harness, torch.float8_e4m3fn)).status == "ok"


def test_header_length_field_is_little_endian_u64() -> None:
    """The hand-made files follow the format: our builder and safetensors agree on a valid file."""
    from safetensors.torch import load

    header, size = entries_for({"x": ("F32", [2])})
    data = struct.pack("<2f", 1.5, -2.0)
    assert size == len(data)
    assert load(safetensors_bytes(header, data))["x"].tolist() == [1.5, -2.0]


def test_pathological_folders(tmp_path: Path) -> None:
    """Folder-level damage: files that are folders, dangling symlinks, no folder at all."""
    from lorakit.io import read_adapter

    def refused(folder: Path) -> str:
        with pytest.raises(ValueError) as info:
            read_adapter(folder)
        return str(info.value)

    assert "not found" in refused(tmp_path / "nothing")
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "adapter_config.json").mkdir()
    (tmp_path / "a" / "adapter_model.safetensors").write_bytes(b"")
    assert "no adapter_config.json" in refused(tmp_path / "a")
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "adapter_config.json").write_text("{}")
    (tmp_path / "b" / "adapter_model.safetensors").symlink_to(tmp_path / "dangling")
    assert "no adapter_model.safetensors" in refused(tmp_path / "b")
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "adapter_config.json").symlink_to(tmp_path / "c" / "adapter_config.json.loop")
    (tmp_path / "c" / "adapter_config.json.loop").symlink_to(tmp_path / "c" / "adapter_config.json")
    (tmp_path / "c" / "adapter_model.safetensors").write_bytes(b"")
    assert refused(tmp_path / "c")
    os.mkfifo(tmp_path / "d")  # a FIFO instead of a folder must not block
    assert "not found" in refused(tmp_path / "d")

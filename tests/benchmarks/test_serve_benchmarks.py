"""The serving benchmarks' results files record their run (``machine``, and the provenance line under the title).

Each test calls the function that writes a script's results with made-up figures and a temporary
folder: no model, no server.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from benchmarks import serve_agreement, serve_decode, serve_load, serve_mixed


def test_serve_decode_results_record_the_run_and_the_medians(tmp_path: Path, provenance) -> None:
    args = argparse.Namespace(model="smollm2", batch=8, tokens=32, threads=2, reps=3, scenarios=["base", "1"],
                              out=tmp_path)
    runs = {"after": [{"base": 1.0, "1": 4.0}, {"base": 3.0, "1": 5.0}, {"base": 2.0, "1": 6.0}]}
    serve_decode.write(args, [("after", "src", "fp32")], runs, ["--reps", "3"])
    data = provenance(tmp_path / "serve_decode.json", tmp_path / "serve_decode.md",
                      "python -m benchmarks.serve_decode --reps 3")
    assert data["median"] == {"after": {"base": 2.0, "1": 5.0}} and data["runs"] == runs
    assert "| after | src:fp32 | 2.00 | 5.00 |" in (tmp_path / "serve_decode.md").read_text()


def test_serve_load_results_keep_the_stem_and_the_figures(tmp_path: Path, provenance) -> None:
    res = {"model": "smollm2", "clients": 2, "adapters": 2, "max_loaded": 1, "requests_per_client": 1,
           "max_tokens": 4, "threads": 1, "requests": 2, "ok": 2, "errors": 0, "error_statuses": [], "wall_s": 1.5,
           "requests_per_s": 1.33, "tokens_per_s": 5.0, "latency_p50_s": 0.5, "latency_p99_s": 0.9,
           "latency_mean_s": 0.6, "completion_tokens": 8, "adapter_evictions": 3, "load_average": (1.0, 1.0, 1.0)}
    serve_load.write(res, tmp_path / "serve_load_evict", ["--max-loaded", "1"])
    data = provenance(tmp_path / "serve_load_evict.json", tmp_path / "serve_load_evict.md",
                      "python -m benchmarks.serve_load --max-loaded 1")
    assert {k: data[k] for k in ("adapter_evictions", "wall_s", "clients")} == {"adapter_evictions": 3,
                                                                               "wall_s": 1.5, "clients": 2}


def _mixed_res() -> dict:
    setup = {"wall": 2.0, "cpu": 1.5, "wall_vs_b": 1.0, "cpu_vs_b": 1.0}
    scale = {"wall_s": 1.0, "cpu_s": 1.0, "ms_per_token": 4.0, "cpu_ms_per_token": 4.0, "decode_step_ms": 30.0}
    res = {"model": "smollm2", "prompts": 8, "prompt_tokens": 64, "new_tokens": 32, "reps": 3, "threads": 1,
           "torch": "2.x", "arch": "x86_64", "cpus": 2, "load_average_start": [1.0], "load_average_end": [2.0],
           **{k: setup for k in ("a", "a_hf", "b", "c", "d")},
           "decode_step_ms_batch1": 20.0, "decode_step_ms_batch8": 40.0, "rows_lorakit_equals_peft_mixed": 8,
           "rows_lorakit_equals_peft_switching": 8, "rows_differ_from_base": 7, "adapter_read_ms_median": 1.0,
           "adapter_ready_ms": {"median": 2.0, "p90": 3.0, "max": 4.0, "cpu_median": 2.0},
           "scaling": {"0": scale, "1": scale}, "scale_rows": 32, "scale_prompt_tokens": 16, "scale_new_tokens": 8}
    for clock in ("wall", "cpu"):
        res.update({f"ratio_b_over_a_{clock}": 1.05, f"ratio_c_over_b_{clock}": 1.2, f"ratio_d_over_b_{clock}": 5.0})
    return res


def test_serve_mixed_results_record_the_run(tmp_path: Path, provenance) -> None:
    serve_mixed.write(_mixed_res(), tmp_path / "serve_mixed", ["--reps", "3"])
    data = provenance(tmp_path / "serve_mixed.json", tmp_path / "serve_mixed.md",
                      "python -m benchmarks.serve_mixed --reps 3")
    assert data["rows_differ_from_base"] == 7 and data["arch"] == "x86_64"


def test_serve_agreement_results_record_the_run_and_count_equal_texts(tmp_path: Path, provenance) -> None:
    args = argparse.Namespace(model="smollm2", dtypes=["bf16"], max_tokens=32, out=tmp_path)
    runs = {"fp32": {"base": ["a", "b"], "e2e": ["c", "d"]}, "bf16": {"base": ["a", "x"], "e2e": ["c", "d"]}}
    serve_agreement.write(args, ["mr1", "mr2"], runs, ["--dtypes", "bf16"])
    data = provenance(tmp_path / "serve_agreement.json", tmp_path / "serve_agreement.md",
                      "python -m benchmarks.serve_agreement --dtypes bf16")
    assert [r["same_as_fp32"] for r in data["rows"]] == ["1/2", "2/2"] and data["texts"] == runs


def test_adapters_are_made_for_a_served_base_with_prepacked_weights(tmp_path: Path) -> None:
    # serve_load makes its adapters for the server's own base, whose Linear weights are prepacked for
    # oneDNN (opaque tensors: deep-copying that model raised NotImplementedError).
    import torch

    from lorakit.io import read_adapter
    from lorakit.models.precision import freeze_base_precision
    from tests.conftest import tiny_llama

    base = tiny_llama()
    freeze_base_precision(base, "fp32", torch.device("cpu"), pack_rows=8)
    paths = serve_mixed.make_adapters(base, tmp_path, 2)
    first, second = (read_adapter(p).tensors for p in paths)
    assert first.keys() == second.keys() and any("lora_B" in k for k in first)
    assert any(not torch.equal(first[k], second[k]) for k in first)  # seeded differently

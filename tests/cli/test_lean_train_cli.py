"""``lorakit train --base-dtype/--checkpointing`` and ``lorakit merge --dtype`` on tiny local folders."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch

from benchmarks.tiny_models import make_generate_data, make_tiny_llama_dir
from lorakit.cli.main import main

FAST = ["--batch-size", "8", "--max-length", "24", "--no-progress", "--threads", "1", "--eval-every", "0",
        "--max-new-tokens", "4", "--eval-limit", "4"]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("lean")
    return {"llama": make_tiny_llama_dir(root / "llama"), "gen": make_generate_data(root / "gen")}


def test_adapter_trained_on_an_nf4_base_merges_into_the_fp32_base(tiny, tmp_path: Path, capsys) -> None:
    run = tmp_path / "run"
    code = main(["train", str(tiny["llama"]), str(tiny["gen"]), "--out", str(run), "--max-steps", "3",
                 "--lr", "1e-2", "--base-dtype", "nf4", "--checkpointing", "--dropout", "0", *FAST])
    assert code == 0, capsys.readouterr().err
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["base_dtype"] == "nf4" and metrics["checkpointing"] is True
    assert metrics["quantized_linears"] == 14 and metrics["compute_dtype"] in ("bfloat16", "float32")
    phases = metrics["peak_memory_phases_mb"]
    assert set(phases) == {"load", "base_eval", "train", "final_eval"}
    assert metrics["peak_memory_mb"] == max(phases.values()) > 0
    assert metrics["tokens_per_second"] > 0
    from safetensors.torch import load_file

    tensors = load_file(run / "adapter" / "adapter_model.safetensors")
    assert tensors and all(t.dtype == torch.float32 for t in tensors.values())
    assert any(float(t.abs().sum()) > 0 for k, t in tensors.items() if "lora_B" in k)  # it trained
    capsys.readouterr()
    for dtype, bound in (("fp32", 1e-4), ("bf16", 5e-2)):
        merged = tmp_path / f"merged-{dtype}"
        assert main(["merge", str(tiny["llama"]), "--adapter", str(run / "adapter"), "--out", str(merged),
                     "--dtype", dtype]) == 0
        out = capsys.readouterr().out
        assert f"({dtype})" in out
        relative = float(out.split("relative ")[1].split(")")[0])
        assert relative < bound, out
        from transformers import AutoModelForCausalLM

        model = AutoModelForCausalLM.from_pretrained(merged)
        assert model.model.layers[0].self_attn.q_proj.weight.dtype == {"fp32": torch.float32,
                                                                        "bf16": torch.bfloat16}[dtype]


def test_a_dtype_the_machine_cannot_run_is_one_error_line(tiny, tmp_path: Path, capsys, monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "bitsandbytes", None)  # as on a machine without bitsandbytes
    code = main(["train", str(tiny["llama"]), str(tiny["gen"]), "--out", str(tmp_path / "x"),
                 "--base-dtype", "int8", *FAST])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and err.startswith("error: base dtype int8 quantizes with bitsandbytes")
    if not torch.cuda.is_available():
        code = main(["train", str(tiny["llama"]), str(tiny["gen"]), "--out", str(tmp_path / "y"),
                     "--base-dtype", "bf16", "--device", "cuda", *FAST])
        err = capsys.readouterr().err
        assert code == 2 and err.count("\n") == 1 and "no CUDA device" in err
    with pytest.raises(SystemExit) as exit_info:
        main(["train", str(tiny["llama"]), str(tiny["gen"]), "--base-dtype", "fp8"])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and err.count("\n") == 1 and "'fp8'" in err

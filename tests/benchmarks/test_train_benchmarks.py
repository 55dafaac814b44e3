"""The training benchmarks run end to end at tiny settings (one fresh worker process per point)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks import llama_sizes, train_many, train_speed

REPO = Path(__file__).resolve().parents[2]


def test_scaling_series_smoke(tmp_path: Path) -> None:
    cmd = [sys.executable, "-m", "benchmarks.train_scaling", "--sizes", "tiny", "--methods",
           "lorakit-bf16-ckpt", "lorakit-nf4-ckpt", "full-fp32", "--reps", "1", "--steps", "1", "--warmup", "0",
           "--batch", "2", "--length", "8", "--threads", "1", "--out", str(tmp_path), "--name", "smoke",
           "--cache", str(tmp_path / "cache")]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=REPO)
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads((tmp_path / "smoke.json").read_text())
    rows = {r["method"]: r for r in result["rows"]}
    assert set(rows) == {"lorakit-bf16-ckpt", "lorakit-nf4-ckpt", "full-fp32"}
    for row in rows.values():
        assert row["tokens_per_s"] > 0 and row["peak_memory_mb"] > 100, row
        assert row["peak_memory_mb_min"] <= row["peak_memory_mb"] <= row["peak_memory_mb_max"]
    for run in result["runs"]:  # the run's own peak: the largest of its phases'
        assert set(run["peak_memory_phases_mb"]) == {"load", "train"}
        assert run["peak_memory_mb"] == max(run["peak_memory_phases_mb"].values())
    assert rows["full-fp32"]["trainable_params"] == rows["full-fp32"]["params"]
    assert rows["lorakit-nf4-ckpt"]["trainable_params"] < rows["full-fp32"]["trainable_params"] / 10
    assert result["machine"]["command"].startswith("python -m benchmarks.train_scaling --sizes tiny")
    # The model was saved once as a checkpoint and loaded from that folder by every run.
    assert Path(result["checkpoints"]["tiny"]).parent == tmp_path / "cache"
    assert (tmp_path / "smoke.md").is_file() and (tmp_path / "smoke.png").stat().st_size > 1000


def test_a_size_is_saved_once_and_then_reused(tmp_path: Path) -> None:
    folder = llama_sizes.checkpoint("tiny", tmp_path)
    assert (folder / "model.safetensors").is_file() and (folder / "tokenizer.json").is_file()
    stamp = (folder / "model.safetensors").stat().st_mtime_ns
    assert llama_sizes.checkpoint("tiny", tmp_path) == folder
    assert (folder / "model.safetensors").stat().st_mtime_ns == stamp  # not rebuilt
    assert not list(tmp_path.glob("*.tmp-*"))
    with pytest.raises(ValueError, match="unknown size"):
        llama_sizes.random_llama("llama-7b", None)


@pytest.mark.parametrize(("method", "dtype"), [("peft-bf16", "torch.bfloat16"), ("peft-autocast", "torch.float32"),
                                               ("full-fp32", "torch.float32")])
def test_peft_bf16_loads_the_base_in_bf16_and_baselines_train_without_kv_cache(tmp_path, monkeypatch, method,
                                                                                dtype) -> None:
    pytest.importorskip("peft")
    seen = {}
    real = train_speed.build_model

    def spy(model_name, task, dtype, quantize_peft=False, cache=None):
        model = real(model_name, task, dtype, quantize_peft, cache)
        seen["model"] = model
        return model

    monkeypatch.setattr(train_speed, "build_model", spy)
    result = train_speed.worker("tiny", method, 0, 1, 1, 2, 8, cache=tmp_path)
    base = seen["model"].model.embed_tokens.weight
    assert str(base.dtype) == dtype and seen["model"].config.use_cache is False
    assert result["tokens_per_s"] > 0 and result["peak_memory_mb"] == max(result["peak_memory_phases_mb"].values())


def test_train_many_reads_each_runs_own_peak_and_shows_the_spread(tmp_path: Path) -> None:
    (tmp_path / "metrics.json").write_text(json.dumps({"peak_memory_mb": 812.5, "peak_memory_phases_mb": {}}))
    assert train_many.run_peak_mb(tmp_path / "metrics.json") == 812.5
    (tmp_path / "bad.json").write_text("{}")
    with pytest.raises(RuntimeError, match="no peak_memory_mb"):
        train_many.run_peak_mb(tmp_path / "bad.json")
    cell = {"wall_s": 2.0, "peak_mb": 500.0, "peak_mb_min": 480.0, "peak_mb_max": 530.0, "reps": 3}
    result = {"suite": "minilm-glue", "steps": 2, "batch_size": 8, "threads": 1, "base_dtype": "fp32", "reps": 3,
              "median": {"1": {"sequential": cell}, "4": {"train-many": {**cell, "peak_mb": 600.0},
                                                          "sequential": {**cell, "wall_s": 8.0}}}}
    md = train_many.table(result)
    assert "500 (480–530)" in md and "| 0.25 | 1.20 |" in md and "not settled" not in md
    assert "not settled" in train_many.table({**result, "reps": 1})


def test_spawned_worker_runs_as_a_module_from_the_repository(monkeypatch) -> None:
    calls = {}

    def fake_run(cmd, **kwargs):
        calls.update(cmd=cmd, **kwargs)
        return subprocess.CompletedProcess(cmd, 0, stdout='{"model": "tiny", "method": "full-fp32"}\n', stderr="")

    monkeypatch.setattr(train_speed.subprocess, "run", fake_run)
    args = train_speed.argparse.Namespace(warmup=0, steps=1, threads=1, targets="qv", cache=Path("c"), timeout=5)
    assert train_speed.spawn("tiny", "full-fp32", args, 2, 8, module="benchmarks.train_scaling")["model"] == "tiny"
    assert calls["cmd"][1:4] == ["-m", "benchmarks.train_scaling", "--worker"] and calls["cwd"] == REPO
    assert "PYTHONPATH" not in calls["env"] or calls["env"]["PYTHONPATH"] == os.environ.get("PYTHONPATH")

"""The training benchmarks run end to end at tiny settings (one fresh worker process per point)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_scaling_series_smoke(tmp_path: Path) -> None:
    cmd = [sys.executable, str(REPO / "benchmarks" / "train_scaling.py"), "--sizes", "tiny", "--methods",
           "lorakit-bf16-ckpt", "lorakit-nf4-ckpt", "full-fp32", "--reps", "1", "--steps", "1", "--warmup", "0",
           "--batch", "2", "--length", "8", "--threads", "1", "--out", str(tmp_path), "--name", "smoke"]
    env_path = str(REPO / "src")
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600,
                          env={**os.environ, "PYTHONPATH": env_path})
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads((tmp_path / "smoke.json").read_text())
    rows = {r["method"]: r for r in result["rows"]}
    assert set(rows) == {"lorakit-bf16-ckpt", "lorakit-nf4-ckpt", "full-fp32"}
    for row in rows.values():
        assert row["tokens_per_s"] > 0 and row["peak_rss_mb"] > 100, row
    assert rows["full-fp32"]["trainable_params"] == rows["full-fp32"]["params"]
    assert rows["lorakit-nf4-ckpt"]["trainable_params"] < rows["full-fp32"]["trainable_params"] / 10
    assert (tmp_path / "smoke.md").is_file() and (tmp_path / "smoke.png").stat().st_size > 1000

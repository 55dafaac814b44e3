"""Run `lorakit train` rows with caching: a row whose metrics.json exists is read, not re-run.

Each row is one command line, kept in the results so every figure traces back to the command that
made it. Interrupted rows continue from their checkpoint (``--resume``) on the next invocation, so a
long sweep can be stopped and restarted at will.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
RUNS = Path(os.environ.get("LORAKIT_REPRO_RUNS", REPO / "runs" / "reproduce"))


@dataclass(frozen=True)
class Row:
    """One training run of a table: a key (its folder under runs/reproduce) and its CLI arguments."""

    key: str
    args: tuple[str, ...]
    labels: dict[str, Any] = field(default_factory=dict)

    @property
    def out(self) -> Path:
        """The run's output folder."""
        return RUNS / self.key

    @property
    def command(self) -> str:
        """The command that reproduces this row."""
        return "lorakit train " + " ".join(self.args) + f" --out runs/reproduce/{self.key}"


def run_row(row: Row, timeout: float | None = None) -> dict[str, Any] | None:
    """Train (or resume) the row unless its metrics exist; return its metrics, None if it failed."""
    metrics_path = row.out / "metrics.json"
    if metrics_path.is_file():
        return json.loads(metrics_path.read_text())
    cmd = [sys.executable, "-m", "lorakit", "train", *row.args, "--out", str(row.out), "--no-progress"]
    if (row.out / "checkpoint").is_dir():
        cmd.append("--resume")
    print(f"[{time.strftime('%H:%M:%S')}] {row.command}", flush=True)
    start = time.perf_counter()
    try:
        proc = subprocess.run(cmd, timeout=timeout, capture_output=True, text=True)
    except subprocess.TimeoutExpired:
        print(f"  timed out after {timeout:.0f} s (resumable)", flush=True)
        return None
    if proc.returncode != 0 or not metrics_path.is_file():
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        print(f"  failed ({proc.returncode}): {' | '.join(tail)}", flush=True)
        return None
    print(f"  done in {time.perf_counter() - start:.0f} s", flush=True)
    return json.loads(metrics_path.read_text())


def mean_std(values: list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for one value)."""
    return statistics.mean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def main_metric(metrics: dict[str, Any]) -> float | None:
    """Accuracy for classification rows, BLEU for generation rows (in percent)."""
    test = metrics.get("test") or {}
    if "accuracy" in test:
        return 100.0 * test["accuracy"]
    return test.get("bleu")

"""Run `lorakit train` / `lorakit eval` rows with caching: a row whose result file exists is read, not re-run.

Each row is one command line, kept in the results so every figure traces back to the command that
made it. Interrupted rows continue from their checkpoint (``--resume``) on the next invocation, so a
long sweep can be stopped and restarted at will. A row being run holds a lock file (with its pid), so
several sweeps can share one machine, each taking the rows the others have not started.
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

from benchmarks.common import git_state

REPO = Path(__file__).resolve().parents[2]
RUNS = Path(os.environ.get("LORAKIT_REPRO_RUNS", REPO / "runs" / "reproduce"))
LOCK = ".sweep.lock"


@dataclass(frozen=True)
class Row:
    """One run of a table: a key (its folder under runs/reproduce) and its CLI arguments.

    ``verb`` is ``train`` (the run writes ``metrics.json``), ``eval`` (``lorakit eval`` writing
    ``eval.json``, for rows that train nothing, such as a zero-shot base model) or ``train-many``
    (``lorakit train-many JOBS`` writing ``train_many.json``; ``args`` is the jobs file).
    """

    key: str
    args: tuple[str, ...]
    labels: dict[str, Any] = field(default_factory=dict)
    verb: str = "train"

    @property
    def out(self) -> Path:
        """The run's output folder."""
        return RUNS / self.key

    @property
    def result_file(self) -> Path:
        """The file whose presence marks the row as finished."""
        return self.out / {"train": "metrics.json", "eval": "eval.json", "train-many": "train_many.json"}[self.verb]

    def cli(self, out: Path) -> list[str]:
        """The lorakit arguments with the output under ``out``."""
        if self.verb in ("train", "train-many"):
            return [self.verb, *self.args, "--out", str(out)]
        return ["eval", *self.args, "--json", str(out / "eval.json")]

    @property
    def command(self) -> str:
        """The command that reproduces this row (output under runs/reproduce/)."""
        shown = Path("runs/reproduce")  # the runs folder as a user's checkout names it (a jobs file lives there too)
        return "lorakit " + " ".join(a.replace(str(RUNS), str(shown)) for a in self.cli(shown / self.key))


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _take_lock(row: Row) -> bool:
    """Create the row's lock file; False if a live process holds it (a dead holder's lock is taken over)."""
    row.out.mkdir(parents=True, exist_ok=True)
    lock = row.out / LOCK
    for _ in range(2):
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            try:
                holder = int(lock.read_text().strip() or 0)
            except (OSError, ValueError):
                holder = 0
            if holder and _pid_alive(holder):
                return False
            lock.unlink(missing_ok=True)  # left by a killed sweep: the row's checkpoint is still good
            continue
        with os.fdopen(fd, "w") as f:
            f.write(str(os.getpid()))
        return True
    return False


def read_row(row: Row) -> dict[str, Any] | None:
    """The row's result if it has finished, else None (runs nothing)."""
    return json.loads(row.result_file.read_text()) if row.result_file.is_file() else None


def run_row(row: Row, timeout: float | None = None) -> dict[str, Any] | None:
    """Train / evaluate (or resume) the row unless its result exists; return it, None if not available.

    None means failed, timed out (resumable) or being run by another sweep right now.
    """
    if (done := read_row(row)) is not None:
        return done
    if not _take_lock(row):
        print(f"[{time.strftime('%H:%M:%S')}] skip (another sweep is running it): {row.key}", flush=True)
        return None
    try:
        cmd = [sys.executable, "-m", "lorakit", *row.cli(row.out), "--no-progress"]
        if row.verb == "train" and (row.out / "checkpoint").is_dir():
            cmd.append("--resume")
        print(f"[{time.strftime('%H:%M:%S')}] {row.command}", flush=True)
        # The commit of the code this row runs (lorakit is an editable install): a sweep of many rows
        # may span commits, and the results file's own block names only the sweep's start.
        state = git_state()
        start = time.perf_counter()
        try:
            proc = subprocess.run(cmd, timeout=timeout, capture_output=True, text=True)
        except subprocess.TimeoutExpired:
            print(f"  timed out after {timeout:.0f} s (resumable)", flush=True)
            return None
        (row.out / "sweep.log").write_text(proc.stdout + proc.stderr, encoding="utf-8")
        if proc.returncode != 0 or not row.result_file.is_file():
            tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
            print(f"  failed ({proc.returncode}): {' | '.join(tail)}", flush=True)
            return None
        wall = time.perf_counter() - start
        (row.out / "sweep.json").write_text(json.dumps({"process_wall_s": wall, "command": row.command,
                                                        **{f"lorakit_{k}": v for k, v in state.items()}}))
        print(f"  done in {wall:.0f} s", flush=True)
        return read_row(row)
    finally:
        (row.out / LOCK).unlink(missing_ok=True)


def row_commit(row: Row) -> str | None:
    """The lorakit commit the row's process ran (``+dirty`` with uncommitted changes), if recorded."""
    f = row.out / "sweep.json"
    info = json.loads(f.read_text()) if f.is_file() else {}
    if not info.get("lorakit_commit"):
        return None
    return info["lorakit_commit"][:12] + ("+dirty" if info.get("lorakit_dirty") else "")


def process_wall(row: Row) -> float | None:
    """Seconds the row's whole ``lorakit`` process took (start-up and loading included), if recorded."""
    f = row.out / "sweep.json"
    return json.loads(f.read_text())["process_wall_s"] if f.is_file() else None


def mean_std(values: list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for one value)."""
    return statistics.mean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def test_metrics(result: dict[str, Any]) -> dict[str, Any]:
    """The report's metrics of a row: ``test`` of a train row's metrics.json, ``metrics`` of an eval.json."""
    return result.get("test") or result.get("metrics") or {}


def main_metric(metrics: dict[str, Any]) -> float | None:
    """Accuracy for classification rows, BLEU for generation rows (in percent)."""
    test = test_metrics(metrics)
    if "accuracy" in test:
        return 100.0 * test["accuracy"]
    return test.get("bleu")


def saved_bytes(metrics: dict[str, Any]) -> int:
    """Bytes a training run saved: its adapter file (LoRA) or its whole model's weights (full, BitFit)."""
    return metrics.get("adapter_bytes") or metrics.get("model_bytes") or 0

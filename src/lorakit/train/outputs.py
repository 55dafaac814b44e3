"""What a run leaves in its output folder besides the adapter: metrics.json, loss.png, sizes, memory."""

from __future__ import annotations

import json
import os
import resource
import sys
import tempfile
from pathlib import Path
from typing import Any

import torch

METRICS_FILE = "metrics.json"
PLOT_FILE = "loss.png"


def peak_memory_mb(device: torch.device | None = None) -> float:
    """Peak memory of this process in MiB: CUDA allocations on a GPU, resident set size on CPU.

    ``ru_maxrss`` is in KiB on Linux and in bytes on macOS.
    """
    if device is not None and device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / 2**20 if sys.platform == "darwin" else rss / 2**10


def folder_bytes(path: str | Path) -> int:
    """Total size of the files in a folder (or of one file)."""
    path = Path(path)
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def write_json(path: str | Path, data: dict[str, Any]) -> Path:
    """Write JSON atomically (temp file + rename), so a reader never sees half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        json.dump(data, fh, indent=2, default=_default)
        fh.write("\n")
    os.chmod(tmp, 0o644)  # mkstemp creates 0600; results are meant to be read by others
    os.replace(tmp, path)
    return path


def _default(value: Any) -> Any:
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, tuple | set):
        return list(value)
    raise TypeError(f"not JSON-serialisable: {type(value).__name__}")


def read_log(path: str | Path) -> list[dict[str, Any]]:
    """The records of a log.jsonl (empty when missing)."""
    path = Path(path)
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def plot_loss(log_path: str | Path, out_path: str | Path, metric: str | None = None) -> Path | None:
    """Training loss (and evaluation ``metric``/loss on a second axis) against step, as a PNG."""
    records = read_log(log_path)
    train = [(r["step"], r["loss"]) for r in records if "loss" in r and not r.get("skipped")]
    evals = [(r["step"], r["eval"]) for r in records if "eval" in r]
    if not train and not evals:
        return None
    import matplotlib

    matplotlib.use("Agg")  # no display: write files only
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4), dpi=110)
    if train:
        ax.plot(*zip(*train, strict=True), label="train loss", color="tab:blue")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("loss")
    key = metric or "loss"
    points = [(s, e[key]) for s, e in evals if isinstance(e.get(key), int | float)]
    if points:
        target = ax if key == "loss" else ax.twinx()
        target.plot(*zip(*points, strict=True), "o-", color="tab:orange", label=f"eval {key}")
        target.set_ylabel(f"eval {key}" if key != "loss" else "loss")
        if target is not ax:
            target.legend(loc="upper right")
    if train or (points and key == "loss"):  # a run shorter than --log-every has no train-loss line
        ax.legend(loc="upper left" if points and key != "loss" else "best")
    ax.grid(alpha=0.3)
    ax.set_title("lorakit train")
    fig.tight_layout()
    fig.savefig(out_path)
    plt.close(fig)
    return Path(out_path)

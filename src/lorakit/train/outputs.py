"""What a run leaves in its output folder besides the adapter: metrics.json, loss.png, sizes, memory."""

from __future__ import annotations

import json
import resource
import sys
from pathlib import Path
from typing import Any

import torch

from lorakit.io.atomic import write_json_atomic

METRICS_FILE = "metrics.json"
PLOT_FILE = "loss.png"


def peak_memory_mb(device: torch.device | None = None) -> float:
    """Peak memory of this process in MiB: CUDA allocations on a GPU, peak resident set size on CPU.

    On Linux the peak RSS is ``VmHWM`` of ``/proc/self/status``: this process's own high-water mark.
    ``ru_maxrss`` is not used there because it survives ``exec`` (a process started from a big parent
    would report the parent's peak). Elsewhere ``ru_maxrss`` (KiB on Linux, bytes on macOS).
    """
    if device is not None and device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    hwm = _status_kib("VmHWM")
    if hwm is not None:
        return hwm / 2**10
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / 2**20 if sys.platform == "darwin" else rss / 2**10


def reset_peak_rss() -> bool:
    """Reset this process's peak RSS (VmHWM) to its current RSS; False where Linux does not allow it."""
    try:
        with open("/proc/self/clear_refs", "w", encoding="ascii") as fh:
            fh.write("5")  # "5": reset the peak resident set size (Linux >= 4.0)
        return True
    except OSError:
        return False


class PeakMemory:
    """Peak memory of each phase of a run (load, base evaluation, training, final evaluation).

    Starting a phase closes the previous one and resets the high-water mark (VmHWM on Linux, CUDA's
    peak statistics on a GPU), so each phase reports its own peak; :meth:`overall` is the largest, the
    whole process's peak. Where the mark cannot be reset, each phase reports the peak so far.
    """

    def __init__(self, device: torch.device | None = None) -> None:
        self.device = device
        self.peaks: dict[str, float] = {}
        self._phase: str | None = None

    def phase(self, name: str) -> None:
        """Close the current phase and start ``name``."""
        self.stop()
        if self.device is not None and self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
        else:
            reset_peak_rss()
        self._phase = name

    def stop(self) -> None:
        """Close the current phase (if any), recording its peak."""
        if self._phase is not None:
            self.peaks[self._phase] = max(self.peaks.get(self._phase, 0.0), peak_memory_mb(self.device))
            self._phase = None

    def overall(self) -> float:
        """The process's peak over all phases so far (MiB)."""
        self.stop()
        return max(self.peaks.values(), default=peak_memory_mb(self.device))


def _status_kib(key: str) -> int | None:
    """A ``kB`` field of ``/proc/self/status`` (Linux), or None where there is none."""
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def folder_bytes(path: str | Path) -> int:
    """Total size of the files in a folder (or of one file)."""
    path = Path(path)
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def write_json(path: str | Path, data: dict[str, Any]) -> Path:
    """Write JSON atomically (:func:`lorakit.io.atomic.write_json_atomic`): a reader never sees half a file."""
    return write_json_atomic(path, data, indent=2, default=_default)


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


def plot_loss(log_path: str | Path, out_path: str | Path, metric: str | None = None,
              label_smoothing: float = 0.0) -> Path | None:
    """Training loss (and evaluation ``metric``/loss on a second axis) against step, as a PNG.

    With ``label_smoothing`` ε the logged training loss is the smoothed objective, which lies above plain
    cross-entropy by at least ε·log(classes): its label says so, as the eval loss stays plain.
    """
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
        label = f"train loss (label smoothing {label_smoothing:g})" if label_smoothing else "train loss"
        ax.plot(*zip(*train, strict=True), label=label, color="tab:blue")
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

"""Small pieces of an optimizer step, used by :class:`lorakit.train.loop.Run` and its driver ``fit``.

SIGTERM as a flag the loop polls between steps, ``log.jsonl`` lines (and the trackers'), the log's
rewind on resume, gradient clipping and the early-stopping vote.
"""

from __future__ import annotations

import json
import signal
import threading
from pathlib import Path
from typing import Any

import torch
from torch import nn

from lorakit.io.atomic import write_atomic
from lorakit.train.checkpoint import TrainState
from lorakit.train.config import TrainConfig
from lorakit.train.distributed import DistContext

LOG_FILE = "log.jsonl"


class StopFlag:
    """Set by SIGTERM; the loop polls it between steps."""

    def __init__(self) -> None:
        self.set = False
        self._previous: Any = None

    def __enter__(self) -> StopFlag:
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGTERM, self._handle)
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        self.set = True

    def __exit__(self, *exc: object) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGTERM, self._previous)


def append_log(out_dir: Path | None, ctx: DistContext, record: dict[str, Any], tracker: Any = None) -> None:
    """Append ``record`` to ``OUT/log.jsonl`` (main process) and hand it to the tracker, if any."""
    if out_dir is not None and ctx.is_main:
        with open(out_dir / LOG_FILE, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(record) + "\n")
    if tracker is not None and ctx.is_main:  # TensorBoard / MLflow get the same records (trackers.py)
        tracker.log(record)


def truncate_log(path: Path, step: int) -> None:
    """Drop log lines past ``step`` (a killed run may have logged steps its checkpoint lacks)."""
    if path.is_file():
        lines = [ln for ln in path.read_text(encoding="utf-8").splitlines()
                 if ln.strip() and json.loads(ln).get("step", 0) <= step]
        write_atomic(path, "".join(ln + "\n" for ln in lines))  # a kill mid-write keeps the old log


def patience_spent(cfg: TrainConfig, state: TrainState, ctx: DistContext) -> bool:
    """Early stopping: the main process's count of evaluations without improvement, agreed by all."""
    patience = cfg.early_stopping_patience
    if not patience:
        return False
    flag = torch.tensor([float(ctx.is_main and state.evals_since_best >= patience)], device=ctx.device)
    return bool(ctx.all_reduce_(flag).item() > 0)


def clip_gradients(params: list[nn.Parameter], max_norm: float) -> float:
    """Clip in place (when ``max_norm`` > 0) and return the total gradient norm."""
    grads = [p for p in params if p.grad is not None]
    if not grads:
        return 0.0
    if max_norm > 0:
        return float(torch.nn.utils.clip_grad_norm_(grads, max_norm))
    return float(torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(p.grad) for p in grads])))

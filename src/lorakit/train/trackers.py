"""Experiment trackers: the loop's log records, also sent to TensorBoard and/or MLflow.

``log.jsonl`` (and ``loss.png`` drawn from it) stays the record of a run; a tracker receives the same
records as they are written (main process only) and turns them into scalars:

- train records → ``train/loss``, ``train/lr``, ``train/grad_norm``, ``train/tokens_per_s``,
  ``train/memory_mb``, ``train/epoch``;
- evaluation records → ``eval/<metric>`` for every numeric metric (accuracy, loss, bleu, …), and the
  final report → ``test/<metric>``.

TensorBoard writes event files to ``OUT/tensorboard`` (``tensorboard --logdir OUT/tensorboard``) through
``torch.utils.tensorboard``. MLflow logs to a local file store at ``OUT/mlruns``
(``mlflow ui --backend-store-uri OUT/mlruns``), experiment ``lorakit``, one run per training run, with
the training options as parameters; MLflow 3 keeps the file store in maintenance mode behind
``MLFLOW_ALLOW_FILE_STORE``, which is set here because a database backend would need SQLAlchemy and
a server-free local store is the point. Both libraries are imported only when asked for
(``pip install 'lorakit[track]'``).
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

from lorakit.errors import LorakitError

TB_DIR = "tensorboard"
MLFLOW_DIR = "mlruns"
MLFLOW_EXPERIMENT = "lorakit"
TRAIN_KEYS = ("loss", "lr", "grad_norm", "tokens_per_s", "memory_mb", "epoch")


class Tracker(Protocol):
    """Something that records scalars by step."""

    def log_scalars(self, step: int, scalars: Mapping[str, float]) -> None:
        """Record ``scalars`` (name → value) at optimizer step ``step``."""

    def close(self) -> None:
        """Flush and release files."""


def scalars_of(record: Mapping[str, Any]) -> dict[str, float]:
    """The tracker scalars of one ``log.jsonl`` record (skipped steps and non-numbers give none)."""
    for kind in ("eval", "test"):  # evaluations during training; the final report
        if kind in record:
            return {f"{kind}/{k}": float(v) for k, v in record[kind].items() if _number(v)}
    if record.get("skipped"):
        return {}
    return {f"train/{k}": float(record[k]) for k in TRAIN_KEYS if _number(record.get(k))}


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


class TensorBoardTracker:
    """Scalars into TensorBoard event files under ``out/tensorboard``."""

    def __init__(self, out: Path) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self.path = out / TB_DIR
        self.writer = SummaryWriter(log_dir=str(self.path))

    def log_scalars(self, step: int, scalars: Mapping[str, float]) -> None:
        """One ``add_scalar`` per value."""
        for name, value in scalars.items():
            self.writer.add_scalar(name, value, global_step=step)

    def close(self) -> None:
        """Flush the event file."""
        self.writer.close()


class MlflowTracker:
    """One MLflow run in a local file store under ``out/mlruns``, the options as parameters."""

    def __init__(self, out: Path, run_name: str, params: Mapping[str, Any]) -> None:
        os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")  # see the module docstring
        from mlflow.entities import Param
        from mlflow.tracking import MlflowClient

        self.path = out / MLFLOW_DIR
        self.client = MlflowClient(tracking_uri=self.path.resolve().as_uri())
        found = self.client.get_experiment_by_name(MLFLOW_EXPERIMENT)
        experiment = found.experiment_id if found else self.client.create_experiment(MLFLOW_EXPERIMENT)
        self.run_id = self.client.create_run(experiment, run_name=run_name).info.run_id
        shown = [Param(k, _param(v)[:6000]) for k, v in sorted(params.items()) if v is not None]
        self.client.log_batch(self.run_id, params=shown)

    def log_scalars(self, step: int, scalars: Mapping[str, float]) -> None:
        """All values of one step in one batch (MLflow names may hold ``/``)."""
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        self.client.log_batch(self.run_id, metrics=[Metric(k, v, now, step) for k, v in scalars.items()])

    def close(self) -> None:
        """Mark the run finished."""
        self.client.set_terminated(self.run_id)


def _param(value: Any) -> str:
    return " ".join(map(str, value)) if isinstance(value, list | tuple) else str(value)


class Trackers:
    """The trackers of one run; ``log`` takes ``log.jsonl`` records."""

    def __init__(self, trackers: Sequence[Tracker]) -> None:
        self.trackers = list(trackers)

    def log(self, record: Mapping[str, Any]) -> None:
        """Send one log record's scalars to every tracker."""
        scalars = scalars_of(record)
        if scalars:
            for tracker in self.trackers:
                tracker.log_scalars(int(record["step"]), scalars)

    def close(self) -> None:
        """Close every tracker."""
        for tracker in self.trackers:
            tracker.close()


def open_trackers(names: Sequence[str], out: Path, run_name: str, params: Mapping[str, Any]) -> Trackers | None:
    """The trackers named in ``--report-to`` (None for ``none``); unknown names raise."""
    opened: list[Tracker] = []
    for name in names:
        try:
            if name == "tensorboard":
                opened.append(TensorBoardTracker(out))
            elif name == "mlflow":
                opened.append(MlflowTracker(out, run_name, params))
            elif name != "none":
                raise LorakitError(f"unknown tracker {name!r}; choose tensorboard, mlflow or none")
        except ImportError as err:
            raise LorakitError(f"--report-to {name} needs {err.name}: pip install 'lorakit[track]'") from None
    return Trackers(opened) if opened else None

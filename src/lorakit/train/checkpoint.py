"""Resumable checkpoints without pickle: tensors in safetensors, everything else in JSON.

A checkpoint folder holds::

    trainable.safetensors   the trainable parameters by name (LoRA factors, saved heads; all weights for --full)
    optimizer.safetensors   AdamW's per-parameter state ("state.<index>.<key>") and torch RNG states ("rng.<rank>")
    state.json              loop counters and data position, optimizer hyper-parameters, python/numpy RNG

It is written to a temporary folder and renamed into place, so a crash (even SIGKILL) leaves either
the previous checkpoint or the new one, never half of one. Restoring all of it makes a resumed run
bitwise identical to an uninterrupted one on CPU.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from lorakit.errors import LorakitError
from lorakit.io.atomic import replacing, sync, sync_folder

CHECKPOINT = "checkpoint"
FORMAT_VERSION = 1


@dataclass
class TrainState:
    """The loop's counters: everything besides tensors that a resumed run needs."""

    step: int = 0  # optimizer steps taken
    examples_seen: int = 0  # position in the seeded stream of shuffled epochs (global, all ranks)
    tokens_seen: int = 0  # input tokens processed (all ranks), for throughput
    bad_in_a_row: int = 0  # consecutive non-finite losses
    skipped_steps: int = 0  # steps skipped because the loss was not finite, in total
    best_metric: float | None = None  # best evaluation metric so far
    best_step: int | None = None  # step at which it was reached
    evals_since_best: int = 0  # evaluations in a row that did not beat best_metric (early stopping)
    train_seconds: float = 0.0  # wall time spent in the loop before this (re)start
    last_eval: dict[str, float] = field(default_factory=dict)  # the latest evaluation
    best_eval: dict[str, float] = field(default_factory=dict)  # the evaluation of the best step


def trainable_tensors(model: nn.Module) -> dict[str, torch.Tensor]:
    """The parameters that train, by name (shared tensors once, under their first name)."""
    return {name: p for name, p in model.named_parameters() if p.requires_grad}


def _python_rng() -> list:
    version, internal, gauss = random.getstate()
    return [version, list(internal), gauss]


def _numpy_rng() -> dict[str, Any]:
    name, keys, pos, has_gauss, cached = np.random.get_state()
    return {"name": name, "keys": keys.tolist(), "pos": int(pos), "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached)}


def rng_tensors() -> dict[str, torch.Tensor]:
    """This process's torch RNG states (CPU, and each CUDA device) as uint8 tensors."""
    out = {"cpu": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            out[f"cuda{i}"] = s
    return out


def set_rng_tensors(states: dict[str, torch.Tensor]) -> None:
    torch.set_rng_state(states["cpu"])
    cuda = [states[k] for k in sorted(states) if k.startswith("cuda")]
    if cuda and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(cuda)


def _jsonable(value: Any) -> Any:
    if isinstance(value, tuple | list):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, torch.Tensor):
        raise TypeError("tensors belong in safetensors, not JSON")
    return value


def save_checkpoint(folder: str | Path, model: nn.Module, optimizer: torch.optim.Optimizer,
                    state: TrainState, rank_rngs: list[dict[str, torch.Tensor]] | None = None) -> Path:
    """Write a checkpoint atomically to ``folder`` (temp folder + rename).

    ``rank_rngs`` holds the torch RNG states of every process of a distributed run (rank order);
    by default this process's own.
    """
    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    _remove_leftovers(folder)
    tmp = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{folder.name}.tmp-"))
    try:
        weights = {k: v.detach().contiguous().cpu() for k, v in trainable_tensors(model).items()}
        save_file(weights, str(tmp / "trainable.safetensors"))
        opt = optimizer.state_dict()
        tensors: dict[str, torch.Tensor] = {}
        scalars: dict[str, dict[str, Any]] = {}
        for index, per_param in opt["state"].items():
            for key, value in per_param.items():
                if isinstance(value, torch.Tensor):
                    tensors[f"state.{index}.{key}"] = value.detach().contiguous().cpu()
                else:
                    scalars.setdefault(str(index), {})[key] = value
        for rank, states in enumerate(rank_rngs or [rng_tensors()]):
            for key, value in states.items():
                tensors[f"rng.{rank}.{key}"] = value.cpu()
        save_file(tensors, str(tmp / "optimizer.safetensors"))
        payload = {
            "format_version": FORMAT_VERSION,
            "state": asdict(state),
            "param_names": list(trainable_tensors(model)),
            "param_groups": _jsonable(opt["param_groups"]),
            "optimizer_scalars": scalars,
            "python_rng": _python_rng(),
            "numpy_rng": _numpy_rng(),
        }
        (tmp / "state.json").write_text(json.dumps(payload, indent=1))
        sync_folder(tmp)  # the rename below must not publish unflushed files
        _swap_into_place(tmp, folder)
        sync(folder.parent)  # nor may a power cut undo the rename itself
        _remove_leftovers(folder)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return folder


def _swap_into_place(tmp: Path, folder: Path) -> None:
    """Rename ``tmp`` to ``folder``; an existing one is moved aside first and removed after."""
    if folder.exists():
        old = folder.parent / f".{folder.name}.old-{os.getpid()}"
        shutil.rmtree(old, ignore_errors=True)
        os.replace(folder, old)
        os.replace(tmp, folder)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, folder)


_FILES = ("state.json", "trainable.safetensors", "optimizer.safetensors")


def _complete(folder: Path) -> bool:
    """Whether every file of a checkpoint is there (a folder half-removed by a killed cleanup is not)."""
    return all((folder / name).is_file() for name in _FILES)


def _remove_leftovers(folder: Path) -> None:
    """Remove what killed writes left: temporary folders always, moved-aside ones once ``folder`` is complete."""
    for tmp in folder.parent.glob(f".{folder.name}.tmp-*"):
        shutil.rmtree(tmp, ignore_errors=True)
    if _complete(folder):
        for old in folder.parent.glob(f".{folder.name}.old-*"):
            shutil.rmtree(old, ignore_errors=True)


def find_checkpoint(out_dir: str | Path) -> Path | None:
    """The checkpoint in ``out_dir``, or the moved-aside previous one if a crash hit between renames."""
    out_dir = Path(out_dir)
    main = out_dir / CHECKPOINT
    if _complete(main):
        return main
    aside = sorted(out_dir.glob(f".{CHECKPOINT}.old-*"), key=lambda p: p.stat().st_mtime)
    complete = [p for p in aside if _complete(p)]
    return complete[-1] if complete else None


def _read_tensors(path: Path) -> dict[str, torch.Tensor]:
    """A checkpoint's safetensors file; a damaged or missing one is a one-line ``ValueError``."""
    try:
        return load_file(str(path))
    except (SafetensorError, OSError) as exc:
        raise LorakitError(f"{path}: damaged checkpoint file ({exc}); delete the checkpoint or use another --out") from None


def load_checkpoint(folder: str | Path, model: nn.Module, optimizer: torch.optim.Optimizer,
                    rank: int = 0) -> TrainState:
    """Restore weights, optimizer and RNG states from ``folder``; returns the loop counters.

    The trainable parameter names must match exactly (a checkpoint of another model, targets or
    method is refused, naming the difference).
    """
    folder = Path(folder)
    meta = json.loads((folder / "state.json").read_text())
    if meta.get("format_version", 0) > FORMAT_VERSION:
        raise LorakitError(f"{folder}: written by a newer lorakit (format_version {meta['format_version']})")
    live = trainable_tensors(model)
    if list(live) != meta["param_names"]:
        missing = sorted(set(meta["param_names"]) - set(live))
        extra = sorted(set(live) - set(meta["param_names"]))
        raise LorakitError(f"{folder}: the checkpoint does not fit this run (trainable parameters differ: "
                           f"in checkpoint only {missing[:3]}, in model only {extra[:3]}); "
                           f"use the same options as the interrupted run, or another --out")
    weights = _read_tensors(folder / "trainable.safetensors")
    with torch.no_grad():
        for name, param in live.items():
            param.copy_(weights[name])
    tensors = _read_tensors(folder / "optimizer.safetensors")
    state: dict[int, dict[str, Any]] = {}
    for key, value in tensors.items():
        if key.startswith("state."):
            _, index, name = key.split(".", 2)
            state.setdefault(int(index), {})[name] = value
    for index, scalars in meta["optimizer_scalars"].items():
        state.setdefault(int(index), {}).update(scalars)
    groups = meta["param_groups"]
    for group in groups:
        if "betas" in group:
            group["betas"] = tuple(group["betas"])
    optimizer.load_state_dict({"state": state, "param_groups": groups})
    # Restore RNG last: nothing above may consume random numbers after it.
    version, internal, gauss = meta["python_rng"]
    random.setstate((version, tuple(internal), gauss))
    npr = meta["numpy_rng"]
    np.random.set_state((npr["name"], np.asarray(npr["keys"], dtype=np.uint32), npr["pos"],
                         npr["has_gauss"], npr["cached_gaussian"]))
    prefix = f"rng.{rank}."
    mine = {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}
    if not mine:
        raise LorakitError(f"{folder}: no RNG state for rank {rank} (was it written with fewer processes?)")
    set_rng_tensors(mine)
    return TrainState(**meta["state"])


def save_tensors_atomic(tensors: dict[str, torch.Tensor], path: str | Path) -> Path:
    """Write ``tensors`` to a safetensors file atomically (:func:`lorakit.io.atomic.replacing`)."""
    path = Path(path)
    with replacing(path) as tmp:
        save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, str(tmp))
    return path


def load_tensors_into(model: nn.Module, path: str | Path) -> None:
    """Copy a :func:`save_tensors_atomic` file of trainable tensors back into ``model``."""
    tensors = load_file(str(path))
    live = trainable_tensors(model)
    if set(tensors) != set(live):
        raise LorakitError(f"{path}: saved tensors do not match the model's trainable parameters")
    with torch.no_grad():
        for name, param in live.items():
            param.copy_(tensors[name])

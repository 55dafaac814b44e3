"""Data parallelism over ``torch.distributed``: gloo on CPU, nccl on GPU, started by ``torchrun``.

Every process holds the whole model and the same global batch order; process ``r`` of ``W`` takes
rows ``r, r+W, r+2W, …`` of each global batch (DistributedSampler's interleaving). The model is
wrapped in ``torch.nn.parallel.DistributedDataParallel``: gradients are all-reduced in buckets while
backward still runs, once per optimizer step (``no_sync`` on the other micro-batches). DDP *averages*
over processes, while the update must be the global sum of loss terms divided by their global count
(examples, or target tokens, which differ between processes); so each process divides its summed loss
by the global count and multiplies by ``W`` before backward, and DDP's average is then exactly that.

Several machines: the same command on each, ``torchrun --nnodes N --node-rank I --nproc-per-node P
--rdzv-backend c10d --rdzv-endpoint HOST:PORT -m lorakit train ...`` (see the README).
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist

from lorakit.errors import LorakitError


@dataclass(frozen=True)
class DistContext:
    """Where this process stands: its rank, the world size and the device it computes on."""

    rank: int = 0
    world_size: int = 1
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        """Only the main process writes files and shows progress."""
        return self.rank == 0

    @property
    def active(self) -> bool:
        """Whether a process group is in use."""
        return self.world_size > 1

    def all_reduce_(self, tensor: torch.Tensor) -> torch.Tensor:
        """Sum ``tensor`` over processes, in place (a no-op for one process)."""
        if self.active:
            dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
        return tensor

    def wrap(self, model: torch.nn.Module) -> torch.nn.Module:
        """``model`` in DistributedDataParallel when several processes train, else ``model`` itself.

        The wrapper shares the parameters: checkpoints and evaluation keep using ``model``.
        """
        if not self.active:
            return model
        from torch.nn.parallel import DistributedDataParallel

        device_ids = [self.device] if self.device.type == "cuda" else None
        # broadcast_buffers=False: buffers (position ids, rotary tables) are constants, identical everywhere.
        return DistributedDataParallel(model, device_ids=device_ids, broadcast_buffers=False)

    def sync_gradients(self, wrapped: torch.nn.Module, sync: bool) -> contextlib.AbstractContextManager:
        """A context for one micro-batch's forward and backward: DDP's ``no_sync()`` unless ``sync``."""
        if sync or not hasattr(wrapped, "no_sync"):
            return contextlib.nullcontext()
        return wrapped.no_sync()

    def gather_rng(self, states: dict[str, torch.Tensor]) -> list[dict[str, torch.Tensor]]:
        """Every process's RNG states, in rank order (for a checkpoint written by rank 0)."""
        if not self.active:
            return [states]
        out: list = [None] * self.world_size
        dist.all_gather_object(out, {k: v.cpu() for k, v in states.items()})
        return out

    def barrier(self) -> None:
        """Wait for every process."""
        if self.active:
            dist.barrier()

    def shard(self, rows: list[int]) -> list[int]:
        """This process's rows of a global batch."""
        return rows[self.rank::self.world_size]


def resolve_device(choice: str, local_rank: int = 0) -> torch.device:
    """``auto`` → cuda when available; ``cuda`` without a GPU is a user error."""
    if choice == "cuda" or (choice == "auto" and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            raise LorakitError("--device cuda, but no CUDA device is available (use --device cpu)")
        return torch.device("cuda", local_rank)
    return torch.device("cpu")


def init_distributed(device_choice: str = "auto") -> DistContext:
    """Join the process group described by torchrun's environment, or run as a single process."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistContext(0, 1, resolve_device(device_choice))
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    device = resolve_device(device_choice, local_rank)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        # Rank 0 evaluates while the others wait at a barrier: allow long evaluations (generation).
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo", timeout=timedelta(hours=3))
    return DistContext(rank, world, device)


def shutdown_distributed(ctx: DistContext) -> None:
    """Leave the process group (if this process joined one)."""
    if ctx.active and dist.is_initialized():
        dist.destroy_process_group()

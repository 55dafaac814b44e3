"""AdapterBank: many LoRA adapters resident over one frozen base model, each in a numbered slot.

::

    bank = AdapterBank(model, max_loaded=8)
    bank.load("sql", "adapters/sql")              # read, validate, copy into a free slot
    with bank.batch([bank.slot("sql"), -1]):      # row 0 uses "sql", row 1 the base model
        logits = model(input_ids).logits

Loading wraps each targeted module once in a :class:`~lorakit.serve.lora_batch.BankLinear` and
copies the adapter's A/B into that module's stack for its rank. Nothing is ever merged: the base
weights are never written, so switching adapters is choosing a slot per row.

Beyond ``max_loaded`` adapters, the least recently used one that no request holds is evicted.
An adapter in use is *pinned* (``acquire`` / ``release``) and never evicted under a running row.
All changes happen under ``bank.lock``, which the engine also holds while a batch runs.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from lorakit.core.inject import replace_submodule
from lorakit.core.registry import kind_for
from lorakit.errors import LorakitError
from lorakit.io import AdapterFile, read_adapter
from lorakit.serve.folder import check_name
from lorakit.serve.lora_batch import BankLinear, BatchContext, BatchRows, CopyBatch
from lorakit.serve.prepare import OriginalTree, PreparedAdapter, prepare


class BankFull(RuntimeError):
    """Every slot holds an adapter that a request is using (the HTTP layer answers 503)."""


@dataclass
class LoadedAdapter:
    """One resident adapter."""

    name: str
    slot: int
    path: Path
    rank: int
    modules: int
    task_type: str | None
    # Milliseconds from a read adapter file to a slot ready to serve (validation + copies).
    ready_ms: float
    # The same span in this thread's CPU time: what it costs when the machine is not shared.
    ready_cpu_ms: float = 0.0
    pins: int = 0
    loaded_at: float = field(default_factory=time.time)
    # Unique per load in this bank: what was computed with one load (cached prompt prefixes) is
    # never taken for another adapter loaded later under the same name.
    serial: int = 0


class AdapterBank:
    """Slots of adapters over one base model; rows of a batch pick a slot each (``-1``: none)."""

    def __init__(self, model: nn.Module, max_loaded: int = 8) -> None:
        if isinstance(max_loaded, bool) or not isinstance(max_loaded, int) or max_loaded < 1:
            raise LorakitError(f"max_loaded must be a positive integer, got {max_loaded!r}")
        self.model = model
        self.max_loaded = max_loaded
        self.ctx = BatchContext()
        self.lock = threading.RLock()
        self._tree = OriginalTree(model)
        self._wrapped: dict[str, BankLinear] = {}
        self._entries: OrderedDict[str, LoadedAdapter] = OrderedDict()  # least recently used first
        self._free = list(range(max_loaded))
        self.device = next(model.parameters()).device
        self.evictions = 0
        self._serials = itertools.count(1)

    # ---- queries ---------------------------------------------------------------------------
    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __len__(self) -> int:
        return len(self._entries)

    def names(self) -> list[str]:
        """Resident adapters, least recently used first."""
        with self.lock:
            return list(self._entries)

    def info(self, name: str) -> LoadedAdapter:
        """The resident adapter ``name`` (``KeyError`` if not loaded)."""
        return self._entries[name]

    def get(self, name: str) -> LoadedAdapter | None:
        """The resident adapter ``name``, or None (safe against a concurrent eviction)."""
        with self.lock:
            return self._entries.get(name)

    def snapshot(self) -> list[LoadedAdapter]:
        """Every resident adapter at one instant, least recently used first."""
        with self.lock:
            return list(self._entries.values())

    def slot(self, name: str | None) -> int:
        """The slot of a resident adapter (``None`` → ``-1``, the base model)."""
        return -1 if name is None else self._entries[name].slot

    # ---- loading ---------------------------------------------------------------------------
    def load(self, name: str, source: str | Path | AdapterFile) -> LoadedAdapter:
        """Read (if given a path), validate and make ``name`` resident; evicts the LRU if full.

        Raises ``ValueError`` for a bad adapter or a name already in use, ``BankFull`` when every
        slot is pinned by a running request.
        """
        check_name(name)
        adapter = source if isinstance(source, AdapterFile) else read_adapter(source)
        return self.load_file(name, adapter)

    def check(self, adapter: AdapterFile) -> None:
        """Raise ``ValueError`` if ``adapter`` cannot be served on this base (nothing is loaded)."""
        prepare(self._tree, adapter)

    @property
    def has_free_slot(self) -> bool:
        """Whether a load would not evict anything."""
        return bool(self._free)

    def load_file(self, name: str, adapter: AdapterFile, *, evict: bool = True) -> LoadedAdapter:
        """Make an already-read adapter resident (the part the "< 20 ms" budget covers).

        With ``evict=False``, raise ``BankFull`` rather than evict another adapter.
        """
        start, cpu_start = time.perf_counter(), time.thread_time()
        prepared = prepare(self._tree, adapter)  # every check runs before anything changes
        with self.lock:
            if name in self._entries:
                raise LorakitError(f"an adapter named {name!r} is already loaded; unload it first")
            if not evict and not self._free:
                raise BankFull(f"no free slot for {name!r} without evicting another adapter")
            slot = self._take_slot()
            try:
                # Loads may happen inside the engine's inference_mode step; the stacks must stay
                # ordinary tensors so that later loads can write into them.
                with torch.inference_mode(False), torch.no_grad():
                    self._install(slot, prepared)
            except BaseException:
                self._uninstall(slot)
                self._free.append(slot)
                raise
            self.ctx.version += 1
            entry = LoadedAdapter(name, slot, prepared.path, prepared.rank, len(prepared.updates),
                                  prepared.task_type, (time.perf_counter() - start) * 1000.0,
                                  (time.thread_time() - cpu_start) * 1000.0, serial=next(self._serials))
            self._entries[name] = entry
            return entry

    def unload(self, name: str) -> None:
        """Drop a resident adapter (``KeyError`` if not loaded, ``ValueError`` if a request holds it)."""
        with self.lock:
            entry = self._entries[name]
            if entry.pins:
                raise LorakitError(f"adapter {name!r} is in use by {entry.pins} request(s); try again later")
            self._drop(entry)

    def acquire(self, name: str) -> int:
        """Pin a resident adapter for one request and mark it recently used; returns its slot."""
        with self.lock:
            entry = self._entries[name]
            entry.pins += 1
            self._entries.move_to_end(name)
            return entry.slot

    def release(self, name: str) -> None:
        """Undo one :meth:`acquire` (a no-op if the adapter is gone)."""
        with self.lock:
            entry = self._entries.get(name)
            if entry is not None and entry.pins > 0:
                entry.pins -= 1

    # ---- running ---------------------------------------------------------------------------
    def rows(self, slots: list[int]) -> BatchRows:
        """A batch composition: one slot per row. Reuse it across decode steps to reuse plans."""
        for s in slots:
            if s >= self.max_loaded or s < -1:
                raise LorakitError(f"slot {s} out of range -1..{self.max_loaded - 1}")
        return BatchRows(slots, self.device)

    @contextmanager
    def batch(self, rows: BatchRows | list[int]) -> Iterator[BatchRows]:
        """Run the model inside this block with one adapter slot per batch row."""
        rows = rows if isinstance(rows, BatchRows) else self.rows(rows)
        with self.lock:
            previous, self.ctx.rows = self.ctx.rows, rows
            try:
                yield rows
            finally:
                self.ctx.rows = previous

    def close(self) -> None:
        """Unload everything and put the original modules back (the model is the plain base again)."""
        with self.lock:
            for entry in list(self._entries.values()):
                self._drop(entry)
            for path, module in self._wrapped.items():
                replace_submodule(self.model, path, self._tree.get_submodule(path))
                del module
            self._wrapped.clear()

    # ---- internals -------------------------------------------------------------------------
    def _take_slot(self) -> int:
        if self._free:
            return self._free.pop(0)
        for entry in self._entries.values():  # oldest use first
            if entry.pins == 0:
                self._drop(entry)
                self.evictions += 1
                return self._free.pop(0)
        raise BankFull(f"all {self.max_loaded} adapter slots are in use by running requests")

    def _drop(self, entry: LoadedAdapter) -> None:
        self._uninstall(entry.slot)
        del self._entries[entry.name]
        self._free.append(entry.slot)
        self._free.sort()
        self.ctx.version += 1

    def _install(self, slot: int, prepared: PreparedAdapter) -> None:
        copies = CopyBatch()
        for path, update in prepared.updates.items():
            self._module(path).add(slot, update.A, update.B, update.scaling, update.full, update.bias_delta, copies,
                                   column_scale=update.column_scale)
        copies.run()

    def _uninstall(self, slot: int) -> None:
        for module in self._wrapped.values():
            module.remove(slot)

    def _module(self, path: str) -> BankLinear:
        module = self._wrapped.get(path)
        if module is None:
            base = self._tree.get_submodule(path)
            module = BankLinear(base, kind_for(base), self.ctx, group_cap=min(4, self.max_loaded))
            replace_submodule(self.model, path, module)
            self._wrapped[path] = module
        return module


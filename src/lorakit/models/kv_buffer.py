"""A full-attention KV-cache layer that appends in place into a buffer with spare room.

transformers' ``DynamicLayer`` appends a decode step's key and value with ``torch.cat``: every
step, at every layer, a new ``(rows, heads, L + 1, dim)`` tensor is allocated and the whole cache is
copied into it, so a step costs O(L) copies and two large allocations per layer. This layer keeps
keys and values in a buffer ``(rows, heads, capacity, dim)`` and exposes the filled part as a view
``[:, :, :length]``; a step writes one column in place. When the buffer is full it grows by half its
length (at least :data:`MIN_SPARE` columns), so copies are amortised O(1) per token.

Everything that assigns ``layer.keys`` / ``layer.values`` (the serving engine's cache surgery:
joining rows, dropping rows) keeps working: the assigned tensor becomes the new buffer, exactly
full, and the next append grows it once.

Imported only by serving (it imports transformers at module level, unlike ``lorakit.models``).
"""

from __future__ import annotations

from torch import Tensor
from transformers.cache_utils import DynamicLayer

__all__ = ["MIN_SPARE", "BufferedLayer"]

# Columns added at least when a buffer grows (a decode step appends one).
MIN_SPARE = 32


class BufferedLayer(DynamicLayer):
    """``DynamicLayer`` with in-place appends; ``keys`` / ``values`` are views of the filled part."""

    def __init__(self) -> None:
        self._kbuf: Tensor | None = None
        self._vbuf: Tensor | None = None
        # Filled columns of each buffer; equal except between the two assignments of a surgery.
        self._length = self._vlength = 0
        super().__init__()  # sets keys / values to None through the properties below

    @classmethod
    def of(cls, layer: DynamicLayer) -> BufferedLayer:
        """A buffered copy of a filled ``DynamicLayer`` (shares its tensors until the first append)."""
        new = cls()
        if layer.is_initialized:
            new.device, new.is_initialized = layer.device, True
            new.keys, new.values = layer.keys, layer.values
        return new

    @property
    def keys(self) -> Tensor | None:
        """The cached keys ``(rows, heads, length, dim)`` (a view of the buffer)."""
        return None if self._kbuf is None else self._kbuf[:, :, : self._length]

    @keys.setter
    def keys(self, value: Tensor | None) -> None:
        self._kbuf = value
        self._length = 0 if value is None or value.dim() < 3 else value.shape[-2]

    @property
    def values(self) -> Tensor | None:
        """The cached values ``(rows, heads, length, dim)`` (a view of the buffer)."""
        return None if self._vbuf is None else self._vbuf[:, :, : self._vlength]

    @values.setter
    def values(self, value: Tensor | None) -> None:
        self._vbuf = value
        self._vlength = 0 if value is None or value.dim() < 3 else value.shape[-2]

    def update(self, key_states: Tensor, value_states: Tensor, *args, **kwargs) -> tuple[Tensor, Tensor]:
        """Append ``(rows, heads, n, dim)`` keys and values in place; returns the whole cache (views)."""
        n = key_states.shape[-2]
        if not self.is_initialized or self._kbuf is None or self._kbuf.dim() < 4:
            self.device, self.is_initialized = key_states.device, True
            self._kbuf, self._vbuf = self._fresh(key_states, n), self._fresh(value_states, n)
            self._length = self._vlength = 0
        elif self._length + n > self._kbuf.shape[-2]:
            self._kbuf, self._vbuf = self._grown(self._kbuf, n), self._grown(self._vbuf, n)
        end = self._length + n
        self._kbuf[:, :, self._length:end].copy_(key_states)
        self._vbuf[:, :, self._length:end].copy_(value_states)
        self._length = self._vlength = end
        return self.keys, self.values

    def _capacity(self, needed: int) -> int:
        return needed + max(MIN_SPARE, needed // 2)

    def _fresh(self, like: Tensor, n: int) -> Tensor:
        rows, heads, _, dim = like.shape
        return like.new_empty(rows, heads, self._capacity(n), dim)

    def _grown(self, buf: Tensor, n: int) -> Tensor:
        rows, heads, _, dim = buf.shape
        new = buf.new_empty(rows, heads, self._capacity(self._length + n), dim)
        new[:, :, : self._length].copy_(buf[:, :, : self._length])
        return new

"""Prefix caching: the keys and values of prompt prefixes already prefilled, reused by later prompts.

Chat prompts share long prefixes (the chat template's system prompt, an instruction in front of every
input), and a prefill computes every prompt token through every layer: on a CPU it is compute-bound
and takes about as long as the decode steps of a short answer. With this cache a prefill computes
only the tokens after the longest cached prefix.

What is cached: for each prompt prefilled, the keys and values of its first ``⌊n / block⌋·block``
tokens (``n`` = prompt length), under every block boundary (``block``, ``2·block``, … tokens), so a
later prompt finds the longest block-aligned prefix it shares with any earlier one. At least one
token is always computed afresh (its logits choose the first new token).

Whose: keys and values depend on the adapter of the row (an adapted projection in layer ``l``
changes every later layer's hidden states), so entries belong to an *owner*: the base model, or one
resident adapter *version* (its bank key and load serial: a replaced or reloaded adapter never sees
the old entries). Positions are the row's own (0 at its first token), so a prefix's rotary-encoded
keys are the same in every prompt that starts with it.

Exactness: reused keys/values were computed in another batch composition; they equal a fresh
prefill's up to floating-point summation order (the same as any two batch compositions of the
engine), not bitwise.

Bounded by bytes, least recently used first out.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable
from dataclasses import dataclass, field

import torch
from torch import Tensor

from lorakit.errors import LorakitError

__all__ = ["PrefixCache"]


@dataclass(eq=False)
class _Entry:
    # Per layer (keys, values), each (heads, length, dim): one prompt's first ``length`` tokens.
    layers: list[tuple[Tensor, Tensor]]
    bytes: int
    keys: list[tuple] = field(default_factory=list)  # the index keys that point here


class PrefixCache:
    """LRU cache of prompt-prefix keys/values per owner (see the module docstring)."""

    def __init__(self, max_bytes: int = 256 << 20, block: int = 16) -> None:
        if max_bytes < 0 or block < 1:
            raise LorakitError(f"max_bytes must be >= 0 and block >= 1, got {max_bytes} and {block}")
        self.max_bytes, self.block = max_bytes, block
        self._index: dict[tuple, tuple[_Entry, int]] = {}  # (owner, prefix tokens) -> (entry, length)
        self._entries: OrderedDict[_Entry, None] = OrderedDict()  # least recently used first
        self.bytes = 0
        self.hits = self.lookups = self.reused_tokens = 0

    def __len__(self) -> int:
        return len(self._entries)

    def lookup(self, owner: Hashable, tokens: list[int]) -> tuple[int, _Entry | None]:
        """The longest cached block-aligned prefix of ``tokens`` shorter than ``tokens``: (length, entry)."""
        self.lookups += 1
        for length in range((len(tokens) - 1) // self.block * self.block, 0, -self.block):
            found = self._index.get((owner, tuple(tokens[:length])))
            if found is not None:
                self._entries.move_to_end(found[0])
                self.hits += 1
                return length, found[0]
        return 0, None

    def past(self, entries: list[_Entry], length: int) -> list[tuple[Tensor, Tensor]]:
        """Per layer, the first ``length`` cached tokens of each entry stacked as rows: (rows, heads, length, dim)."""
        self.reused_tokens += length * len(entries)
        return [(torch.stack([e.layers[i][0][:, :length] for e in entries]),
                 torch.stack([e.layers[i][1][:, :length] for e in entries]))
                for i in range(len(entries[0].layers))]

    def storable(self, owner: Hashable, tokens: list[int]) -> int:
        """How many leading tokens of ``tokens`` :meth:`store` would keep (0: nothing to store).

        0 when the cache is off, the prompt is shorter than a block, or its block-aligned prefix is
        cached already (that entry then counts as just used). Lets the caller skip gathering keys
        and values that would not be kept.
        """
        length = len(tokens) // self.block * self.block
        if length == 0 or self.max_bytes == 0:
            return 0
        found = self._index.get((owner, tuple(tokens[:length])))
        if found is not None:  # cached already (and so are its shorter prefixes)
            self._entries.move_to_end(found[0])
            return 0
        return length

    def store(self, owner: Hashable, tokens: list[int], layers: list[tuple[Tensor, Tensor]]) -> None:
        """Keep ``layers`` (per layer (keys, values), each (heads, n, dim), ``n = len(tokens)``, a
        multiple of the block from :meth:`storable`) under every block prefix of ``tokens``.

        The tensors are kept as given: pass fresh ones, not views of a live cache.
        """
        entry = _Entry(layers, sum(k.nbytes + v.nbytes for k, v in layers))
        if entry.bytes > self.max_bytes:
            return
        for n in range(self.block, len(tokens) + 1, self.block):
            key = (owner, tuple(tokens[:n]))
            if key not in self._index:  # a shorter prefix cached by another prompt stays with that one
                self._index[key] = (entry, n)
                entry.keys.append(key)
        self._entries[entry] = None
        self.bytes += entry.bytes
        while self.bytes > self.max_bytes:
            self._evict(next(iter(self._entries)))

    def drop(self, owner: Hashable) -> None:
        """Forget every entry of ``owner`` (an adapter version that was unloaded)."""
        for entry in {e for (o, _), (e, _) in self._index.items() if o == owner}:
            self._evict(entry)

    def _evict(self, entry: _Entry) -> None:
        del self._entries[entry]
        self.bytes -= entry.bytes
        for key in entry.keys:
            if self._index.get(key, (None,))[0] is entry:
                del self._index[key]

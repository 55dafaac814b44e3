"""KV-cache surgery for continuous batching: merge a prefilled group into the running batch, drop rows.

The running batch keeps one left-padded cache ``(rows, heads, L, dim)`` per layer and a 2-D
attention mask ``(rows, L)`` (1 = real token). Every row also has its own position counter, so a
row's positions never depend on how much padding it sits behind: its logits equal those of the
row run alone.

- join: the newly prefilled group is left-padded (or the running batch is) to the longer length,
  then the two are concatenated along the batch dimension;
- leave: finished rows are dropped by index, then leading columns that are padding in every row
  are trimmed so the cache does not keep growing with rows that left.

Decode steps append in place: the running cache's layers are
:class:`~lorakit.models.kv_buffer.BufferedLayer` (preallocated spare room instead of a ``torch.cat``
of the whole cache per layer per step). Only full-attention layers are handled; sliding-window layers keep their own
length bookkeeping, which padding would break, so they are refused with a clear error.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from lorakit.errors import LorakitError


def _layers(cache) -> list:
    from transformers.cache_utils import DynamicLayer

    from lorakit.models.kv_buffer import BufferedLayer

    layers = list(cache.layers)
    for layer in layers:
        if type(layer) not in (DynamicLayer, BufferedLayer):
            raise LorakitError(f"continuous batching needs full-attention caches; this model uses {type(layer).__name__}")
    return layers


def check_cache(cache) -> None:
    """Raise ``ValueError`` if the cache holds layers the surgery below cannot handle."""
    _layers(cache)


def buffered(cache):
    """``cache`` with every layer a :class:`~lorakit.models.kv_buffer.BufferedLayer` (appends in place).

    The running batch's cache is converted once, when it is formed; the surgery below assigns whole
    tensors, which a buffered layer adopts as its new (full) buffer.
    """
    from lorakit.models.kv_buffer import BufferedLayer

    layers = _layers(cache)
    cache.layers[:] = [layer if isinstance(layer, BufferedLayer) else BufferedLayer.of(layer) for layer in layers]
    return cache


def prefill_inputs(prompts: list[list[int]], reuse: int, pad_id: int) -> tuple[Tensor, Tensor]:
    """Input ids ``(rows, L)`` of every prompt's tokens after its first ``reuse`` (cached) ones,
    left-padded, and the attention mask ``(rows, reuse + L)`` over the cached and the new tokens."""
    length = max(len(p) for p in prompts) - reuse
    ids = torch.full((len(prompts), length), pad_id, dtype=torch.long)
    mask = torch.zeros((len(prompts), reuse + length), dtype=torch.long)
    mask[:, :reuse] = 1
    for i, prompt in enumerate(prompts):
        start = length - (len(prompt) - reuse)  # the row's new tokens, left-padded to ``length``
        ids[i, start:] = torch.tensor(prompt[reuse:])
        mask[i, reuse + start:] = 1
    return ids, mask


def from_layers(layers: list[tuple[Tensor, Tensor]]):
    """A cache holding per layer ``(keys, values)``, each ``(rows, heads, L, dim)`` (a reused prompt prefix)."""
    from transformers.cache_utils import DynamicCache

    return DynamicCache(ddp_cache_data=layers)


def row_layers(cache, row: int, columns: Tensor) -> list[tuple[Tensor, Tensor]]:
    """Per layer, row ``row``'s keys and values at ``columns``: fresh ``(heads, n, dim)`` tensors each."""
    return [(layer.keys[row].index_select(1, columns), layer.values[row].index_select(1, columns))
            for layer in _layers(cache)]


def _pad_left(t: Tensor, n: int) -> Tensor:
    # keys/values are (rows, heads, L, dim): pad dim 2 on the left with zeros (masked anyway).
    return F.pad(t, (0, 0, n, 0)) if n else t


def merge(cache, mask: Tensor, new_cache, new_mask: Tensor) -> tuple[object, Tensor]:
    """Append the rows of ``new_cache`` to ``cache`` (both left-padded); returns (cache, mask).

    ``cache`` is changed in place and returned; with no running batch (``cache is None``) the new
    group simply becomes the batch.
    """
    if cache is None:
        return buffered(new_cache), new_mask
    old_len, new_len = mask.shape[1], new_mask.shape[1]
    length = max(old_len, new_len)
    for old, new in zip(_layers(cache), _layers(new_cache), strict=True):
        old.keys = torch.cat([_pad_left(old.keys, length - old_len), _pad_left(new.keys, length - new_len)])
        old.values = torch.cat([_pad_left(old.values, length - old_len), _pad_left(new.values, length - new_len)])
    mask = torch.cat([F.pad(mask, (length - old_len, 0)), F.pad(new_mask, (length - new_len, 0))])
    return cache, mask


def keep_rows(cache, mask: Tensor, keep: list[int]) -> tuple[object, Tensor]:
    """Keep only rows ``keep`` (in that order) and trim all-padding leading columns."""
    index = torch.tensor(keep, device=mask.device)
    mask = mask.index_select(0, index)
    # Columns before the first real token of every row hold nothing anyone attends to.
    real = mask.any(0).nonzero()
    start = int(real[0]) if real.numel() else mask.shape[1]
    mask = mask[:, start:]
    for layer in _layers(cache):
        layer.keys = layer.keys.index_select(0, index)[:, :, start:]
        layer.values = layer.values.index_select(0, index)[:, :, start:]
    return cache, mask

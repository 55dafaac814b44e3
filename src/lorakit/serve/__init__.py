"""lorakit.serve: one frozen base model, many LoRA adapters, mixed in one batch.

- :class:`AdapterBank`: adapters resident in slots, stacked per module and rank; LRU eviction.
- :mod:`lorakit.serve.lora_batch`: the per-row shrink/expand LoRA forward (Punica-style).
- :class:`Engine`: request queue → continuous batching with a KV cache, greedy or seeded sampling,
  per-row logprobs and grammar masks (:mod:`lorakit.serve.constrained`: JSON / JSON schema via llguidance).
- :class:`LoraServer`: the Python API (``generate``, ``classify``); :mod:`lorakit.serve.http` puts
  an OpenAI-compatible HTTP API in front of it (needs the ``serve`` extra: fastapi, uvicorn).
"""

from lorakit.serve.api import Classification, Completion, LoraServer
from lorakit.serve.bank import AdapterBank, BankFull, LoadedAdapter
from lorakit.serve.engine import Engine, GenerationRequest, QueueFull, RequestUpdate
from lorakit.serve.folder import AdapterFolder, AdapterNotFound, check_name
from lorakit.serve.sampling import SamplingParams, TokenLogprob

__all__ = [
    "AdapterBank", "AdapterFolder", "AdapterNotFound", "BankFull", "Classification", "Completion", "Engine",
    "GenerationRequest", "LoadedAdapter", "LoraServer", "QueueFull", "RequestUpdate", "SamplingParams",
    "TokenLogprob", "check_name",
]

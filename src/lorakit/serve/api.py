"""LoraServer: the Python face of serving, for notebooks and for the HTTP layer.

::

    from lorakit.serve import LoraServer

    server = LoraServer.from_pretrained("smollm2", adapters_dir="adapters/")
    server.add_adapter("sql")                            # from the adapters folder, or add_adapter("x", path)
    out = server.generate(["SELECT", "Once upon"], adapters=["sql", None], max_tokens=32)
    print(out[0].text)

One frozen base, an :class:`~lorakit.serve.bank.AdapterBank` of adapters and, for causal LMs, an
:class:`~lorakit.serve.engine.Engine` that batches requests of different adapters together.
Adapters named by a request but not resident are loaded from the adapters folder on demand
(least recently used ones are evicted beyond ``max_loaded``).

Replacing an adapter under load (:meth:`LoraServer.replace_adapter`) never touches the weights
running rows use: the new version is loaded into its own slot under a new bank key
(``name#2``; ``#`` cannot occur in an adapter name, so keys never collide with names), new requests
are admitted on it, and the old version is unloaded when its last row finishes.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from lorakit.errors import LorakitError
from lorakit.io import read_adapter
from lorakit.serve.bank import AdapterBank, BankFull, LoadedAdapter
from lorakit.serve.constrained import Constraint, LazyVocabulary, grammar_for
from lorakit.serve.engine import Engine, GenerationRequest, QueueFull, RequestUpdate
from lorakit.serve.folder import AdapterFolder, AdapterNotFound, check_name
from lorakit.serve.sampling import SamplingParams, TokenLogprob


@dataclass(frozen=True)
class Completion:
    """The result of one generation request."""

    text: str
    finish_reason: str
    prompt_tokens: int
    completion_tokens: int
    adapter: str | None
    error: str | None = None
    # One entry per generated token when the request asked for logprobs (SamplingParams.logprobs).
    logprobs: list[TokenLogprob] | None = None


@dataclass(frozen=True)
class Classification:
    """The result of classifying one text."""

    label: str
    index: int
    probs: list[float]
    logits: list[float]
    adapter: str | None


class LoraServer:
    """One base model serving many adapters, mixed freely within a batch."""

    def __init__(self, model: nn.Module, tokenizer, *, name: str = "base", task: str = "generate",
                 adapters_dir: str | Path | None = None, max_loaded: int = 8, max_batch: int = 16,
                 max_queue: int = 64, max_prefill_tokens: int = 4096, prefix_cache_mb: int = 256) -> None:
        if task not in ("generate", "classify"):
            raise LorakitError(f"task must be 'generate' or 'classify', got {task!r}")
        self.model, self.tokenizer, self.name, self.task = model.eval(), tokenizer, str(name), task
        self.bank = AdapterBank(model, max_loaded=max_loaded)
        self.folder = AdapterFolder(adapters_dir) if adapters_dir is not None else None
        self.engine = Engine(model, tokenizer, self.bank, max_batch=max_batch, max_queue=max_queue,
                             max_prefill_tokens=max_prefill_tokens, prefix_cache_bytes=prefix_cache_mb << 20,
                             ) if task == "generate" else None
        # Current version of each replaced adapter (absent: version 0, bank key = name) and the bank
        # keys of older versions that rows still use.
        self._versions: dict[str, int] = {}
        self._retiring: set[str] = set()
        self.vocab: LazyVocabulary | None = None
        # What from_pretrained chose for the base (dtype, device, quantized layers); empty otherwise.
        self.precision: dict = {}
        if self.engine is not None:
            self.engine.loader = self._load_from_folder
            self.engine.keys = self.key
            self.engine.on_release = self._retire
            n_vocab = model.get_output_embeddings().weight.shape[0]
            self.vocab = LazyVocabulary(tokenizer, n_vocab, self.engine.eos_ids)

    @classmethod
    def from_pretrained(cls, name_or_path: str, *, task: str = "generate", num_labels: int | None = None,
                        dtype: str = "auto", device: str | torch.device = "cpu", pack: bool = True,
                        **kwargs) -> LoraServer:
        """Load a base with :func:`lorakit.models.load_model` (embedded name or local folder).

        ``dtype``: the frozen base's precision, one of :data:`lorakit.models.precision.BASE_DTYPES`
        or ``"auto"`` (bf16 where ``device`` multiplies bf16 natively, else fp32); int8/nf4 quantize
        the Linear layers with bitsandbytes. Adapters are kept in the activations' type
        (:mod:`lorakit.serve.lora_batch`). ``pack``: prepack the float Linear layers for oneDNN on
        CPU (:mod:`lorakit.models.packed`; faster decode steps, one more copy of those weights in
        memory). The chosen settings are in ``server.precision``.
        """
        from lorakit.models import load_model
        from lorakit.models.precision import freeze_base_precision, load_dtype, resolve_base_dtype

        device = torch.device(device)
        name = resolve_base_dtype(dtype, device)
        loaded = load_model(name_or_path, task=task, num_labels=num_labels, dtype=load_dtype(name, device))
        rows = kwargs.get("max_batch", 16) if pack else None  # decode steps run about max_batch rows
        report = freeze_base_precision(loaded.model, name, device, pack_rows=rows)
        server = cls(loaded.model, loaded.tokenizer, name=loaded.name, task=task, **kwargs)
        server.precision = report
        return server

    # ---- adapters --------------------------------------------------------------------------
    def key(self, name: str) -> str:
        """The bank key of adapter ``name``'s current version (the name itself until it is replaced)."""
        version = self._versions.get(name, 0)
        return name if version == 0 else f"{name}#{version}"

    def is_loaded(self, name: str) -> bool:
        """Whether the current version of adapter ``name`` is resident."""
        return self.key(name) in self.bank

    def adapter_info(self, name: str) -> LoadedAdapter:
        """The resident current version of ``name`` (``KeyError`` if not loaded), under its own name."""
        return dataclasses.replace(self.bank.info(self.key(name)), name=name)

    def loaded_adapters(self) -> list[LoadedAdapter]:
        """The current version of every resident adapter, least recently used first."""
        entries = self.bank.snapshot()
        return [dataclasses.replace(e, name=e.name.partition("#")[0]) for e in entries
                if e.name == self.key(e.name.partition("#")[0])]

    def _path(self, name: str, path: str | Path | None) -> str | Path:
        check_name(name)
        if name == self.name:
            raise LorakitError(f"adapter name {name!r} is the base model's name")
        if path is None:
            if self.folder is None:
                raise LorakitError("no adapters folder configured: pass the adapter's path")
            path = self.folder.resolve(name)
        return path

    def add_adapter(self, name: str, path: str | Path | None = None) -> LoadedAdapter:
        """Load adapter ``name`` from ``path``, or from the adapters folder when no path is given."""
        file = read_adapter(self._path(name, path))
        with self.bank.lock:
            return dataclasses.replace(self.bank.load_file(self.key(name), file), name=name)

    def replace_adapter(self, name: str, path: str | Path | None = None) -> tuple[LoadedAdapter, bool]:
        """Load a new version of ``name`` atomically; returns (its info, whether an old one was replaced).

        Rows already running finish on the old weights; every request admitted from now on gets the new
        ones. A bad new adapter raises ``ValueError`` and the old version keeps serving. When ``name``
        is not loaded this is a plain load.
        """
        file = read_adapter(self._path(name, path))  # read and validated before anything changes
        with self.bank.lock:
            old = self.key(name)
            if old not in self.bank:
                return dataclasses.replace(self.bank.load_file(old, file), name=name), False
            version = self._versions.get(name, 0) + 1
            info = self.bank.load_file(f"{name}#{version}", file)  # BankFull/ValueError: nothing changed
            self._versions[name] = version
            self._retiring.add(old)
            self._retire(old)
            return dataclasses.replace(info, name=name), True

    def _retire(self, key: str) -> None:
        # Called after a row releases ``key`` (under bank.lock): an old version goes once nobody uses it.
        if key not in self._retiring:
            return
        entry = self.bank.get(key)
        if entry is None:
            self._retiring.discard(key)  # evicted meanwhile
        elif entry.pins == 0:
            self.bank.unload(key)
            self._retiring.discard(key)

    def remove_adapter(self, name: str) -> None:
        """Unload a resident adapter (``KeyError`` if not loaded, ``ValueError`` while a request uses it)."""
        self.bank.unload(self.key(name))

    def available(self) -> list[str]:
        """Adapters that can be loaded from the adapters folder."""
        return self.folder.available() if self.folder is not None else []

    def resolve_model(self, model: str | None) -> str | None:
        """Map an OpenAI ``model`` field to an adapter name (``None``: the base model)."""
        if model is None or model == self.name:
            return None
        check_name(model)
        if self.is_loaded(model):
            return model
        if self.folder is None:
            raise AdapterNotFound(f"adapter {model!r} is not loaded")
        self.folder.resolve(model)  # AdapterNotFound if absent
        return model

    def _load_from_folder(self, adapter: str) -> None:
        if self.folder is None:
            raise AdapterNotFound(f"adapter {adapter!r} is not loaded")
        self.bank.load_file(self.key(adapter), read_adapter(self.folder.resolve(adapter)))

    def _pin(self, adapter: str) -> str:
        # Under bank.lock, so that nothing evicts the adapter between loading and pinning it.
        with self.bank.lock:
            if not self.is_loaded(adapter):
                self._load_from_folder(adapter)
            key = self.key(adapter)
            self.bank.acquire(key)
            return key

    # ---- generation ------------------------------------------------------------------------
    def encode_prompt(self, prompt: str) -> list[int]:
        """Token ids of a completion prompt (the tokenizer's own special tokens included)."""
        return list(self.tokenizer(prompt)["input_ids"])

    def encode_chat(self, messages: list[dict[str, str]]) -> list[int]:
        """Token ids of a chat rendered with the tokenizer's chat template, ready for the reply."""
        if not getattr(self.tokenizer, "chat_template", None):
            raise LorakitError(f"the tokenizer of {self.name!r} has no chat template; use /v1/completions")
        text = self.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def constraint(self, response_format: dict | None) -> Constraint | None:
        """A fresh grammar state for one request with OpenAI's ``response_format`` (``ValueError`` if bad)."""
        grammar = grammar_for(response_format)
        if grammar is None:
            return None
        self._require_engine()
        return self.vocab.get().constraint(grammar)

    def submit(self, prompt_ids: list[int], params: SamplingParams, adapter: str | None, on_update,
               constraint: Constraint | None = None) -> str:
        """Queue one request; its adapter (checked to exist now) is loaded when the request runs.

        ``constraint``: the request's own :meth:`constraint` (never share one between requests).
        """
        engine = self._require_engine()
        if adapter is not None and not self.is_loaded(adapter):
            self.resolve_model(adapter)  # AdapterNotFound / ValueError before queueing
            # A bad adapter is refused now (400), not when the request runs. It is loaded now only into
            # a free slot: evicting here could throw out an adapter that queued requests wait for.
            file = read_adapter(self.folder.resolve(adapter))
            with self.bank.lock:
                if not self.is_loaded(adapter):
                    try:
                        self.bank.load_file(self.key(adapter), file, evict=False)
                    except BankFull:
                        self.bank.check(file)  # loads (evicting the LRU) when the request is admitted
        return engine.submit(GenerationRequest(prompt_ids, params, adapter, on_update, constraint=constraint))

    def generate(self, prompts: list[str] | str, adapters: list[str | None] | str | None = None, *,
                 max_tokens: int = 32, temperature: float = 0.0, top_p: float = 1.0, seed: int | None = None,
                 stop: tuple[str, ...] | list[str] = (), logprobs: int | None = None,
                 response_format: dict | list[dict | None] | None = None) -> list[Completion]:
        """Complete every prompt, each with its own adapter (``None``: base), all batched together.

        ``response_format``: OpenAI's (e.g. ``{"type": "json_object"}``), for every row or one per row.
        """
        prompts = [prompts] if isinstance(prompts, str) else list(prompts)
        adapters = self._per_row(adapters, len(prompts))
        params = SamplingParams(max_tokens=max_tokens, temperature=temperature, top_p=top_p, seed=seed,
                                stop=tuple(stop), logprobs=logprobs)
        return self.generate_ids([self.encode_prompt(p) for p in prompts], adapters, params, response_format)

    def generate_ids(self, prompt_ids: list[list[int]], adapters: list[str | None],
                     params: SamplingParams | list[SamplingParams],
                     response_format: dict | list[dict | None] | None = None) -> list[Completion]:
        """Like :meth:`generate` for token ids; blocks until every request is done."""
        engine = self._require_engine()
        params = params if isinstance(params, list) else [params] * len(prompt_ids)
        formats = response_format if isinstance(response_format, list) else [response_format] * len(prompt_ids)
        if len(formats) != len(prompt_ids):
            raise LorakitError(f"got {len(prompt_ids)} prompts but {len(formats)} response formats")
        constraints = [self.constraint(f) for f in formats]  # bad formats fail before anything is queued
        for adapter in dict.fromkeys(adapters):  # fail before anything is queued
            if adapter is not None and not self.is_loaded(adapter):
                self.resolve_model(adapter)
        results: list[list[RequestUpdate]] = [[] for _ in prompt_ids]
        done = [threading.Event() for _ in prompt_ids]

        def collector(i: int):
            def on_update(update: RequestUpdate) -> None:
                results[i].append(update)
                if update.finish_reason is not None:
                    done[i].set()
            return on_update

        pending = list(range(len(prompt_ids)))
        while pending:
            i = pending[0]
            try:
                self.submit(prompt_ids[i], params[i], adapters[i], collector(i), constraints[i])
                pending.pop(0)
            except QueueFull:
                # Wait for queued rows to join the batch.
                if not (engine.queue_depth or engine.batch_size):
                    raise
                if engine.running:
                    time.sleep(0.01)  # the engine thread is draining the queue
                else:
                    engine.step()  # no background thread: make room by running a step here
        if engine.running:
            for event in done:
                event.wait()
        else:
            engine.run_until_idle()
        return [self._completion(updates, adapters[i]) for i, updates in enumerate(results)]

    @staticmethod
    def _completion(updates: list[RequestUpdate], adapter: str | None) -> Completion:
        last = updates[-1]
        logprobs = None if last.logprobs is None else [lp for u in updates for lp in u.logprobs or ()]
        return Completion("".join(u.text for u in updates), last.finish_reason or "error", last.prompt_tokens,
                          last.completion_tokens, adapter, last.error, logprobs)

    # ---- classification --------------------------------------------------------------------
    def classify(self, texts: list[str] | str, adapters: list[str | None] | str | None = None, *,
                 max_length: int = 512) -> list[Classification]:
        """Classify every text, each with its own adapter, in one batched forward."""
        if self.task != "classify":
            raise LorakitError(f"{self.name!r} is served for generation; start the server with task 'classify'")
        texts = [texts] if isinstance(texts, str) else list(texts)
        if not texts:
            return []
        adapters = self._per_row(adapters, len(texts))
        # Refused, never silently truncated: a cut text would be classified as something else.
        limit = min(max_length, int(getattr(self.model.config, "max_position_embeddings", max_length) or max_length))
        enc = self.tokenizer(texts, padding=True, return_tensors="pt")
        longest = int(enc["attention_mask"].sum(-1).max())
        if longest > limit:
            raise LorakitError(f"input has {longest} tokens; at most {limit} are accepted")
        enc = {k: v.to(self.bank.device) for k, v in enc.items()}
        pinned: list[str] = []
        keys: list[str | None] = []
        try:
            for a in adapters:
                keys.append(None if a is None else self._pin(a))
                if a is not None:
                    pinned.append(keys[-1])
            with self.bank.lock, torch.inference_mode(), self.bank.batch([self.bank.slot(k) for k in keys]):
                logits = self.model(**enc).logits.float()
        finally:
            with self.bank.lock:
                for key in pinned:
                    self.bank.release(key)
                    self._retire(key)
        probs = torch.softmax(logits, dim=-1)
        labels = getattr(self.model.config, "id2label", None) or {}
        out = []
        for i, a in enumerate(adapters):
            index = int(probs[i].argmax())
            out.append(Classification(str(labels.get(index, index)), index, probs[i].tolist(), logits[i].tolist(), a))
        return out

    # ---- helpers ---------------------------------------------------------------------------
    def _require_engine(self) -> Engine:
        if self.engine is None:
            raise LorakitError(f"{self.name!r} is served for classification; use classify()")
        return self.engine

    @staticmethod
    def _per_row(adapters, n: int) -> list[str | None]:
        if adapters is None or isinstance(adapters, str):
            return [adapters] * n
        adapters = list(adapters)
        if len(adapters) != n:
            raise LorakitError(f"got {n} inputs but {len(adapters)} adapters")
        return adapters

    def start(self) -> None:
        """Run the engine on a background thread (the HTTP server does).

        The token table for response formats and logprobs is built meanwhile on another thread (1-2 s
        for SmolLM2's 49k vocabulary), so the first such request does not wait for it.
        """
        if self.engine is not None:
            self.engine.start()
            threading.Thread(target=self.vocab.get, name="lorakit-vocabulary", daemon=True).start()

    def close(self) -> None:
        """Stop the engine and give the model back without any bank modules."""
        if self.engine is not None:
            self.engine.shutdown()
        self.bank.close()

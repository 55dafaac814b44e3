"""The generation engine: a request queue feeding continuous batching over one model and its bank.

One *step* (always under ``bank.lock``, so adapters never change under a running forward):

1. admit: waiting requests join (up to ``max_batch`` rows and ``max_prefill_tokens`` prompt tokens);
   they are prefilled together as one left-padded group, each row with its own adapter slot, and
   their first token is chosen; a prompt prefix that an earlier prompt of the same owner (base or
   adapter version) already computed is taken from :mod:`lorakit.serve.prefix` instead;
2. join: the group's cache is merged into the running batch's cache (:mod:`lorakit.serve.kv`);
3. decode: every running row feeds its last token in one forward (``(rows, 1)`` input, per-row
   position ids, the padded 2-D attention mask) and chooses its next token;
4. leave: finished rows (stop string, end-of-sequence, ``max_tokens``, context full, cancelled)
   are dropped from the cache.

A row's positions count its own tokens only, and padding is masked out, so every row's logits
equal those of the same request run alone. Results go back through each request's ``on_update``
callback, called on the engine's thread.

Choosing a token (:meth:`Engine._advance`): the rows with a response format get their grammar's
token masks (computed together, applied in one op) before sampling; rows that asked for logprobs get
them from the raw logits in one log-softmax. Other rows pay nothing for either.

Adapters are pinned by *bank key*, which ``keys`` maps from the adapter's name when the row is
admitted: replacing an adapter (``LoraServer.replace_adapter``) loads the new weights under a new
key, so rows admitted before keep the old slot to their end and rows admitted after get the new one.
"""

from __future__ import annotations

import contextlib
import inspect
import threading
import time
from collections import deque
from collections.abc import Callable

import torch
from torch import Tensor, nn

from lorakit.errors import LorakitError
from lorakit.serve import kv
from lorakit.serve.bank import AdapterBank, BankFull
from lorakit.serve.constrained import token_masks
from lorakit.serve.prefix import PrefixCache
from lorakit.serve.request import GenerationRequest, RequestUpdate, RunningSequence
from lorakit.serve.sampling import TokenLogprob, next_tokens, token_logprobs

__all__ = ["Engine", "GenerationRequest", "QueueFull", "RequestUpdate"]


class QueueFull(RuntimeError):
    """The request queue is at its limit (the HTTP layer answers 429 with Retry-After)."""


class Engine:
    """Continuous batching for one causal LM; adapters (if any) come from ``bank``."""

    def __init__(self, model: nn.Module, tokenizer, bank: AdapterBank | None = None, *, max_batch: int = 16,
                 max_queue: int = 64, max_prefill_tokens: int = 4096, prefix_cache_bytes: int = 256 << 20,
                 on_step: Callable[[int, float], None] | None = None) -> None:
        self.model, self.tokenizer, self.bank = model, tokenizer, bank
        self.max_batch, self.max_queue, self.max_prefill_tokens = max_batch, max_queue, max_prefill_tokens
        self.on_step = on_step
        # Keys/values of prompt prefixes already prefilled, reused by later prompts (0 bytes: off).
        self.prefixes = PrefixCache(prefix_cache_bytes)
        # Makes an adapter resident by name (LoraServer loads it from the adapters folder).
        self.loader: Callable[[str], object] | None = None
        # An adapter's current bank key (a replaced adapter gets a new one), and what to do after a
        # row releases a key (LoraServer unloads replaced versions once no row holds them).
        self.keys: Callable[[str], str] = lambda name: name
        self.on_release: Callable[[str], None] | None = None
        # Optional observer of every step's next-token logits (request ids, (rows, vocab)): for tests.
        self.logits_hook: Callable[[list[str], Tensor], None] | None = None
        self.lock = bank.lock if bank is not None else threading.RLock()
        self.device = next(model.parameters()).device
        cfg = model.config
        self.max_positions = int(getattr(cfg, "max_position_embeddings", 0) or getattr(cfg, "n_positions", 0) or 2**31)
        self.pad_id = next(i for i in (tokenizer.pad_token_id, tokenizer.eos_token_id, 0) if i is not None)
        self.eos_ids = self._eos_ids(model, tokenizer)
        self._keep_last = "logits_to_keep" in inspect.signature(model.forward).parameters
        self._cv = threading.Condition()
        self._queue: deque[GenerationRequest] = deque()
        self._cancelled: set[str] = set()
        self._active: list[RunningSequence] = []
        self._cache = None
        self._mask: Tensor | None = None
        self._rows = None
        self._thread: threading.Thread | None = None
        self._stop = False
        self.stats = {"steps": 0, "prompt_tokens": 0, "cached_prompt_tokens": 0, "completion_tokens": 0, "requests": 0}

    @staticmethod
    def _eos_ids(model: nn.Module, tokenizer) -> set[int]:
        ids: set[int] = set()
        gen = getattr(model, "generation_config", None)
        for value in (getattr(gen, "eos_token_id", None), tokenizer.eos_token_id):
            ids.update(value if isinstance(value, list | tuple) else ([value] if value is not None else []))
        return ids

    # ---- submitting ------------------------------------------------------------------------
    @property
    def queue_depth(self) -> int:
        """Requests waiting to join the batch."""
        return len(self._queue)

    @property
    def batch_size(self) -> int:
        """Rows in the running batch."""
        return len(self._active)

    def check(self, request: GenerationRequest) -> None:
        """Raise ``ValueError`` if the request cannot run on this model (before it is queued)."""
        n = len(request.prompt_ids)
        if n == 0:
            raise LorakitError("the prompt is empty")
        vocab = self.model.get_input_embeddings().num_embeddings
        if any(not 0 <= t < vocab for t in request.prompt_ids):
            raise LorakitError(f"prompt token ids must be in 0..{vocab - 1}")
        if n + request.params.max_tokens > self.max_positions:
            raise LorakitError(f"prompt ({n} tokens) + max_tokens ({request.params.max_tokens}) exceeds the "
                               f"model's context of {self.max_positions} tokens")

    def submit(self, request: GenerationRequest) -> str:
        """Queue a request; ``QueueFull`` when the queue is at its limit.

        The adapter need not be resident yet: it is loaded (through ``loader``) and pinned when the
        request is admitted into the batch. While every slot is pinned by running rows, the request
        waits in the queue instead of failing.
        """
        self.check(request)
        if request.adapter is not None and self.bank is None:
            raise LorakitError("this engine has no adapter bank")
        with self._cv:
            if len(self._queue) >= self.max_queue:
                raise QueueFull(f"the request queue is full ({self.max_queue} waiting)")
            self._queue.append(request)
            self.stats["requests"] += 1
            self._cv.notify()
        return request.id

    def cancel(self, request_id: str) -> None:
        """Stop a request (queued or running); it ends with finish_reason "cancelled"."""
        with self._cv:
            self._cancelled.add(request_id)
            self._cv.notify()

    # ---- running ---------------------------------------------------------------------------
    def start(self) -> None:
        """Run steps on a background thread until :meth:`shutdown`."""
        if self._thread is None:
            self._stop = False
            self._thread = threading.Thread(target=self._loop, name="lorakit-engine", daemon=True)
            self._thread.start()

    def shutdown(self, timeout: float = 10.0) -> None:
        """Stop the background thread (running requests end as cancelled)."""
        with self._cv:
            self._stop = True
            self._cv.notify()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None
        with self.lock:
            for seq in self._active:
                self._finish(seq, "cancelled")
            self._active, self._cache, self._mask = [], None, None
            while self._queue:
                self._reject(self._queue.popleft(), "cancelled")

    @property
    def running(self) -> bool:
        """Whether a background thread runs the steps."""
        return self._thread is not None

    def _loop(self) -> None:
        while True:
            with self._cv:
                while not self._stop and not self._queue and not self._active:
                    self._cv.wait(timeout=1.0)
                if self._stop:
                    return
            self.step()

    def run_until_idle(self, max_steps: int | None = None) -> None:
        """Run steps on the calling thread until nothing is queued or running."""
        steps = 0
        while (self._queue or self._active) and (max_steps is None or steps < max_steps):
            self.step()
            steps += 1

    def step(self) -> None:
        """One admit → prefill → join → decode → leave round (a no-op when idle)."""
        start = time.perf_counter()
        group: list[RunningSequence] = []
        rows = 0
        with self.lock, torch.inference_mode():
            try:
                self._drop_cancelled()
                group = self._admit()
                if group:
                    self._prefill(group)
                rows = len(self._active)
                if rows:
                    self._decode()
            except Exception as exc:  # a failing step must not kill the server: fail its requests
                message = f"{type(exc).__name__}: {exc}"
                for seq in self._active + group:
                    self._finish(seq, "error", message)
                self._active, self._cache, self._mask, self._rows = [], None, None, None
                return
            self.stats["steps"] += 1
        if self.on_step is not None and (group or rows):
            with contextlib.suppress(Exception):  # an observer must never stop the engine thread
                self.on_step(max(rows, len(group)), time.perf_counter() - start)

    def _admit(self) -> list[RunningSequence]:
        group: list[RunningSequence] = []
        waiting: list[GenerationRequest] = []
        budget = self.max_prefill_tokens
        with self._cv:
            while self._queue and len(self._active) + len(group) < self.max_batch:
                request = self._queue.popleft()
                n = len(request.prompt_ids)
                if group and n > budget:
                    self._queue.appendleft(request)
                    break
                key = None
                if request.adapter is not None:
                    try:
                        key, slot = self._pin(request.adapter)
                    except BankFull:  # every slot serves running rows: wait for one to finish
                        waiting.append(request)
                        continue
                    except Exception as exc:  # the adapter went bad or away since it was checked
                        status = 404 if isinstance(exc, LookupError) else 400 if isinstance(exc, ValueError) else 500
                        self._emit(request, RequestUpdate("", "error", n, 0, str(exc), status))
                        continue
                else:
                    slot = -1
                budget -= n
                group.append(RunningSequence(request, slot, self.tokenizer, key))
            self._queue.extendleft(reversed(waiting))
        return group

    def _pin(self, adapter: str) -> tuple[str, int]:
        # Runs under bank.lock (the step holds it): load-if-missing and pin are one atomic move.
        key = self.keys(adapter)
        if key not in self.bank:
            if self.loader is None:
                raise KeyError(f"adapter {adapter!r} is not loaded")
            self.loader(adapter)
        return key, self.bank.acquire(key)

    def _forward(self, slots_rows, **inputs):
        if self.bank is None:
            return self.model(**inputs, use_cache=True)
        with self.bank.batch(slots_rows):
            return self.model(**inputs, use_cache=True)

    def _prefill(self, group: list[RunningSequence]) -> None:
        prompts = [s.request.prompt_ids for s in group]
        owners = [self._owner(s) for s in group]
        # The prefix every row of the group finds cached (0 if one row finds none): computed once.
        found = [self.prefixes.lookup(o, p) for o, p in zip(owners, prompts, strict=True)]
        reuse = min(n for n, _ in found)
        past = kv.from_layers(self.prefixes.past([e for _, e in found], reuse)) if reuse else None
        ids, mask = kv.prefill_inputs(prompts, reuse, self.pad_id)
        ids, mask = ids.to(self.device), mask.to(self.device)
        # A row's own positions (0 at its first token), whatever padding sits before its new tokens.
        positions = (mask.cumsum(-1) - 1).clamp(min=0)[:, reuse:]
        extra = {"logits_to_keep": 1} if self._keep_last else {}
        rows = self.bank.rows([s.slot for s in group]) if self.bank is not None else None
        out = self._forward(rows, input_ids=ids, attention_mask=mask, position_ids=positions, cache=past, **extra)
        self.stats["prompt_tokens"] += sum(len(p) for p in prompts)
        self.stats["cached_prompt_tokens"] += reuse * len(group)
        for i, (owner, prompt) in enumerate(zip(owners, prompts, strict=True)):
            if n := self.prefixes.storable(owner, prompt):  # the row's first ``n`` real tokens
                real = mask[i].nonzero().squeeze(1)[:n]
                self.prefixes.store(owner, prompt[:n], kv.row_layers(out.cache, i, real))
        survivors = self._advance(group, out.logits[:, -1])
        if survivors:
            keep = [i for i, s in enumerate(group) if s in survivors]
            cache, new_mask = kv.keep_rows(out.cache, mask, keep) if len(keep) < len(group) else (out.cache, mask)
            self._cache, self._mask = kv.merge(self._cache, self._mask, cache, new_mask)
            self._set_active(self._active + survivors)

    def _owner(self, seq: RunningSequence):
        # Whose keys/values a row computes: the base's, or one load of one adapter (prefix.py).
        return None if seq.key is None else (seq.key, self.bank.info(seq.key).serial)

    def _decode(self) -> None:
        active = self._active
        ids = torch.tensor([[s.last_token] for s in active], device=self.device)
        positions = torch.tensor([[s.next_pos] for s in active], device=self.device)
        self._mask = torch.cat([self._mask, self._mask.new_ones((len(active), 1))], dim=1)
        out = self._forward(self._rows, input_ids=ids, attention_mask=self._mask, position_ids=positions,
                            cache=self._cache)
        self._cache = out.cache
        for seq in active:
            seq.next_pos += 1
        survivors = self._advance(active, out.logits[:, -1])
        if len(survivors) < len(active):
            keep = [i for i, s in enumerate(active) if s in survivors]
            if keep:
                self._cache, self._mask = kv.keep_rows(self._cache, self._mask, keep)
            else:
                self._cache, self._mask = None, None
            self._set_active(survivors)

    def _set_active(self, active: list[RunningSequence]) -> None:
        self._active = active
        # A new composition object only when rows change, so decode steps reuse the bank's plans.
        self._rows = self.bank.rows([s.slot for s in active]) if self.bank is not None and active else None

    def _advance(self, seqs: list[RunningSequence], logits: Tensor) -> list[RunningSequence]:
        """Choose each row's next token, stream its text, and return the rows that go on."""
        if self.logits_hook is not None:
            self.logits_hook([s.request.id for s in seqs], logits)
        params = [s.request.params for s in seqs]
        constrained = [(i, s.constraint) for i, s in enumerate(seqs) if s.constraint is not None]
        masks = token_masks(constrained) if constrained else None
        picks = next_tokens(logits, params, [s.generator for s in seqs], masks)
        counts = [p.logprobs for p in params]
        logprobs = token_logprobs(logits, picks, counts) if any(k is not None for k in counts) else None
        survivors = []
        for i, (seq, token) in enumerate(zip(seqs, picks, strict=True)):
            seq.generated += 1
            self.stats["completion_tokens"] += 1
            # A constrained row's grammar allows end-of-sequence only once the document is complete.
            if token in self.eos_ids and (not seq.request.params.ignore_eos or seq.constraint is not None):
                self._finish(seq, "stop")
                continue
            if seq.constraint is not None:
                try:
                    seq.constraint.advance(token)
                except RuntimeError as exc:
                    self._finish(seq, "error", str(exc))
                    continue
            if logprobs is not None and logprobs[i] is not None:
                seq.logprobs.append(logprobs[i])
            seq.stream.push(token)
            seq.last_token = token
            if seq.stream.stopped:
                self._finish(seq, "stop")
            elif seq.generated >= seq.request.params.max_tokens or seq.next_pos >= self.max_positions:
                self._finish(seq, "length")
            else:
                delta = seq.stream.take()
                if delta:
                    self._emit(seq.request, RequestUpdate(delta, None, len(seq.request.prompt_ids), seq.generated,
                                                          logprobs=self._take_logprobs(seq)))
                survivors.append(seq)
        return survivors

    def _drop_cancelled(self) -> None:
        with self._cv:
            if not self._cancelled:
                return
            cancelled, self._cancelled = self._cancelled, set()
            for request in [r for r in self._queue if r.id in cancelled]:
                self._queue.remove(request)
                self._reject(request, "cancelled")
        keep = [i for i, s in enumerate(self._active) if s.request.id not in cancelled]
        if len(keep) < len(self._active):
            for seq in self._active:
                if seq.request.id in cancelled:
                    self._finish(seq, "cancelled")
            if keep:
                self._cache, self._mask = kv.keep_rows(self._cache, self._mask, keep)
            else:
                self._cache, self._mask = None, None
            self._set_active([self._active[i] for i in keep])

    def _finish(self, seq: RunningSequence, reason: str, error: str | None = None) -> None:
        if seq.finish is not None:
            return
        seq.finish = reason
        if self.bank is not None and seq.key is not None:
            self.bank.release(seq.key)
            if self.on_release is not None:
                self.on_release(seq.key)
        text = seq.stream.finish() if reason in ("stop", "length") else seq.stream.take(final=True)
        self._emit(seq.request, RequestUpdate(text, reason, len(seq.request.prompt_ids), seq.generated, error,
                                              logprobs=self._take_logprobs(seq)))

    @staticmethod
    def _take_logprobs(seq: RunningSequence) -> list[TokenLogprob] | None:
        if seq.request.params.logprobs is None:
            return None
        taken, seq.logprobs = seq.logprobs, []
        return taken

    def _reject(self, request: GenerationRequest, reason: str) -> None:
        # Queued requests hold no pin (they are pinned on admission).
        self._emit(request, RequestUpdate("", reason, len(request.prompt_ids), 0))

    @staticmethod
    def _emit(request: GenerationRequest, update: RequestUpdate) -> None:
        if request.on_update is not None:
            with contextlib.suppress(Exception):  # a broken consumer must not stop the batch
                request.on_update(update)

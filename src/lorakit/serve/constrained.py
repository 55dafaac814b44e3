"""Constrained decoding: OpenAI's ``response_format`` (JSON object / JSON schema) through llguidance.

A request with a response format gets a :class:`Constraint`: an llguidance matcher that knows,
after every token, which tokens may come next. In the engine's sampling step the constrained rows'
masks are computed together (:func:`token_masks`, llguidance's parallel executor) and applied to
those rows' logits in one vectorised op (:meth:`TokenMasks.apply`); unconstrained rows of the same
batch (other adapters, plain requests) are untouched. Once the document is complete only
end-of-sequence is allowed, so a constrained row ends with finish_reason "stop".

Why llguidance (of llguidance, xgrammar, outlines-core and lm-format-enforcer): it computes each
mask lazily in Rust from the parser state, so a new schema costs no up-front index over the whole
vocabulary (outlines-core builds one per schema before the first token, paid by the request); it
reads any Hugging Face fast tokenizer (byte-level BPE, SentencePiece) and, through
``TokenizerWrapper``, any list of token bytes (our test tokenizers); it covers JSON Schema broadly;
its abi3 wheel pins neither torch nor CUDA (xgrammar's wheels follow torch releases); and it is
maintained and used by vLLM, SGLang and llama.cpp. lm-format-enforcer walks the tokenizer's prefix
tree in Python per row and step. Measured here on SmolLM2's 49k vocabulary (2 shared CPU cores,
loaded): computing and applying the masks of one JSON-schema row takes ~2 ms per step, of 16 rows
9-18 ms (as the load varied); a JSON-schema matcher compiles in 1-2 ms per request.

Whitespace between JSON tokens is not allowed (``whitespace_flexible: false``): the output is
compact JSON, and a model cannot loop on spaces or newlines until ``max_tokens`` (a known failure
of flexible-whitespace JSON grammars).
"""

from __future__ import annotations

import json
import os
import threading
from dataclasses import dataclass

import torch
from torch import Tensor

from lorakit.errors import LorakitError

# The JSON compiler options of every response format (see the module docstring).
_JSON_OPTIONS = {"whitespace_flexible": False}
_SHIFTS = torch.arange(32, dtype=torch.int32)


def grammar_for(response_format: dict | None) -> str | None:
    """The llguidance grammar of an OpenAI ``response_format`` (``None``: unconstrained text).

    Accepts ``{"type": "text"}``, ``{"type": "json_object"}`` and ``{"type": "json_schema",
    "json_schema": {"name": ..., "schema": {...}, "strict": ...}}``; anything else raises ``ValueError``.
    """
    import llguidance

    if response_format is None:
        return None
    if not isinstance(response_format, dict):
        raise LorakitError(f"response_format must be an object, got {type(response_format).__name__}")
    kind = response_format.get("type")
    if kind in (None, "text"):
        return None
    if kind == "json_object":
        schema: object = {"type": "object"}
    elif kind == "json_schema":
        spec = response_format.get("json_schema")
        if not isinstance(spec, dict) or not isinstance(spec.get("schema", {}), dict | bool):
            raise LorakitError("response_format json_schema needs {'json_schema': {'name': ..., 'schema': {...}}}")
        schema = spec.get("schema", {})
    else:
        raise LorakitError(f"response_format type {kind!r} is not supported; use 'text', 'json_object' or 'json_schema'")
    try:
        return llguidance.LLMatcher.grammar_from_json_schema(json.dumps(schema), overrides=_JSON_OPTIONS)
    except (ValueError, TypeError) as exc:
        raise LorakitError(f"invalid JSON schema in response_format: {exc}") from None


class _TokenBytes:
    """llguidance's generic tokenizer protocol for tokenizers it cannot read itself (e.g. WordLevel)."""

    def __init__(self, tokenizer, n_vocab: int, eos_ids: list[int]) -> None:
        special = set(tokenizer.all_special_ids)
        self.eos_token_id = eos_ids[0]
        self.bos_token_id = tokenizer.bos_token_id
        self.special_token_ids = sorted(i for i in special if i < n_vocab)
        self.tokens: list[bytes] = []
        for i in range(n_vocab):
            if i >= len(tokenizer):
                self.tokens.append(b"")  # rows of the embedding with no token: never allowed
            elif i in special:  # llguidance marks special tokens with a leading 0xFF byte
                self.tokens.append(b"\xff" + str(tokenizer.convert_ids_to_tokens(i)).encode())
            else:
                self.tokens.append(tokenizer.decode([i], clean_up_tokenization_spaces=False).encode())
        self._tokenizer = tokenizer

    def __call__(self, text: str | bytes) -> list[int]:
        text = text.decode("utf-8", errors="replace") if isinstance(text, bytes) else text
        return list(self._tokenizer(text, add_special_tokens=False)["input_ids"])


class Vocabulary:
    """The tokenizer as llguidance sees it (built once per server, 1-2 s for SmolLM2's 49k vocabulary)."""

    def __init__(self, tokenizer, n_vocab: int, eos_ids: set[int] | list[int]) -> None:
        import llguidance
        import llguidance.hf

        eos = sorted(eos_ids)
        try:  # the fast path: llguidance reads the tokenizer.json itself
            self.ll = llguidance.hf.from_tokenizer(tokenizer, n_vocab=n_vocab, eos_token=eos)
        except (ValueError, TypeError, RuntimeError):
            wrapper = llguidance.TokenizerWrapper(_TokenBytes(tokenizer, n_vocab, eos))
            self.ll = llguidance.LLTokenizer(wrapper, n_vocab=n_vocab, eos_token=eos)
        self.n_vocab = n_vocab
        self._known = len(tokenizer)  # embedding rows past the tokenizer's vocabulary stand for no text
        self.executor = llguidance.LLExecutor(num_threads=max(1, min(4, os.cpu_count() or 1)))
        self._bytes: dict[int, bytes] = {}

    def token_bytes(self, token: int) -> bytes:
        """The exact bytes a token stands for (a special token: its name)."""
        cached = self._bytes.get(token)
        if cached is None:
            cached = self._bytes[token] = self.ll.decode_bytes([token]) if token < self._known else b""
        return cached

    def constraint(self, grammar: str) -> Constraint:
        """A fresh matcher for one request; ``ValueError`` if llguidance refuses the grammar."""
        import llguidance

        matcher = llguidance.LLMatcher(self.ll, grammar, log_level=0)
        if matcher.is_error():
            raise LorakitError(f"invalid response_format: {matcher.get_error()}")
        return Constraint(matcher, self)


class LazyVocabulary:
    """Builds the :class:`Vocabulary` on first use, once, from any thread."""

    def __init__(self, tokenizer, n_vocab: int, eos_ids: set[int]) -> None:
        self._args = (tokenizer, n_vocab, eos_ids)
        self._value: Vocabulary | None = None
        self._lock = threading.Lock()

    def get(self) -> Vocabulary:
        """The vocabulary (built now if needed)."""
        if self._value is None:
            with self._lock:
                if self._value is None:
                    self._value = Vocabulary(*self._args)
        return self._value


@dataclass
class Constraint:
    """One request's grammar state: which tokens may come next."""

    matcher: object  # llguidance.LLMatcher
    vocab: Vocabulary

    def advance(self, token: int) -> None:
        """Consume the chosen token; ``RuntimeError`` if the grammar cannot take it (a bug)."""
        if not self.matcher.consume_token(token):
            raise RuntimeError(f"grammar rejected token {token}: {self.matcher.get_error()}")

    @property
    def error(self) -> str | None:
        """Why the matcher failed, or None."""
        return self.matcher.get_error() if self.matcher.is_error() else None


@dataclass
class TokenMasks:
    """Allowed-token bitmasks of some rows of a batch: ``bits (k, ceil(V/32))`` int32, rows ``(k,)``."""

    rows: Tensor
    bits: Tensor

    def allowed(self, vocab: int) -> Tensor:
        """``(k, vocab)`` bool: True where the token may come next."""
        unpacked = (self.bits.unsqueeze(-1) >> _SHIFTS) & 1  # (k, words, 32), bit j of word w = token 32w+j
        allowed = unpacked.reshape(self.bits.shape[0], -1).bool()
        if allowed.shape[1] < vocab:
            allowed = torch.nn.functional.pad(allowed, (0, vocab - allowed.shape[1]))
        return allowed[:, :vocab]

    def apply(self, logits: Tensor) -> Tensor:
        """``logits (rows, vocab)`` with every disallowed token of the masked rows at -inf (a new tensor)."""
        rows = self.rows.to(logits.device)
        allowed = self.allowed(logits.shape[1]).to(logits.device)
        out = logits.clone()
        out[rows] = logits.index_select(0, rows).masked_fill(~allowed, float("-inf"))
        return out


def token_masks(constraints: list[tuple[int, Constraint]]) -> TokenMasks:
    """The next-token masks of ``(row, constraint)`` pairs, computed in parallel by llguidance."""
    vocab = constraints[0][1].vocab
    words = (vocab.n_vocab + 31) // 32
    bits = torch.full((len(constraints), words), -1, dtype=torch.int32)
    # What llguidance.torch.fill_next_token_bitmask_par does; that module is not imported because it
    # wraps a kernel in torch.compile at import, which loads dynamo (seconds, measured) for nothing.
    vocab.executor.unsafe_compute_mask_ptr([(c.matcher, k) for k, (_, c) in enumerate(constraints)],
                                           bits.data_ptr(), words * 4, len(constraints))
    return TokenMasks(torch.tensor([row for row, _ in constraints]), bits)

"""Tokenize examples and collate them into right-padded training batches.

``transformers`` is never imported here: collators work on the tokenizer object they are given
(anything that behaves like a ``PreTrainedTokenizerFast``, see ``TokenizerLike``).

Causal-LM layout of one example, padded on the right to the longest sequence of the batch (rounded up to
a multiple of ``pad_multiple``, see :func:`padded_width`)::

    input_ids  = [ prompt tokens | completion tokens | EOS | pad ... ]
    labels     = [ -100 ...      | completion tokens | EOS | -100 ... ]

so the loss covers only what the model must produce. The prompt prefix comes from ``encode_prompt``,
the same function used at generation time, so what the model is conditioned on when generating is
token-for-token the prefix it was trained on.

Two prompt formats:

- chat (the tokenizer has a chat template and ``use_chat_template`` is not False): the prompt is a user
  message rendered with ``add_generation_prompt=True``; the rendered text already holds any BOS token,
  so it is tokenized with ``add_special_tokens=False`` (what ``apply_chat_template`` itself does).
- plain: ``prompt + "\\n"`` tokenized with the tokenizer's special tokens (e.g. a BOS); the newline
  separates input from answer so that generation knows where the answer starts.

The completion is tokenized on its own (``add_special_tokens=False``) and followed by EOS, so the model
learns to stop.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol

import torch

from lorakit.data.chat import encode_conversation, truncate_conversation
from lorakit.data.examples import ClassificationExample, GenerationExample
from lorakit.errors import LorakitError

IGNORE_INDEX = -100  # label value that torch's cross-entropy (and Hugging Face models) skip
PLAIN_SEPARATOR = "\n"  # ends a plain (non-chat) prompt


class TokenizerLike(Protocol):
    """The part of a Hugging Face tokenizer that the collators use."""

    eos_token_id: int | None
    pad_token_id: int | None
    chat_template: str | None

    def __call__(self, text: Any, **kwargs: Any) -> Mapping[str, Any]: ...

    def apply_chat_template(self, conversation: Any, **kwargs: Any) -> Any: ...


def resolve_pad_id(tokenizer: TokenizerLike) -> int:
    """The padding id: the tokenizer's pad token, else its EOS (padding is masked out either way)."""
    for token_id in (getattr(tokenizer, "pad_token_id", None), getattr(tokenizer, "eos_token_id", None)):
        if token_id is not None:
            return int(token_id)
    raise LorakitError("the tokenizer has neither a pad token nor an EOS token; set tokenizer.pad_token")


def wants_chat_template(tokenizer: TokenizerLike, use_chat_template: bool | None) -> bool:
    """Decide the prompt format: None means "chat if the tokenizer has a template"."""
    has_template = bool(getattr(tokenizer, "chat_template", None))
    if use_chat_template and not has_template:
        raise LorakitError("use_chat_template=True but the tokenizer has no chat_template")
    return has_template if use_chat_template is None else bool(use_chat_template)


def encode_prompt(
    tokenizer: TokenizerLike,
    prompt: str | Sequence[Mapping[str, str]],
    use_chat_template: bool | None = None,
) -> list[int]:
    """Token ids of the prompt prefix, exactly as the training collator builds it.

    ``prompt`` is the user text, or a chat history (``GenerationExample.context``) ending before the
    assistant's answer. Without a chat template a history is reduced to its last user message, which is
    also what ``GenerationExample.prompt`` holds, so both paths agree.
    """
    if wants_chat_template(tokenizer, use_chat_template):
        messages = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else list(prompt)
        # Render to text and tokenize ourselves: the return type of apply_chat_template(tokenize=True)
        # differs between transformers versions (list vs BatchEncoding).
        text = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        return list(tokenizer(text, add_special_tokens=False)["input_ids"])
    if not isinstance(prompt, str):
        users = [m["content"] for m in prompt if m.get("role") == "user"]
        if not users:
            raise LorakitError("a chat history without a chat template needs at least one user message")
        prompt = users[-1]
    return list(tokenizer(prompt + PLAIN_SEPARATOR, add_special_tokens=True)["input_ids"])


def truncate_pair(prompt: list[int], completion: list[int], max_length: int) -> tuple[list[int], list[int]]:
    """Fit prompt + completion into ``max_length`` tokens.

    The prompt is kept whole and the completion is cut from the right (dropping EOS is right: a cut
    answer must not teach the model to stop there). Only if the prompt alone leaves no room is it cut
    from the *left*, keeping its end (the part next to the answer, e.g. the chat generation prompt) and
    exactly one completion token, so an example never contributes zero loss tokens.
    """
    if max_length < 2:
        raise LorakitError(f"max_length must be >= 2 (a prompt token and a completion token), got {max_length}")
    if len(prompt) + len(completion) <= max_length:
        return prompt, completion
    if len(prompt) < max_length:
        return prompt, completion[: max_length - len(prompt)]
    keep = max_length - 1
    return prompt[len(prompt) - keep :], completion[:1]


def padded_width(lengths: Sequence[int], multiple: int = 1, cap: int | None = None) -> int:
    """The batch width: the longest length rounded up to a multiple of ``multiple``, never past ``cap``.

    Why round at all: with right padding to the exact longest sequence nearly every step has a new
    shape, and glibc's allocator then keeps the freed activation blocks of each size apart; a process
    that trains several adapters (``train-many``) or long runs of varied lengths grows resident
    memory step after step. A handful of widths lets freed blocks be reused (measured in
    benchmarks/README, "train-many"). The padded positions are masked (attention mask, ignored labels),
    so the loss and gradients are the unpadded ones up to rounding.
    """
    if multiple < 1:
        raise LorakitError(f"pad multiple must be >= 1, got {multiple}")
    longest = max(lengths, default=0)
    width = -(-longest // multiple) * multiple
    return max(longest, min(width, cap)) if cap is not None else width


def pad_right(sequences: Sequence[Sequence[int]], value: int, width: int | None = None) -> torch.Tensor:
    """Stack sequences into a ``(len(sequences), width)`` ``long`` tensor, padded on the right with ``value``.

    ``width`` defaults to the longest sequence.
    """
    if width is None:
        width = max((len(s) for s in sequences), default=0)
    out = torch.full((len(sequences), width), value, dtype=torch.long)
    for row, seq in enumerate(sequences):
        out[row, : len(seq)] = torch.tensor(list(seq), dtype=torch.long)
    return out


def _attention_mask(lengths: Sequence[int], width: int) -> torch.Tensor:
    return (torch.arange(width)[None, :] < torch.tensor(list(lengths))[:, None]).long()


class ClassificationCollator:
    """``list[ClassificationExample]`` → ``{input_ids, attention_mask, labels}``, padded right.

    Texts are tokenized with the tokenizer's special tokens and truncated to ``max_length``. With
    right padding, a causal-LM classifier must pool at the last non-pad position (Hugging Face's
    ``*ForSequenceClassification`` does, given ``config.pad_token_id``).
    """

    def __init__(self, tokenizer: TokenizerLike, max_length: int, pad_multiple: int = 1) -> None:
        if max_length < 1:
            raise LorakitError(f"max_length must be >= 1, got {max_length}")
        padded_width([], pad_multiple)  # checks it
        self.tokenizer = tokenizer
        self.max_length = max_length
        self.pad_multiple = pad_multiple
        self.pad_id = resolve_pad_id(tokenizer)

    def __call__(self, examples: Sequence[ClassificationExample]) -> dict[str, torch.Tensor]:
        """Tokenize, truncate and pad one batch."""
        if not examples:
            raise LorakitError("cannot collate an empty batch")
        encoded = self.tokenizer(
            [e.text for e in examples], truncation=True, max_length=self.max_length, add_special_tokens=True
        )["input_ids"]
        lengths = [len(ids) for ids in encoded]
        width = padded_width(lengths, self.pad_multiple, self.max_length)
        return {
            "input_ids": pad_right(encoded, self.pad_id, width),
            "attention_mask": _attention_mask(lengths, width),
            "labels": torch.tensor([e.label for e in examples], dtype=torch.long),
        }


class CausalLMCollator:
    """``list[GenerationExample]`` → ``{input_ids, attention_mask, labels}`` with loss on completions only.

    See the module docstring for the layout; ``use_chat_template`` is None (auto), True or False.
    """

    def __init__(
        self, tokenizer: TokenizerLike, max_length: int, use_chat_template: bool | None = None,
        pad_multiple: int = 1,
    ) -> None:
        if max_length < 2:
            raise LorakitError(f"max_length must be >= 2, got {max_length}")
        padded_width([], pad_multiple)  # checks it
        self.pad_multiple = pad_multiple
        if getattr(tokenizer, "eos_token_id", None) is None:
            raise LorakitError(
                "the tokenizer has no EOS token, needed to end completions; set tokenizer.eos_token"
            )
        self.tokenizer = tokenizer
        self.max_length = max_length
        self.use_chat_template = wants_chat_template(tokenizer, use_chat_template)
        self.pad_id = resolve_pad_id(tokenizer)

    def encode(self, example: GenerationExample) -> tuple[list[int], list[int]]:
        """Return ``(input_ids, labels)`` of one example, truncated, unpadded.

        A chat example (``messages``) with a chat template learns every assistant turn
        (:mod:`lorakit.data.chat`); otherwise the prompt is masked and the completion learned.
        """
        if self.use_chat_template and example.messages:
            ids, labels = encode_conversation(self.tokenizer, example.messages)
            return truncate_conversation(ids, labels, self.max_length)
        context = example.context if self.use_chat_template else example.prompt
        prompt = encode_prompt(self.tokenizer, context, self.use_chat_template)
        completion = list(self.tokenizer(example.completion, add_special_tokens=False)["input_ids"])
        completion.append(int(self.tokenizer.eos_token_id))
        prompt, completion = truncate_pair(prompt, completion, self.max_length)
        return prompt + completion, [IGNORE_INDEX] * len(prompt) + completion

    def __call__(self, examples: Sequence[GenerationExample]) -> dict[str, torch.Tensor]:
        """Tokenize, truncate, mask and pad one batch."""
        if not examples:
            raise LorakitError("cannot collate an empty batch")
        pairs = [self.encode(e) for e in examples]
        lengths = [len(ids) for ids, _ in pairs]
        width = padded_width(lengths, self.pad_multiple, self.max_length)
        return {
            "input_ids": pad_right([ids for ids, _ in pairs], self.pad_id, width),
            "attention_mask": _attention_mask(lengths, width),
            "labels": pad_right([labels for _, labels in pairs], IGNORE_INDEX, width),
        }

"""Multi-turn conversations → token ids with the loss on every assistant turn (and nothing else).

The chat template is rendered once per assistant turn ``i``::

    before_i = render(messages[:i], add_generation_prompt=True)   # everything up to where turn i starts
    after_i  = render(messages[:i + 1])                             # ... and turn i itself

Turn ``i``'s text is ``after_i[len(before_i):]``: its content plus the template's end-of-turn marker
(e.g. SmolLM2's ``<|im_end|>``); trailing whitespace after the marker is not learned (generation stops at
the marker). Templates whose renderings are not prefixes of each other (some drop earlier reasoning
from the history) are refused with a clear error instead of being trained on misaligned spans.

The conversation is tokenized piece by piece (``add_special_tokens=False``, as ``apply_chat_template``
does): system/user/tool pieces get label ``-100``, assistant pieces are their own labels. Tokenizing the
pieces separately makes the boundaries exact, and each assistant turn is tokenized as it is generated,
starting right after the generation prompt. If the last turn does not end in EOS (a template without
an end marker), EOS is appended so the model learns to stop, as for plain prompt/completion pairs.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from lorakit.errors import LorakitError

IGNORE_INDEX = -100


def conversation_pieces(tokenizer: Any, messages: Sequence[Mapping[str, str]]) -> list[tuple[str, bool]]:
    """The rendered conversation as ``(text, is_assistant)`` pieces whose concatenation is the whole."""
    msgs = [dict(m) for m in messages]
    full = tokenizer.apply_chat_template(msgs, tokenize=False)
    pieces: list[tuple[str, bool]] = []
    done = 0  # characters of ``full`` already assigned to pieces
    for i, message in enumerate(msgs):
        if message["role"] != "assistant":
            continue
        before = tokenizer.apply_chat_template(msgs[:i], tokenize=False, add_generation_prompt=True) if i else ""
        after = tokenizer.apply_chat_template(msgs[: i + 1], tokenize=False)
        if not (after.startswith(before) and full.startswith(after) and len(before) >= done):
            raise LorakitError(
                "the chat template does not render conversations as a growing prefix (turn "
                f"{i} changes earlier text), so assistant turns cannot be located; train on single-turn "
                "examples or use a template that keeps the history verbatim"
            )
        turn = after[len(before):]
        end = len(before) + len(turn.rstrip())
        pieces.append((full[done:len(before)], False))
        pieces.append((full[len(before):end], True))
        done = end
    pieces.append((full[done:], False))
    return [(text, learn) for text, learn in pieces if text]


def encode_conversation(tokenizer: Any, messages: Sequence[Mapping[str, str]]) -> tuple[list[int], list[int]]:
    """``(input_ids, labels)`` of a whole conversation: labels are the assistant tokens, ``-100`` elsewhere."""
    ids: list[int] = []
    labels: list[int] = []
    for text, learn in conversation_pieces(tokenizer, messages):
        piece = list(tokenizer(text, add_special_tokens=False)["input_ids"])
        ids += piece
        labels += piece if learn else [IGNORE_INDEX] * len(piece)
    start, end = _last_learned_run(labels)
    eos = int(tokenizer.eos_token_id)
    if end and eos not in ids[start:end]:  # no end marker in the last assistant turn: end it with EOS
        ids.insert(end, eos)
        labels.insert(end, eos)
    return ids, labels


def _last_learned_run(labels: list[int]) -> tuple[int, int]:
    """``[start, end)`` of the last run of learned labels (``(0, 0)`` when there is none)."""
    end = next((i + 1 for i in range(len(labels) - 1, -1, -1) if labels[i] != IGNORE_INDEX), 0)
    start = end
    while start > 0 and labels[start - 1] != IGNORE_INDEX:
        start -= 1
    return start, end


def truncate_conversation(ids: list[int], labels: list[int], max_length: int) -> tuple[list[int], list[int]]:
    """Keep the first ``max_length`` tokens; if that leaves no learned token, keep the window that ends
    with the first assistant token instead (so every example contributes to the loss)."""
    if len(ids) <= max_length:
        return ids, labels
    if any(label != IGNORE_INDEX for label in labels[1:max_length]):
        return ids[:max_length], labels[:max_length]
    first = next(i for i, label in enumerate(labels) if label != IGNORE_INDEX)
    start = first + 1 - max_length
    return ids[start:first + 1], labels[start:first + 1]

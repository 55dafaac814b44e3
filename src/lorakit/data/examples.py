"""Examples and data sets: the plain values that every reader produces and every collator consumes.

Two tasks exist: ``"classify"`` (text → one of ``num_labels`` integer labels) and ``"generate"``
(prompt → completion, scored against one or more references). Examples are frozen so that a split,
once read, can be shared between the training loop and the evaluator without defensive copies.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

from lorakit.errors import LorakitError

Task = Literal["classify", "generate"]
TASKS: tuple[str, ...] = ("classify", "generate")
# Roles a chat message may have; anything else is almost certainly a typo in the data file.
CHAT_ROLES: tuple[str, ...] = ("system", "user", "assistant", "tool")


@dataclass(frozen=True)
class ClassificationExample:
    """One text with its integer label (``0 <= label < num_labels`` of the owning data set)."""

    text: str  # the input text, non-empty
    label: int  # class index; names live in Dataset.label_names

    def __post_init__(self) -> None:
        if not isinstance(self.text, str) or not self.text.strip():
            raise LorakitError(f"text must be a non-empty string, got {self.text!r}")
        # bool is an int subclass; a True/False label is a data error, not class 1/0.
        if isinstance(self.label, bool) or not isinstance(self.label, int) or self.label < 0:
            raise LorakitError(f"label must be a non-negative int, got {self.label!r}")


@dataclass(frozen=True)
class GenerationExample:
    """A prompt and the completion the model should learn to produce.

    ``references`` holds every acceptable output for this input (for multi-reference metrics such as
    E2E's BLEU); it may be empty for training-only data. ``messages`` is set for chat data: the whole
    conversation as ``{"role", "content"}`` dicts whose last entry is the assistant turn equal to
    ``completion``; ``prompt`` is then the content of the last user turn (used when a tokenizer has no
    chat template).
    """

    prompt: str  # the user text
    completion: str  # the target text (without EOS; collators add it)
    references: tuple[str, ...] = ()  # all references for this input, completion usually among them
    messages: tuple[dict[str, str], ...] = ()  # chat form; empty for plain prompts

    def __post_init__(self) -> None:
        if not isinstance(self.prompt, str) or not self.prompt.strip():
            raise LorakitError(f"prompt must be a non-empty string, got {self.prompt!r}")
        if not isinstance(self.completion, str) or not self.completion.strip():
            raise LorakitError(f"completion must be a non-empty string, got {self.completion!r}")
        if not all(isinstance(r, str) for r in self.references):
            raise LorakitError(f"references must be strings, got {self.references!r}")
        # Normalise lists to tuples so the frozen example really is immutable from the outside.
        object.__setattr__(self, "references", tuple(self.references))
        if self.messages:
            msgs = tuple(check_message(m) for m in self.messages)
            object.__setattr__(self, "messages", msgs)
            last = msgs[-1]
            if last["role"] != "assistant" or last["content"] != self.completion:
                raise LorakitError("the last message must be the assistant turn equal to completion")

    @property
    def context(self) -> str | tuple[dict[str, str], ...]:
        """What the model sees before the completion: the messages before the last one, or the prompt."""
        return self.messages[:-1] if self.messages else self.prompt

    @classmethod
    def from_messages(
        cls, messages: Sequence[Mapping[str, str]], references: Sequence[str] = ()
    ) -> GenerationExample:
        """Build an example from a chat whose last message is the assistant's answer."""
        msgs = tuple(check_message(m) for m in messages)
        if len(msgs) < 2 or msgs[-1]["role"] != "assistant":
            raise LorakitError("messages need at least a user turn and end with an assistant turn")
        users = [m["content"] for m in msgs[:-1] if m["role"] == "user"]
        if not users:
            raise LorakitError("messages have no user turn before the last assistant turn")
        return cls(
            prompt=users[-1], completion=msgs[-1]["content"], references=tuple(references), messages=msgs
        )


def check_message(message: Mapping[str, str]) -> dict[str, str]:
    """Return a plain ``{"role", "content"}`` copy of a chat message, or raise ValueError."""
    if not isinstance(message, Mapping):
        raise LorakitError(f"a message must be an object with role and content, got {message!r}")
    role, content = message.get("role"), message.get("content")
    if role not in CHAT_ROLES:
        raise LorakitError(f"message role must be one of {list(CHAT_ROLES)}, got {role!r}")
    if not isinstance(content, str):
        raise LorakitError(f"message content must be a string, got {content!r}")
    return {"role": role, "content": content}


@dataclass
class Dataset:
    """One split of one data set, fully read into memory (the largest here is ~10k lines)."""

    name: str  # recipe name ("sst2") or the file path it came from
    split: str  # "train", "dev", "test" (or the file's stem for generic files)
    task: Task  # "classify" or "generate"
    examples: list  # list[ClassificationExample] or list[GenerationExample]
    num_labels: int | None = None  # classify only: labels are 0..num_labels-1
    label_names: list[str] | None = None  # classify only: label_names[i] names label i
    info: str = ""  # provenance: files, split rule and seed, label mapping, decoding fallbacks
    bad_rows: tuple[str, ...] = ()  # "file:line: reason" of every row skipped (skip_bad_rows), in file order

    def __post_init__(self) -> None:
        if self.task not in TASKS:
            raise LorakitError(f"task must be one of {list(TASKS)}, got {self.task!r}")
        kind = ClassificationExample if self.task == "classify" else GenerationExample
        bad = next((e for e in self.examples if not isinstance(e, kind)), None)
        if bad is not None:
            raise LorakitError(f"a {self.task} data set holds {kind.__name__}s, got {type(bad).__name__}")
        if self.task == "classify":
            if self.num_labels is None or self.num_labels < 1:
                raise LorakitError(f"a classify data set needs num_labels >= 1, got {self.num_labels!r}")
            if self.label_names is not None and len(self.label_names) != self.num_labels:
                raise LorakitError(
                    f"label_names has {len(self.label_names)} names for {self.num_labels} labels"
                )
            top = max((e.label for e in self.examples), default=-1)
            if top >= self.num_labels:
                raise LorakitError(f"label {top} out of range for num_labels={self.num_labels}")
        elif self.num_labels is not None or self.label_names is not None:
            raise LorakitError("num_labels and label_names are for classify data sets only")

    def __len__(self) -> int:
        return len(self.examples)

"""Record formats of generic data files, and what one row of each becomes.

A JSON record (or CSV/TSV row) is recognised by its keys; the first row of a file decides the format
and later rows must follow it (unless the column options force one):

==========  =====================================================  ==========================
format      keys                                                   becomes
==========  =====================================================  ==========================
classify    ``text``, ``label``                                    ClassificationExample
generate    ``prompt``, ``completion`` (``references`` optional)   GenerationExample
chat        ``messages``: ``[{"role", "content"}, ...]``           GenerationExample (all turns)
alpaca      ``instruction``, ``output`` (``input`` optional)       GenerationExample
sharegpt    ``conversations``: ``[{"from", "value"}, ...]``        GenerationExample (all turns)
==========  =====================================================  ==========================

Alpaca's prompt is the instruction, then a blank line and the input when there is one (the Stanford
Alpaca data's own layout without its preamble: the chat template supplies the framing). ShareGPT's
speaker names map to chat roles by :data:`SHAREGPT_ROLES`.

Every problem with a single row raises :class:`RowError`; the file reader turns it into a
``file:line`` error or, with ``skip_bad_rows``, into a counted skipped row.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from lorakit.errors import LorakitError

FORMATS: tuple[str, ...] = ("classify", "generate", "chat", "alpaca", "sharegpt")
# ShareGPT speaker ("from") -> chat role. The names seen in the public ShareGPT/Vicuna/OpenHermes dumps.
SHAREGPT_ROLES: dict[str, str] = {
    "system": "system", "human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant",
    "chatgpt": "assistant", "bard": "assistant", "bing": "assistant", "model": "assistant",
    "tool": "tool", "function": "tool", "observation": "tool",
}


class RowError(LorakitError):
    """One row is malformed; the message says why (without the file and line, which the reader adds)."""


@dataclass(frozen=True)
class Columns:
    """Column (or JSON key) names; ``None`` means the default and lets the format be detected."""

    text: str | None = None
    label: str | None = None
    prompt: str | None = None
    completion: str | None = None

    def forced_task(self) -> str | None:
        """The task the options ask for, or None when they leave it to the file's columns."""
        classify = self.text is not None or self.label is not None
        generate = self.prompt is not None or self.completion is not None
        if classify and generate:
            raise LorakitError("text/label columns and prompt/completion columns exclude each other")
        return "classify" if classify else "generate" if generate else None

    def names(self, task: str) -> tuple[str, str]:
        """The two columns a classify or generate row is read from."""
        if task == "classify":
            return self.text or "text", self.label or "label"
        return self.prompt or "prompt", self.completion or "completion"


@dataclass(frozen=True)
class Record:
    """One parsed input row before labels are mapped to ints and examples are built."""

    line: int
    text: str = ""
    label: object = None
    prompt: str = ""
    completion: str = ""
    references: tuple[str, ...] = ()
    messages: tuple = ()


def detect_format(keys: list[str], columns: Columns) -> str | None:
    """The format of a row with ``keys``, or None when the keys fit none of them."""
    forced = columns.forced_task()
    if forced is not None:
        return forced
    if "messages" in keys:
        return "chat"
    if "conversations" in keys:
        return "sharegpt"
    if "instruction" in keys and "output" in keys:
        return "alpaca"
    if "text" in keys and "label" in keys:
        return "classify"
    if "prompt" in keys and "completion" in keys:
        return "generate"
    return None


def undetectable(keys: list[str]) -> str:
    """The message for a row whose format cannot be told."""
    return (f"cannot tell the format from columns {keys}; expected text,label or prompt,completion, "
            f"messages (chat), instruction,output (alpaca) or conversations (ShareGPT), or pass "
            f"--text-column/--label-column or --prompt-column/--completion-column")


def parse_row(fmt: str, obj: dict[str, Any], line: int, columns: Columns) -> Record:
    """Turn one row of format ``fmt`` into a :class:`Record`, or raise :class:`RowError`."""
    if fmt == "chat":
        return Record(line, messages=_message_list(_key(obj, "messages", "chat")), references=_references(obj))
    if fmt == "sharegpt":
        turns = _key(obj, "conversations", "ShareGPT")
        return Record(line, messages=tuple(_sharegpt_message(t) for t in _as_list(turns, "conversations")),
                      references=_references(obj))
    if fmt == "alpaca":
        instruction, output = _key(obj, "instruction", "alpaca"), _key(obj, "output", "alpaca")
        extra = obj.get("input") or ""
        if not isinstance(instruction, str) or not isinstance(extra, str):
            raise RowError("alpaca 'instruction' and 'input' must be strings")
        prompt = f"{instruction}\n\n{extra}" if extra.strip() else instruction
        return Record(line, prompt=prompt, completion=output, references=_references(obj))
    a_name, b_name = columns.names(fmt)
    a, b = _key(obj, a_name, fmt), _key(obj, b_name, fmt)
    if fmt == "classify":
        if not isinstance(a, str) or not a.strip():
            raise RowError(f"{a_name} must be a non-empty string, got {a!r}")
        return Record(line, text=a, label=check_label(b))
    return Record(line, prompt=a, completion=b, references=_references(obj))


def check_label(value: object) -> int | str:
    """A raw label must be a non-negative int or a non-empty string (bool is not an int here)."""
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    if isinstance(value, str) and value.strip():
        return value.strip()
    raise RowError(f"label {value!r} is neither a non-negative int nor a non-empty string")


def _key(obj: dict[str, Any], name: str, fmt: str) -> Any:
    if name not in obj:
        earlier = f" (earlier rows are {fmt})" if fmt in ("chat", "sharegpt", "alpaca") else ""
        raise RowError(f"missing key {name!r}{earlier}; keys are {sorted(obj)}")
    return obj[name]


def _as_list(value: object, name: str) -> list:
    if not isinstance(value, list):
        raise RowError(f"{name!r} must be a list, got {type(value).__name__}")
    return value


def _message_list(value: object) -> tuple:
    return tuple(_as_list(value, "messages"))


def _sharegpt_message(turn: object) -> dict[str, Any]:
    if not isinstance(turn, dict) or "from" not in turn or "value" not in turn:
        raise RowError(f"a ShareGPT turn must be an object with 'from' and 'value', got {turn!r}")
    role = SHAREGPT_ROLES.get(str(turn["from"]).lower())
    if role is None:
        raise RowError(f"unknown ShareGPT speaker {turn['from']!r}; known: {sorted(SHAREGPT_ROLES)}")
    return {"role": role, "content": turn["value"]}


def _references(obj: dict[str, Any]) -> tuple[str, ...]:
    refs = obj.get("references", [])
    if not isinstance(refs, list) or not all(isinstance(r, str) for r in refs):
        raise RowError("'references' must be a list of strings")
    return tuple(refs)

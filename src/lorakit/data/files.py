"""Generic data files: JSONL, CSV and TSV, for classification or generation.

JSONL records are ``{"text", "label"}``, ``{"prompt", "completion"}`` (optionally ``"references"``:
a list of strings) or chat ``{"messages": [{"role", "content"}, ...]}`` ending with the assistant turn.
CSV/TSV files have a header row; columns default to ``text,label`` or ``prompt,completion``.

Labels: non-negative integers are used as they are; string labels are mapped to ints in sorted order
and the names are kept in ``Dataset.label_names``. When a *directory* is given, the mapping and
``num_labels`` are computed over all data files in it, so that train, dev and test agree even when a
small split lacks a class.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path

from lorakit.data.examples import ClassificationExample, Dataset, GenerationExample
from lorakit.data.readers import count_fallbacks, read_csv_rows, read_lines

DELIMITERS = {".csv": ",", ".tsv": "\t"}
SUFFIXES = (".jsonl", *DELIMITERS)


@dataclass(frozen=True)
class Columns:
    """Column (or JSON key) names; ``None`` means the default and lets the task be detected."""

    text: str | None = None
    label: str | None = None
    prompt: str | None = None
    completion: str | None = None

    def forced_task(self) -> str | None:
        """The task the options ask for, or None when they leave it to the file's columns."""
        classify = self.text is not None or self.label is not None
        generate = self.prompt is not None or self.completion is not None
        if classify and generate:
            raise ValueError("text/label columns and prompt/completion columns exclude each other")
        return "classify" if classify else "generate" if generate else None


@dataclass(frozen=True)
class _Record:
    """One parsed input row before labels are mapped to ints."""

    line: int
    text: str = ""
    label: object = None
    prompt: str = ""
    completion: str = ""
    references: tuple[str, ...] = ()
    messages: tuple = ()


def find_split_file(directory: Path, split: str) -> Path:
    """Return ``directory/{split}.jsonl|csv|tsv``; exactly one of them must exist."""
    found = [
        directory / f"{split}{suffix}" for suffix in SUFFIXES if (directory / f"{split}{suffix}").is_file()
    ]
    if len(found) == 1:
        return found[0]
    if found:
        raise ValueError(f"{directory}: several files for split {split!r}: {[p.name for p in found]}")
    present = sorted(p.name for p in directory.iterdir() if p.suffix in SUFFIXES)
    raise ValueError(f"{directory}: no {split}.jsonl/.csv/.tsv; data files present: {present}")


def load_file(path: str | Path, split: str = "train", columns: Columns | None = None) -> Dataset:
    """Read a generic data file, or ``{split}.*`` from a directory, into a Dataset."""
    columns = columns or Columns()
    path = Path(path)
    siblings = [path]
    if path.is_dir():
        siblings = sorted(p for p in path.iterdir() if p.is_file() and p.suffix in SUFFIXES)
        path = find_split_file(path, split)
    elif path.suffix not in SUFFIXES:
        raise ValueError(f"{path}: unsupported file type {path.suffix!r}; use one of {list(SUFFIXES)}")
    else:
        split = path.stem  # a file is its own split; the split argument does not apply
    task, records, fallbacks = _read_records(path, columns)
    note = f" {fallbacks} line(s) were not UTF-8 and were decoded as cp1252/ISO-8859-1." if fallbacks else ""
    if task == "generate":
        examples = [_generation_example(path, r) for r in records]
        info = f"{path}: {len(examples)} generation examples.{note}"
        return Dataset(str(path), split, "generate", examples, info=info)
    # Labels from every classification file of the directory, so all splits share one mapping.
    labeled = [(path, r) for r in records]
    for sibling in siblings:
        if sibling != path:
            sibling_task, sibling_records, _ = _read_records(sibling, columns)
            if sibling_task == "classify":
                labeled += [(sibling, r) for r in sibling_records]
    to_int, num_labels, names = _label_mapping(labeled)
    examples = []
    for r in records:
        try:
            examples.append(ClassificationExample(r.text, to_int(r.label)))
        except ValueError as err:
            raise ValueError(f"{path}:{r.line}: {err}") from err
    scope = "this file" if len(siblings) == 1 else f"all data files in {path.parent}"
    shown = ", ".join(f"{i}={n}" for i, n in enumerate(names)) if names else f"0..{num_labels - 1} as given"
    info = f"{path}: {len(examples)} examples; labels {shown} (from {scope}).{note}"
    return Dataset(str(path), split, "classify", examples, num_labels, names, info)


def _read_records(path: Path, columns: Columns) -> tuple[str, list[_Record], int]:
    """Parse a JSONL or CSV/TSV file into raw records; return ``(task, records, fallback_lines)``."""
    if path.suffix == ".jsonl":
        return _read_jsonl(path, columns)
    header, rows, fallbacks = read_csv_rows(path, DELIMITERS[path.suffix])
    task = columns.forced_task() or _detect_task(path, 1, header)
    names = _names(columns, task)
    for name in names:
        if name not in header:
            raise ValueError(f"{path}:1: missing column {name!r}; columns are {header}")
    records = []
    for number, row in rows:
        values = [row[name] for name in names]
        if task == "classify":
            records.append(
                _Record(number, text=values[0], label=_check_label(path, number, values[1].strip()))
            )
        else:
            records.append(_Record(number, prompt=values[0], completion=values[1]))
    return task, records, fallbacks


def _read_jsonl(path: Path, columns: Columns) -> tuple[str, list[_Record], int]:
    lines = read_lines(path)
    task, records = columns.forced_task(), []
    for line in lines:
        if not line.text.strip():
            continue  # blank lines carry no record (common at the end of JSONL files)
        try:
            obj = json.loads(line.text)
        except json.JSONDecodeError as err:
            raise ValueError(f"{path}:{line.number}: not valid JSON: {err.msg}") from err
        if not isinstance(obj, dict):
            raise ValueError(f"{path}:{line.number}: expected a JSON object, got {type(obj).__name__}")
        # The first record decides the task (unless the options did); later records must match it.
        if task is None:
            task = "chat" if "messages" in obj else _detect_task(path, line.number, list(obj))
        if task == "chat":
            if "messages" not in obj:
                raise ValueError(f"{path}:{line.number}: missing key 'messages' (earlier records are chat)")
            records.append(
                _Record(
                    line.number,
                    messages=_as_tuple(path, line.number, obj["messages"]),
                    references=_references(path, line.number, obj),
                )
            )
            continue
        names = _names(columns, task)
        for name in names:
            if name not in obj:
                raise ValueError(f"{path}:{line.number}: missing key {name!r}; keys are {sorted(obj)}")
        a, b = obj[names[0]], obj[names[1]]
        if task == "classify":
            records.append(_Record(line.number, text=a, label=_check_label(path, line.number, b)))
        else:
            records.append(
                _Record(line.number, prompt=a, completion=b, references=_references(path, line.number, obj))
            )
    if task is None:
        raise ValueError(f"{path}:1: no records in file")
    return ("generate" if task == "chat" else task), records, count_fallbacks(lines)


def _detect_task(path: Path, line: int, keys: list[str]) -> str:
    if "text" in keys and "label" in keys:
        return "classify"
    if "prompt" in keys and "completion" in keys:
        return "generate"
    raise ValueError(
        f"{path}:{line}: cannot tell the task from columns {keys}; expected text,label or "
        f"prompt,completion (or messages), or pass text_column/label_column/prompt_column/completion_column"
    )


def _names(columns: Columns, task: str) -> tuple[str, str]:
    if task == "classify":
        return columns.text or "text", columns.label or "label"
    return columns.prompt or "prompt", columns.completion or "completion"


def _as_tuple(path: Path, line: int, value: object) -> tuple:
    if not isinstance(value, list):
        raise ValueError(f"{path}:{line}: 'messages' must be a list, got {type(value).__name__}")
    return tuple(value)


def _references(path: Path, line: int, obj: dict) -> tuple[str, ...]:
    refs = obj.get("references", [])
    if not isinstance(refs, list) or not all(isinstance(r, str) for r in refs):
        raise ValueError(f"{path}:{line}: 'references' must be a list of strings")
    return tuple(refs)


def _generation_example(path: Path, r: _Record) -> GenerationExample:
    """Build and validate one generation example; errors carry the file and line."""
    try:
        if r.messages:
            example = GenerationExample.from_messages(r.messages, r.references)
        else:
            example = GenerationExample(r.prompt, r.completion, r.references)
    except ValueError as err:
        raise ValueError(f"{path}:{r.line}: {err}") from err
    if not example.references:
        # Every loaded generation example can be scored: without explicit references, the target is one.
        example = replace(example, references=(example.completion,))
    return example


def _check_label(path: Path, line: int, value: object) -> int | str:
    """A raw label must be a non-negative int or a non-empty string (bool is not an int here)."""
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    if isinstance(value, str) and value.strip():
        return value.strip()
    raise ValueError(f"{path}:{line}: label {value!r} is neither a non-negative int nor a non-empty string")


def _is_index(label: int | str) -> bool:
    """An int or an ASCII digit string (``str.isdigit`` alone would accept "²", which int() rejects)."""
    return isinstance(label, int) or (label.isascii() and label.isdigit())


def _label_mapping(labeled: list[tuple[Path, _Record]]) -> tuple:
    """Return ``(to_int, num_labels, label_names)`` for checked raw labels.

    Integers and digit strings (CSV cells, ``"1"`` in JSON) are class indices and may be mixed, e.g. a
    JSONL train file and a CSV dev file in one directory. Otherwise every label is a name; an integer
    among names is ambiguous and an error.
    """
    if not labeled:
        raise ValueError("no labeled records")
    labels = [record.label for _, record in labeled]
    if all(_is_index(label) for label in labels):
        return int, max(int(label) for label in labels) + 1, None
    example = next(label for label in labels if not _is_index(label))
    for path, record in labeled:
        if not isinstance(record.label, str):
            raise ValueError(
                f"{path}:{record.line}: label {record.label!r} is an integer, but other labels are "
                f"names such as {example!r}"
            )
    names = sorted(set(labels))
    index = {name: i for i, name in enumerate(names)}
    return index.__getitem__, len(names), names

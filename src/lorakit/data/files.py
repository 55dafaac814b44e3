"""Generic data files: JSONL, CSV and TSV, for classification or generation.

The record formats (text/label, prompt/completion, chat ``messages``, alpaca, ShareGPT) are described
in :mod:`lorakit.data.formats`. CSV/TSV files have a header row; columns default to ``text,label`` or
``prompt,completion``.

Labels: non-negative integers are used as they are; string labels are mapped to ints in sorted order
and the names are kept in ``Dataset.label_names``. When a *directory* is given, the mapping and
``num_labels`` are computed over all data files in it (and :func:`load_files` shares one mapping over
every file it reads), so that train, dev and test agree even when a small split lacks a class.

Bad rows: a malformed row (invalid JSON, a missing key, an empty text, a bad label, a wrong number
of CSV fields) raises :class:`BadRowError` naming ``file:line``; with ``skip_bad_rows=True`` it is
skipped instead and listed in ``Dataset.bad_rows``, so it is counted and reported, never silent.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from pathlib import Path

from lorakit.data.examples import TASKS, ClassificationExample, Dataset, GenerationExample
from lorakit.data.formats import Columns, Record, RowError, detect_format, parse_row, undetectable
from lorakit.data.readers import count_fallbacks, read_csv_rows, read_lines
from lorakit.errors import LorakitError

DELIMITERS = {".csv": ",", ".tsv": "\t"}
SUFFIXES = (".jsonl", *DELIMITERS)

__all__ = ["SUFFIXES", "BadRowError", "Columns", "find_split_file", "load_file", "load_files", "read_file"]


class BadRowError(LorakitError):
    """A malformed row, named by ``file:line`` (``skip_bad_rows`` skips and counts such rows)."""


@dataclass
class FileRows:
    """One file, parsed: its task, good records and the ``file:line: reason`` of each bad row."""

    path: Path
    task: str  # "classify" or "generate"
    records: list[Record]
    bad: list[str] = field(default_factory=list)
    fallbacks: int = 0  # lines that were not UTF-8


def find_split_file(directory: Path, split: str, required: bool = True) -> Path | None:
    """Return ``directory/{split}.jsonl|csv|tsv``; at most one may exist (``required``: exactly one)."""
    found = [
        directory / f"{split}{suffix}" for suffix in SUFFIXES if (directory / f"{split}{suffix}").is_file()
    ]
    if len(found) == 1:
        return found[0]
    if found:
        raise LorakitError(f"{directory}: several files for split {split!r}: {[p.name for p in found]}")
    if not required:
        return None
    present = sorted(p.name for p in directory.iterdir() if p.suffix in SUFFIXES)
    raise LorakitError(f"{directory}: no {split}.jsonl/.csv/.tsv; data files present: {present}")


def check_suffix(path: Path) -> None:
    """Refuse a file type lorakit cannot read, listing the ones it can."""
    if path.suffix not in SUFFIXES:
        raise LorakitError(f"{path}: unsupported file type {path.suffix!r}; use one of {list(SUFFIXES)}")


def load_file(
    path: str | Path, split: str = "train", columns: Columns | None = None, skip_bad_rows: bool = False
) -> Dataset:
    """Read a generic data file, or ``{split}.*`` from a directory, into a Dataset.

    A single file is read whole as its own split (``split`` is its stem); held-out splits of a single
    file are made by :mod:`lorakit.data.split_plan`.
    """
    path = Path(path)
    if path.is_dir():
        siblings = sorted(p for p in path.iterdir() if p.is_file() and p.suffix in SUFFIXES)
        target = find_split_file(path, split)
        return load_files({split: target}, columns, skip_bad_rows, label_peers=siblings)[split]
    check_suffix(path)
    return load_files({path.stem: path}, columns, skip_bad_rows)[path.stem]


def load_files(
    paths: dict[str, Path], columns: Columns | None = None, skip_bad_rows: bool = False,
    label_peers: list[Path] = (),
) -> dict[str, Dataset]:
    """Read several files (split name → path) of one task with one shared label mapping.

    ``label_peers`` are further files whose labels join the mapping (a directory's other splits).
    """
    columns = columns or Columns()
    read = {split: read_file(path, columns, skip_bad_rows) for split, path in paths.items()}
    tasks = {rows.task for rows in read.values()}
    if len(tasks) > 1:
        listing = ", ".join(f"{rows.path.name}: {rows.task}" for rows in read.values())
        raise LorakitError(f"the data files hold different tasks ({listing})")
    peers = [read_file(p, columns, True) for p in label_peers if p not in {r.path for r in read.values()}]
    labeled = [(rows.path, r) for rows in [*read.values(), *peers] if rows.task == "classify" for r in rows.records]
    mapping = _label_mapping(labeled) if tasks == {"classify"} else None
    scope = "this file" if len(read) + len(peers) == 1 else ", ".join(
        sorted({r.path.name for r in [*read.values(), *peers]}))
    return {split: _dataset(rows, split, mapping, scope) for split, rows in read.items()}


def read_file(path: Path, columns: Columns, skip_bad_rows: bool) -> FileRows:
    """Parse a JSONL or CSV/TSV file into records; bad rows raise or are collected (``skip_bad_rows``)."""
    if not path.is_file():
        raise LorakitError(f"{path}: file not found")
    check_suffix(path)
    if path.suffix == ".jsonl":
        lines = read_lines(path)
        rows = [(line.number, line.text) for line in lines if line.text.strip()]  # blank lines carry nothing
        fallbacks, header = count_fallbacks(lines), None
    else:
        bad_fields: list[tuple[int, str]] = []
        header, csv_rows, fallbacks = read_csv_rows(path, DELIMITERS[path.suffix], bad=bad_fields)
        rows = [(number, row) for number, row in csv_rows] + [(n, RowError(why)) for n, why in bad_fields]
        rows.sort(key=lambda item: item[0])
    fmt = columns.forced_task()
    if header is not None:  # CSV/TSV: the header decides the format, a missing column is a file error
        fmt = fmt or detect_format(header, columns)
        if fmt not in TASKS:
            raise LorakitError(f"{path}:1: {undetectable(header)}")
        for name in columns.names(fmt):
            if name not in header:
                raise LorakitError(f"{path}:1: missing column {name!r}; columns are {header}")
    out = FileRows(path, "", [], fallbacks=fallbacks)
    for number, raw in rows:
        try:
            obj = _as_object(raw)
            if fmt is None:  # JSONL: the first good row decides the format; later rows must match it
                fmt = detect_format(list(obj), columns)
                if fmt is None:
                    raise RowError(undetectable(sorted(obj)))
            out.records.append(_checked(parse_row(fmt, obj, number, columns), fmt))
        except RowError as err:
            reason = f"{path}:{number}: {err}"
            if not skip_bad_rows:
                raise BadRowError(reason) from None
            out.bad.append(reason)
    if fmt is None or not out.records:
        what = f"; all {len(out.bad)} rows are bad, e.g. {out.bad[0]}" if out.bad else ""
        raise LorakitError(f"{path}:1: no usable records in file{what}")
    out.task = "classify" if fmt == "classify" else "generate"
    return out


def _as_object(raw: object) -> dict:
    if isinstance(raw, RowError):
        raise raw
    if isinstance(raw, dict):
        return raw
    try:
        obj = json.loads(raw)
    except json.JSONDecodeError as err:
        raise RowError(f"not valid JSON: {err.msg}") from None
    if not isinstance(obj, dict):
        raise RowError(f"expected a JSON object, got {type(obj).__name__}")
    return obj


def _checked(record: Record, fmt: str) -> Record:
    """Validate a record now, so a bad one is a bad *row* (skippable) rather than a late error."""
    if fmt != "classify":
        _generation_example(record)
    return record


def _generation_example(r: Record) -> GenerationExample:
    """Build and validate one generation example; a problem is a RowError."""
    try:
        if r.messages:
            example = GenerationExample.from_messages(r.messages, r.references)
        else:
            example = GenerationExample(r.prompt, r.completion, r.references)
    except ValueError as err:
        raise RowError(str(err)) from None
    if not example.references:
        # Every loaded generation example can be scored: without explicit references, the target is one.
        example = replace(example, references=(example.completion,))
    return example


def _dataset(rows: FileRows, split: str, mapping: tuple | None, scope: str) -> Dataset:
    path = rows.path
    note = f" {rows.fallbacks} line(s) were not UTF-8 and were decoded as cp1252/ISO-8859-1." if rows.fallbacks else ""
    if rows.bad:
        note += f" {len(rows.bad)} bad row(s) skipped."
    if rows.task == "generate":
        examples = [_generation_example(r) for r in rows.records]
        turns = sum(1 for e in examples if sum(m["role"] == "assistant" for m in e.messages) > 1)
        multi = f" ({turns} multi-turn conversations)" if turns else ""
        info = f"{path}: {len(examples)} generation examples{multi}.{note}"
        return Dataset(str(path), split, "generate", examples, info=info, bad_rows=tuple(rows.bad))
    to_int, num_labels, names = mapping
    examples = [ClassificationExample(r.text, to_int(r.label)) for r in rows.records]
    shown = ", ".join(f"{i}={n}" for i, n in enumerate(names)) if names else f"0..{num_labels - 1} as given"
    info = f"{path}: {len(examples)} examples; labels {shown} (from {scope}).{note}"
    return Dataset(str(path), split, "classify", examples, num_labels, names, info, bad_rows=tuple(rows.bad))


def _is_index(label: int | str) -> bool:
    """An int or an ASCII digit string (``str.isdigit`` alone would accept "²", which int() rejects)."""
    return isinstance(label, int) or (label.isascii() and label.isdigit())


def _label_mapping(labeled: list[tuple[Path, Record]]) -> tuple:
    """Return ``(to_int, num_labels, label_names)`` for checked raw labels.

    Integers and digit strings (CSV cells, ``"1"`` in JSON) are class indices and may be mixed, e.g. a
    JSONL train file and a CSV dev file in one directory. Otherwise every label is a name; an integer
    among names is ambiguous and an error.
    """
    if not labeled:
        raise LorakitError("no labeled records")
    labels = [record.label for _, record in labeled]
    if all(_is_index(label) for label in labels):
        return int, max(int(label) for label in labels) + 1, None
    example = next(label for label in labels if not _is_index(label))
    for path, record in labeled:
        if not isinstance(record.label, str):
            raise LorakitError(
                f"{path}:{record.line}: label {record.label!r} is an integer, but other labels are "
                f"names such as {example!r}"
            )
    names = sorted(set(labels))
    index = {name: i for i, name in enumerate(names)}
    return index.__getitem__, len(names), names


"""Encoding-safe line reading: every physical line comes back, numbered, as text.

The shared data mixes encodings *within* files: TREC, SUBJ and MR are mostly ASCII with some lines in a
legacy 8-bit encoding, and no line there is valid UTF-8 once it has a byte >= 0x80. So decoding is per
line: UTF-8 first, then Windows-1252, then ISO-8859-1 (which maps every byte and so never fails).

Why Windows-1252 before ISO-8859-1: the legacy bytes seen in SUBJ/MR include 0x85, 0x91, 0x96, 0x97.
In ISO-8859-1 those are C1 control characters (0x85 is NEL, a *line break* for ``str.splitlines``);
in Windows-1252 they are the intended "…", "‘", "–", "—". The two encodings agree on 0xA0-0xFF (é, á,
ñ, ...), so Windows-1252 only differs where ISO-8859-1 would produce control characters. The five bytes
Windows-1252 leaves undefined fall through to ISO-8859-1, so decoding still never fails.

Files are split on ``b"\\n"`` only (a trailing ``\\r`` is removed), never with ``splitlines``, so that a
NEL or form feed inside a sentence cannot create extra lines and shift line numbers.
"""

from __future__ import annotations

import csv
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from lorakit.errors import LorakitError

# Tried in order after UTF-8; the last one must accept every byte sequence.
FALLBACK_ENCODINGS: tuple[str, ...] = ("cp1252", "iso-8859-1")


@dataclass(frozen=True)
class Line:
    """One physical line of a file."""

    number: int  # 1-based line number in the file, for error messages
    text: str  # decoded text without the line ending
    encoding: str  # "utf-8" or the fallback encoding that decoded it


def decode_line(raw: bytes) -> tuple[str, str]:
    """Decode one line's bytes; return ``(text, encoding_used)``. Never raises."""
    try:
        return raw.decode("utf-8"), "utf-8"
    except UnicodeDecodeError:
        pass
    for encoding in FALLBACK_ENCODINGS:
        try:
            return raw.decode(encoding), encoding
        except UnicodeDecodeError:
            continue
    raise AssertionError("ISO-8859-1 decodes every byte sequence")  # unreachable by construction


def read_lines(path: str | Path) -> list[Line]:
    """Read every line of ``path`` (blank ones included) with per-line encoding fallback.

    A final line ending does not create an extra empty line. A UTF-8 byte-order mark on line 1 is
    dropped.
    """
    data = Path(path).read_bytes()
    chunks = data.split(b"\n")
    if chunks and chunks[-1] == b"":
        chunks.pop()  # the newline that ends the last line is a terminator, not a new line
    lines = []
    for number, raw in enumerate(chunks, start=1):
        if raw.endswith(b"\r"):
            raw = raw[:-1]
        if number == 1 and raw.startswith(b"\xef\xbb\xbf"):
            raw = raw[3:]
        text, encoding = decode_line(raw)
        lines.append(Line(number, text, encoding))
    return lines


def count_fallbacks(lines: list[Line]) -> int:
    """How many lines were not valid UTF-8 (reported in Dataset.info so it is never silent)."""
    return sum(1 for line in lines if line.encoding != "utf-8")


def parse_labeled_line(path: str | Path, line: Line, num_labels: int) -> tuple[int, str]:
    """Parse ``LABEL<space>text`` (the sst2/trec/subj/mr format) into ``(label, text)``.

    Raises ``ValueError("{file}:{line}: ...")`` for a missing or non-integer label, a label outside
    ``0..num_labels-1``, or an empty text.
    """
    head, _, text = line.text.strip().partition(" ")
    # Rejects "-1", "1.0", "" and non-ASCII digits such as "²" (isdigit alone accepts those).
    if not (head.isascii() and head.isdigit()):
        raise LorakitError(f"{path}:{line.number}: label {head!r} is not a non-negative integer")
    label = int(head)
    if label >= num_labels:
        raise LorakitError(f"{path}:{line.number}: label {label} is outside 0..{num_labels - 1}")
    text = text.strip()
    if not text:
        raise LorakitError(f"{path}:{line.number}: empty text after label {label}")
    return label, text


def read_csv_rows(
    path: str | Path, delimiter: str = ",", bad: list[tuple[int, str]] | None = None
) -> tuple[list[str], list[tuple[int, dict[str, str]]], int]:
    """Read a CSV/TSV file with a header row; return ``(header, rows, fallback_lines)``.

    Each row is ``(line_number, {column: value})`` where the number is the physical line the record
    starts on. Quoted fields may span lines for CSV; TSV is read without quoting (``QUOTE_NONE``)
    because sentences often contain unbalanced ``"`` and TSV has no escaping convention.
    Records with the wrong number of fields raise ``ValueError("{file}:{line}: ...")``, or, when a
    ``bad`` list is given, are left out and appended to it as ``(line, reason)``.
    """
    lines = read_lines(path)
    quoting = csv.QUOTE_NONE if delimiter == "\t" else csv.QUOTE_MINIMAL
    # Feed decoded physical lines to csv so that line numbers in errors are the file's own.
    reader = csv.reader(_with_newlines(lines), delimiter=delimiter, quoting=quoting, strict=True)
    records: list[tuple[int, list[str]]] = []
    start = 1
    try:
        for fields in reader:
            records.append((start, fields))
            start = reader.line_num + 1
    except csv.Error as err:
        kind = "TSV" if delimiter == "\t" else "CSV"
        raise LorakitError(f"{path}:{reader.line_num}: malformed {kind}: {err}") from err
    records = [(n, f) for n, f in records if any(x.strip() for x in f)]  # blank lines carry nothing
    if not records:
        raise LorakitError(f"{path}:1: empty file, expected a header row")
    header_line, header = records[0]
    header = [h.strip() for h in header]
    if len(set(header)) != len(header):
        raise LorakitError(f"{path}:{header_line}: duplicate column names in header {header}")
    rows = []
    for number, fields in records[1:]:
        if len(fields) != len(header):
            reason = f"expected {len(header)} fields ({', '.join(header)}), got {len(fields)}"
            if bad is None:
                raise LorakitError(f"{path}:{number}: {reason}")
            bad.append((number, reason))
            continue
        rows.append((number, dict(zip(header, fields, strict=True))))
    return header, rows, count_fallbacks(lines)


def _with_newlines(lines: list[Line]) -> Iterator[str]:
    """Yield lines with ``\\n`` restored, as csv.reader expects for quoted multi-line fields."""
    for line in lines:
        yield line.text + "\n"

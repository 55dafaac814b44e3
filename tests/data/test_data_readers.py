"""Encoding-safe reading: every line comes back, numbered, decoded per line; errors name file:line."""

import pytest

from lorakit.data.readers import (
    Line,
    count_fallbacks,
    decode_line,
    parse_labeled_line,
    read_csv_rows,
    read_lines,
)


@pytest.mark.parametrize(
    ("raw", "text", "encoding"),
    [
        (b"plain ascii", "plain ascii", "utf-8"),
        ("crème brûlée".encode(), "crème brûlée", "utf-8"),
        (b"clich\xe9s", "clichés", "cp1252"),  # ISO-8859-1/cp1252 e-acute, as in mr/all.txt
        (b"brody \x96 in the title role", "brody – in the title role", "cp1252"),  # en dash, not a C1 control
        (b"here\x85 .", "here… .", "cp1252"),  # 0x85 is an ellipsis, not NEL
        (b"undefined \x81 in cp1252", "undefined \x81 in cp1252", "iso-8859-1"),  # last resort never fails
    ],
)
def test_decode_line_falls_back_per_line(raw, text, encoding):
    assert decode_line(raw) == (text, encoding)


def test_read_lines_mixed_encodings_crlf_and_numbers(tmp_path):
    path = tmp_path / "mixed.txt"
    path.write_bytes(b"1 caf\xc3\xa9\r\n0 clich\xe9 \x85 no split here\n\n1 last line without newline")
    lines = read_lines(path)
    assert lines == [
        Line(1, "1 café", "utf-8"),
        Line(2, "0 cliché … no split here", "cp1252"),
        Line(3, "", "utf-8"),  # blank lines are returned too: nothing is dropped here
        Line(4, "1 last line without newline", "utf-8"),
    ]
    assert count_fallbacks(lines) == 1


def test_read_lines_final_newline_and_bom(tmp_path):
    path = tmp_path / "bom.txt"
    path.write_bytes(b"\xef\xbb\xbffirst\nsecond\n")
    assert [line.text for line in read_lines(path)] == ["first", "second"]


def test_nel_and_form_feed_do_not_split_lines(tmp_path):
    # str.splitlines() would split on U+0085/U+000C and shift every later line number.
    path = tmp_path / "nel.txt"
    path.write_bytes("a\u0085b\n".encode() + b"c\x0cd\ne\n")
    assert [line.text for line in read_lines(path)] == ["a\u0085b", "c\x0cd", "e"]


@pytest.mark.parametrize(
    ("text", "label", "rest"),
    [("1 a fine film .", 1, "a fine film ."), ("0 trailing space . ", 0, "trailing space .")],
)
def test_parse_labeled_line(tmp_path, text, label, rest):
    assert parse_labeled_line(tmp_path / "f.txt", Line(7, text, "utf-8"), 2) == (label, rest)


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("x a film", "not a non-negative integer"),
        ("-1 a film", "not a non-negative integer"),
        ("1.0 a film", "not a non-negative integer"),
        ("2 a film", "outside 0..1"),
        ("1", "empty text"),
        ("1    ", "empty text"),
        ("\u00b2 superscript two is a digit to str.isdigit", "not a non-negative integer"),
    ],
)
def test_parse_labeled_line_errors_name_file_and_line(tmp_path, text, problem):
    path = tmp_path / "f.txt"
    with pytest.raises(ValueError, match=problem) as err:
        parse_labeled_line(path, Line(12, text, "utf-8"), 2)
    assert str(err.value).startswith(f"{path}:12: ")


def test_csv_rows_keep_physical_line_numbers(tmp_path):
    path = tmp_path / "d.csv"
    path.write_bytes(
        b'prompt,completion\r\n"multi\nline",x\r\nsecond,"y, with comma"\r\n\r\nthird,caf\xe9\r\n'
    )
    header, rows, fallbacks = read_csv_rows(path)
    assert header == ["prompt", "completion"]
    assert rows == [
        (2, {"prompt": "multi\nline", "completion": "x"}),
        (4, {"prompt": "second", "completion": "y, with comma"}),
        (6, {"prompt": "third", "completion": "café"}),
    ]
    assert fallbacks == 1


def test_csv_wrong_field_count_names_line(tmp_path):
    path = tmp_path / "d.csv"
    path.write_text("text,label\nok,1\ntoo,many,fields\n")
    with pytest.raises(ValueError, match=r"d\.csv:3: expected 2 fields"):
        read_csv_rows(path)


def test_tsv_reads_unbalanced_quotes_literally(tmp_path):
    path = tmp_path / "d.tsv"
    path.write_text('text\tlabel\nhe said "hi\t1\nplain\t0\n')
    _, rows, _ = read_csv_rows(path, "\t")
    assert rows == [(2, {"text": 'he said "hi', "label": "1"}), (3, {"text": "plain", "label": "0"})]


def test_csv_duplicate_header_is_an_error(tmp_path):
    path = tmp_path / "d.csv"
    path.write_text("text,text\na,b\n")
    with pytest.raises(ValueError, match="duplicate column"):
        read_csv_rows(path)

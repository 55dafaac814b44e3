"""Alpaca and ShareGPT records, and bad rows: a file:line error by default, counted and listed when skipped."""

import json

import pytest

from lorakit.data import GenerationExample, load_dataset
from lorakit.data.files import BadRowError


def write_jsonl(path, records):
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in records), encoding="utf-8")
    return path


def test_alpaca_records_become_prompt_and_completion(tmp_path):
    path = write_jsonl(tmp_path / "alpaca.jsonl", [
        {"instruction": "Give a colour.", "input": "", "output": "Blue."},
        {"instruction": "Translate to French.", "input": "cat", "output": "chat"},
    ])
    ds = load_dataset(str(path))
    assert ds.task == "generate"
    assert ds.examples == [GenerationExample("Give a colour.", "Blue.", ("Blue.",)),
                           GenerationExample("Translate to French.\n\ncat", "chat", ("chat",))]


def test_sharegpt_conversations_become_chat_messages(tmp_path):
    turns = [{"from": "system", "value": "be brief"}, {"from": "human", "value": "hi"},
             {"from": "gpt", "value": "hello"}, {"from": "human", "value": "bye"}, {"from": "gpt", "value": "ciao"}]
    ds = load_dataset(str(write_jsonl(tmp_path / "sg.jsonl", [{"conversations": turns}])))
    (example,) = ds.examples
    assert [m["role"] for m in example.messages] == ["system", "user", "assistant", "user", "assistant"]
    assert (example.prompt, example.completion) == ("bye", "ciao")
    assert "1 multi-turn conversations" in ds.info


def test_sharegpt_unknown_speaker_names_the_line(tmp_path):
    ok = {"conversations": [{"from": "human", "value": "hi"}, {"from": "gpt", "value": "yo"}]}
    bad = {"conversations": [{"from": "narrator", "value": "hi"}, {"from": "gpt", "value": "yo"}]}
    path = write_jsonl(tmp_path / "sg.jsonl", [ok, bad])
    with pytest.raises(BadRowError, match=r"sg\.jsonl:2: unknown ShareGPT speaker 'narrator'"):
        load_dataset(str(path))


def test_bad_rows_stop_by_default_and_are_counted_when_skipped(tmp_path):
    rows = [{"text": "good film", "label": "pos"}, {"text": "", "label": "neg"}, '{"text": "cut', {"text": "ok"},
            {"text": "bad film", "label": "neg"}, {"text": "   ", "label": "pos"}]
    path = write_jsonl(tmp_path / "d.jsonl", rows)
    with pytest.raises(BadRowError, match=r"d\.jsonl:2: text must be a non-empty string"):
        load_dataset(str(path))
    ds = load_dataset(str(path), skip_bad_rows=True)
    assert [e.text for e in ds.examples] == ["good film", "bad film"]
    assert ds.label_names == ["neg", "pos"]  # labels of skipped rows do not count
    assert [r.split(": ")[0] for r in ds.bad_rows] == [f"{path}:{n}" for n in (2, 3, 4, 6)]
    assert "not valid JSON" in ds.bad_rows[1] and "missing key 'label'" in ds.bad_rows[2]
    assert "4 bad row(s) skipped" in ds.info


def test_csv_rows_with_wrong_field_counts_are_bad_rows(tmp_path):
    path = tmp_path / "d.csv"
    path.write_text("text,label\ngood,1\ntoo,many,fields\nbad,0\n")
    with pytest.raises(BadRowError, match=r"d\.csv:3: expected 2 fields"):
        load_dataset(str(path))
    ds = load_dataset(str(path), skip_bad_rows=True)
    assert len(ds) == 2 and ds.bad_rows == (f"{path}:3: expected 2 fields (text, label), got 3",)


def test_a_file_of_only_bad_rows_is_an_error_even_when_skipping(tmp_path):
    path = write_jsonl(tmp_path / "d.jsonl", [{"text": "", "label": 1}])
    with pytest.raises(ValueError, match=r"no usable records in file; all 1 rows are bad"):
        load_dataset(str(path), skip_bad_rows=True)

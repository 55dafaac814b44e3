"""Generic JSONL/CSV/TSV files through load_dataset: task detection, label mapping, file:line errors."""

import json

import pytest

from lorakit.data import ClassificationExample, GenerationExample, load_dataset


def write_jsonl(path, records):
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


def test_jsonl_string_labels_are_sorted_and_named(tmp_path):
    path = write_jsonl(
        tmp_path / "d.jsonl",
        [
            {"text": "great", "label": "pos"},
            {"text": "meh", "label": "neu"},
            {"text": "bad", "label": "neg"},
        ],
    )
    ds = load_dataset(str(path))
    assert ds.task == "classify"
    assert ds.label_names == ["neg", "neu", "pos"]
    assert ds.num_labels == 3
    assert [e.label for e in ds.examples] == [2, 1, 0]
    assert "0=neg, 1=neu, 2=pos" in ds.info
    assert ds.split == "d"  # a file is its own split


def test_jsonl_int_labels_kept(tmp_path):
    path = write_jsonl(tmp_path / "d.jsonl", [{"text": "a", "label": 3}, {"text": "b", "label": 0}])
    ds = load_dataset(str(path))
    assert [e.label for e in ds.examples] == [3, 0]
    assert ds.num_labels == 4 and ds.label_names is None


def test_jsonl_prompt_completion_and_references(tmp_path):
    path = write_jsonl(
        tmp_path / "g.jsonl",
        [
            {"prompt": "p1", "completion": "c1"},
            {"prompt": "p2", "completion": "c2", "references": ["c2", "c2 again"]},
        ],
    )
    path.write_text(path.read_text() + "\n   \n")  # trailing blank lines carry no record
    ds = load_dataset(str(path))
    assert ds.task == "generate" and ds.num_labels is None
    assert ds.examples == [
        GenerationExample("p1", "c1", ("c1",)),  # without references, the completion is the reference
        GenerationExample("p2", "c2", ("c2", "c2 again")),
    ]


def test_jsonl_chat_messages(tmp_path):
    messages = [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "hello"},
        {"role": "user", "content": "name a colour"},
        {"role": "assistant", "content": "blue"},
    ]
    ds = load_dataset(str(write_jsonl(tmp_path / "c.jsonl", [{"messages": messages}])))
    (example,) = ds.examples
    assert (example.prompt, example.completion, example.references) == ("name a colour", "blue", ("blue",))
    assert list(example.messages) == messages
    assert list(example.context) == messages[:-1]


@pytest.mark.parametrize(
    ("second_line", "problem"),
    [
        ('{"text": "b", "label": 1', "not valid JSON"),
        ('["text", "label"]', "expected a JSON object"),
        ('{"text": "b"}', "missing key 'label'"),
        ('{"text": "b", "label": 1.5}', "neither a non-negative int"),
        ('{"text": "b", "label": true}', "neither a non-negative int"),
        ('{"text": "b", "label": -1}', "neither a non-negative int"),
        ('{"text": "  ", "label": 1}', "text must be a non-empty string"),
        ('{"text": 5, "label": 1}', "text must be a non-empty string"),
    ],
)
def test_jsonl_classification_errors_name_file_and_line(tmp_path, second_line, problem):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"text": "a", "label": 0}\n' + second_line + "\n")
    with pytest.raises(ValueError, match=problem) as err:
        load_dataset(str(path))
    assert str(err.value).startswith(f"{path}:2: ")


@pytest.mark.parametrize(
    ("record", "problem"),
    [
        ({"messages": [{"role": "user", "content": "hi"}]}, "end with an assistant turn"),
        ({"messages": [{"role": "bot", "content": "hi"}, {"role": "assistant", "content": "x"}]}, "role"),
        ({"messages": "hi"}, "must be a list"),
        ({"prompt": "p"}, "missing key"),
    ],
)
def test_jsonl_generation_errors_name_file_and_line(tmp_path, record, problem):
    first = {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}
    if "prompt" in record:
        first = {"prompt": "q", "completion": "a"}
    path = write_jsonl(tmp_path / "bad.jsonl", [first, record])
    with pytest.raises(ValueError, match=problem) as err:
        load_dataset(str(path))
    assert str(err.value).startswith(f"{path}:2: ")


def test_integer_among_label_names_is_an_error(tmp_path):
    path = write_jsonl(tmp_path / "d.jsonl", [{"text": "a", "label": "pos"}, {"text": "b", "label": 1}])
    with pytest.raises(
        ValueError, match=r"d\.jsonl:2: label 1 is an integer, but other labels are names such as 'pos'"
    ):
        load_dataset(str(path))


def test_digit_strings_and_ints_are_both_class_indices(tmp_path):
    write_jsonl(tmp_path / "train.jsonl", [{"text": "a", "label": 0}, {"text": "b", "label": "2"}])
    (tmp_path / "dev.csv").write_text("text,label\nc,1\n")
    train, dev = load_dataset(str(tmp_path), "train"), load_dataset(str(tmp_path), "dev")
    assert [e.label for e in train.examples] == [0, 2] and [e.label for e in dev.examples] == [1]
    assert train.num_labels == dev.num_labels == 3


def test_csv_defaults_and_digit_labels(tmp_path):
    path = tmp_path / "d.csv"
    path.write_text('text,label\n"good, really",1\nbad,0\n')
    ds = load_dataset(str(path))
    assert ds.examples == [ClassificationExample("good, really", 1), ClassificationExample("bad", 0)]
    assert ds.num_labels == 2 and ds.label_names is None


def test_csv_custom_columns_and_latin1_line(tmp_path):
    path = tmp_path / "d.csv"
    path.write_bytes(b"id,sentence,y\n1,caf\xe9 noir,hot\n2,iced tea,cold\n")
    ds = load_dataset(str(path), text_column="sentence", label_column="y")
    assert [(e.text, e.label) for e in ds.examples] == [("café noir", 1), ("iced tea", 0)]
    assert ds.label_names == ["cold", "hot"]
    assert "1 line(s) were not UTF-8" in ds.info


def test_tsv_generation_with_custom_columns(tmp_path):
    path = tmp_path / "g.tsv"
    path.write_text('question\tanswer\nwhat is "x\tit is x\n')
    ds = load_dataset(str(path), prompt_column="question", completion_column="answer")
    assert ds.examples == [GenerationExample('what is "x', "it is x", ("it is x",))]


def test_csv_missing_column_and_undetectable_task(tmp_path):
    path = tmp_path / "d.csv"
    path.write_text("sentence,y\na,1\n")
    with pytest.raises(ValueError, match=r"d\.csv:1: missing column 'text'"):
        load_dataset(str(path), text_column="text", label_column="y")
    with pytest.raises(ValueError, match=r"d\.csv:1: cannot tell the format from columns \['sentence', 'y'\]"):
        load_dataset(str(path))
    with pytest.raises(ValueError, match="exclude each other"):
        load_dataset(str(path), text_column="sentence", prompt_column="y")


def test_csv_empty_label_names_line(tmp_path):
    path = tmp_path / "d.csv"
    path.write_text("text,label\na,1\nb,\n")
    with pytest.raises(ValueError, match=r"d\.csv:3: label ''"):
        load_dataset(str(path))


def test_directory_picks_split_file_and_shares_label_mapping(tmp_path):
    write_jsonl(
        tmp_path / "train.jsonl",
        [
            {"text": "a", "label": "neg"},
            {"text": "b", "label": "neu"},
            {"text": "c", "label": "pos"},
        ],
    )
    write_jsonl(tmp_path / "dev.jsonl", [{"text": "d", "label": "pos"}, {"text": "e", "label": "neg"}])
    dev = load_dataset(str(tmp_path), "dev")
    # dev alone would map pos -> 1; sharing the directory's mapping keeps it at 2, as in train.
    assert dev.split == "dev"
    assert dev.label_names == ["neg", "neu", "pos"]
    assert [e.label for e in dev.examples] == [2, 0]
    with pytest.raises(
        ValueError, match=r"no test\.jsonl/\.csv/\.tsv; data files present: \['dev.jsonl', 'train.jsonl'\]"
    ):
        load_dataset(str(tmp_path), "test")


def test_directory_with_two_files_for_a_split_is_ambiguous(tmp_path):
    write_jsonl(tmp_path / "train.jsonl", [{"text": "a", "label": 0}])
    (tmp_path / "train.csv").write_text("text,label\na,0\n")
    with pytest.raises(ValueError, match="several files for split 'train'"):
        load_dataset(str(tmp_path))


def test_limit_keeps_first_examples_and_says_so(tmp_path):
    path = write_jsonl(tmp_path / "d.jsonl", [{"text": str(i), "label": i % 2} for i in range(5)])
    ds = load_dataset(str(path), limit=2)
    assert [e.text for e in ds.examples] == ["0", "1"]
    assert "first 2 of 5" in ds.info
    assert len(load_dataset(str(path), limit=50)) == 5
    for bad in (0, -1, 1.5, True):
        with pytest.raises(ValueError, match="limit"):
            load_dataset(str(path), limit=bad)


def test_unknown_name_unsupported_suffix_and_columns_on_recipe(tmp_path):
    with pytest.raises(ValueError, match=r"not a recipe \(e2e, mr, sst2, subj, trec\)"):
        load_dataset("no-such-dataset")
    path = tmp_path / "d.txt"
    path.write_text("1 hello\n")
    with pytest.raises(ValueError, match="unsupported file type '.txt'"):
        load_dataset(str(path))
    with pytest.raises(ValueError, match="column options apply to data files"):
        load_dataset("sst2", text_column="sentence")

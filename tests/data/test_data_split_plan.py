"""plan_splits: a single file or a folder without dev gets a seeded held-out dev; nothing is evaluated on
trained rows unless asked for loudly; the report says what was used."""

import json

import pytest

from lorakit.data.split_plan import UNSAFE_OPTION, plan_splits
from lorakit.data.splits import holdout_split


def write_jsonl(path, records):
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


def rows(n, offset=0):
    return [{"text": f"row {i + offset}", "label": ["neg", "pos"][i % 2]} for i in range(n)]


def test_single_file_holds_out_a_seeded_dev_split(tmp_path):
    path = write_jsonl(tmp_path / "my.jsonl", rows(50))
    splits = plan_splits(str(path), eval_fraction=0.2, seed=3)
    kept, held = holdout_split(50, 0.2, 3)
    assert [e.text for e in splits.eval.examples] == [f"row {i}" for i in held]
    assert [e.text for e in splits.train.examples] == [f"row {i}" for i in kept]
    assert splits.test is splits.eval  # no test file: the report is on the held-out dev rows
    assert not {e.text for e in splits.train.examples} & {e.text for e in splits.eval.examples}
    report = splits.report
    assert report["held_out"] is True and report["seed"] == 3
    assert report["eval"] == {**report["eval"], "split": "dev", "how": "held out", "examples": 10, "seed": 3,
                              "fraction": 0.2, "source": str(path)}
    assert report["train"]["examples"] == 40 and report["test"]["split"] == "dev"
    assert report["inputs_also_in_train"] == {"eval": 0, "test": 0}
    assert any("20% held out by seed 3, never trained on" in line for line in splits.lines())


def test_folder_without_dev_gets_the_same_and_keeps_its_test_file(tmp_path):
    write_jsonl(tmp_path / "train.jsonl", rows(30))
    write_jsonl(tmp_path / "test.jsonl", rows(4, offset=100))
    splits = plan_splits(str(tmp_path), test_split="test")
    assert len(splits.eval) == 3 and len(splits.train) == 27 and len(splits.test) == 4
    assert splits.report["test"]["how"] == "given file"
    assert splits.train.label_names == splits.test.label_names == ["neg", "pos"]


def test_explicit_eval_and_test_files_share_the_label_mapping(tmp_path):
    train = write_jsonl(tmp_path / "a.jsonl", rows(20))
    dev = write_jsonl(tmp_path / "b.jsonl", [{"text": "x", "label": "pos"}])  # alone it would map pos -> 0
    test = write_jsonl(tmp_path / "c.jsonl", [{"text": "y", "label": "neg"}, {"text": "z", "label": "pos"}])
    splits = plan_splits(str(train), eval_data=str(dev), test_data=str(test))
    assert len(splits.train) == 20  # nothing held out: a dev file was given
    assert [e.label for e in splits.eval.examples] == [1] and splits.report["test"]["split"] == "test"


def test_evaluating_on_trained_rows_needs_the_loud_option(tmp_path):
    path = write_jsonl(tmp_path / "my.jsonl", rows(20))
    with pytest.raises(ValueError, match=UNSAFE_OPTION):
        plan_splits(str(path), eval_data=str(path))
    with pytest.raises(ValueError, match=UNSAFE_OPTION):
        plan_splits(str(path), test_split="train")
    splits = plan_splits(str(path), eval_on_train_rows=True)
    assert len(splits.train) == len(splits.eval) == 20
    assert splits.report["held_out"] is False and splits.report["inputs_also_in_train"]["eval"] == 20
    assert any("WARNING" in line for line in splits.lines())


def test_duplicates_between_train_and_dev_are_reported(tmp_path):
    train = write_jsonl(tmp_path / "train.jsonl", rows(10))
    write_jsonl(tmp_path / "dev.jsonl", rows(3))  # the same texts as train's first rows
    splits = plan_splits(str(tmp_path))
    assert splits.report["inputs_also_in_train"]["eval"] == 3 and train.is_file()
    assert any("also occur among the training rows" in line for line in splits.lines())


def test_bad_rows_are_in_the_report(tmp_path):
    path = write_jsonl(tmp_path / "my.jsonl", [*rows(20), {"text": "", "label": "pos"}])
    splits = plan_splits(str(path), skip_bad_rows=True)
    assert splits.report["bad_rows"] == {"count": 1, "first": [f"{path}:21: text must be a non-empty string, got ''"]}
    assert any("skipped 1 bad row" in line for line in splits.lines())


def test_too_few_rows_for_the_fraction_is_an_error(tmp_path):
    path = write_jsonl(tmp_path / "my.jsonl", rows(5))
    with pytest.raises(ValueError, match="empty dev split"):
        plan_splits(str(path))

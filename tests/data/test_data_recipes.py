"""Named recipes: counts and label maps on the real shared data, split rules on a fake data root."""

from collections import Counter

import pytest

from lorakit.data import RECIPES, load_dataset, resolve_data_root
from lorakit.data.recipes import E2E_PROMPT_PREFIX
from lorakit.data.root import ENV_VAR


@pytest.fixture(scope="module")
def real_root():
    try:
        return resolve_data_root()
    except ValueError as err:
        pytest.skip(f"real data sets not available (set {ENV_VAR} or --data-root): {err}")


def labels_of(ds):
    return Counter(e.label for e in ds.examples)


@pytest.mark.parametrize(
    ("name", "sizes"),
    [
        ("sst2", {"train": 6920, "dev": 872, "test": 1821}),  # as in the data README
        ("trec", {"train": 4907, "dev": 545, "test": 500}),  # 4907 + 545 = 5,452 lines of train.txt
        ("subj", {"train": 8000, "dev": 1000, "test": 1000}),  # 10,000 lines of all.txt
        ("mr", {"train": 8530, "dev": 1066, "test": 1066}),  # 10,662 lines of all.txt
    ],
)
def test_classification_counts_match_readme(real_root, name, sizes):
    for split, size in sizes.items():
        ds = load_dataset(name, split, real_root)
        assert (ds.name, ds.split, ds.task, len(ds)) == (name, split, "classify", size)


def test_label_maps_and_class_counts(real_root):
    assert load_dataset("sst2", "train", real_root).label_names == ["negative", "positive"]
    assert labels_of(load_dataset("sst2", "train", real_root)) == {0: 3310, 1: 3610}
    subj = load_dataset("subj", "test", real_root)
    assert subj.label_names == ["subjective", "objective"] and "0=subjective, 1=objective" in subj.info
    # TREC's numbering is the source's first-appearance order; the counts equal Li and Roth's
    # published coarse-class counts (DESC, ENTY, ABBR, HUM, LOC, NUM), which is how it was confirmed.
    trec_train = load_dataset("trec", "train", real_root)
    assert trec_train.label_names == ["DESC", "ENTY", "ABBR", "HUM", "LOC", "NUM"]
    whole = labels_of(trec_train) + labels_of(load_dataset("trec", "dev", real_root))
    assert [whole[k] for k in range(6)] == [1162, 1250, 86, 1223, 835, 896]
    test = labels_of(load_dataset("trec", "test", real_root))
    assert [test[k] for k in range(6)] == [138, 94, 9, 65, 81, 113]
    mr = sum((labels_of(load_dataset("mr", s, real_root)) for s in ("train", "dev", "test")), Counter())
    assert mr == {0: 5331, 1: 5331}


def test_legacy_encoded_lines_are_decoded_not_dropped(real_root):
    mr_texts = {e.text for s in ("train", "dev", "test") for e in load_dataset("mr", s, real_root).examples}
    assert "the action clichés just pile up ." in mr_texts  # line 32 of mr/all.txt is ISO-8859-1
    assert "202 line(s) of all.txt were not UTF-8" in load_dataset("mr", "dev", real_root).info
    subj_texts = {
        e.text for s in ("train", "dev", "test") for e in load_dataset("subj", s, real_root).examples
    }
    assert any("adrien brody – in the title role" in t for t in subj_texts)  # 0x96 as an en dash
    trec = load_dataset("trec", "train", real_root).examples + load_dataset("trec", "dev", real_root).examples
    assert any("sister" in e.text and "city with Los Angeles" in e.text for e in trec)


def test_e2e_splits(real_root):
    train, dev, test = (load_dataset("e2e", s, real_root) for s in ("train", "dev", "test"))
    assert all(ds.task == "generate" for ds in (train, dev, test))
    train_mrs = {e.prompt for e in train.examples}
    dev_mrs = {e.prompt for e in dev.examples}
    assert not train_mrs & dev_mrs  # held-out MRs never appear in training
    assert (len(train_mrs), len(dev_mrs)) == (493, 54)  # 547 MRs, 10% (floor) held out
    # every devset.csv pair is used once: one per training example, all refs of each dev MR
    assert len(train) + sum(len(e.references) for e in dev.examples) == 4672
    assert len(test) == 630 and sum(len(e.references) for e in test.examples) == 4693
    for ex in dev.examples + test.examples:
        assert ex.completion == ex.references[0]
    assert all(e.prompt.startswith(E2E_PROMPT_PREFIX + "name[") for e in test.examples)
    first = test.examples[0]
    assert first.prompt == E2E_PROMPT_PREFIX + "name[Blue Spice], eatType[coffee shop], area[city centre]"
    assert first.references[:2] == (
        "A coffee shop in the city centre area called Blue Spice.",
        "Blue Spice is a coffee shop in city centre.",
    )
    # a training pair carries all references of its MR, its own among them
    assert all(e.completion in e.references for e in train.examples[:50])


# ---- split rules, on a small fake data root so they run without the real data ----


@pytest.fixture
def fake_root(tmp_path):
    (tmp_path / "subj").mkdir()
    (tmp_path / "subj" / "all.txt").write_text("".join(f"{i % 2} sentence number {i}\n" for i in range(50)))
    (tmp_path / "trec").mkdir()
    (tmp_path / "trec" / "train.txt").write_text("".join(f"{i % 6} question {i} ?\n" for i in range(40)))
    (tmp_path / "trec" / "test.txt").write_text("5 how many ?\n")
    (tmp_path / "e2e").mkdir()
    rows = [f'"name[R{m}], food[x]","Ref {m}.{r} here."' for m in range(20) for r in range(1 + m % 3)]
    (tmp_path / "e2e" / "devset.csv").write_text("mr,ref\r\n" + "\r\n".join(rows) + "\r\n")
    (tmp_path / "sst2").mkdir()
    (tmp_path / "sst2" / "train.txt").write_text("1 fine .\n0 bad .\n2 out of range .\n")
    return tmp_path


def texts(ds):
    return [e.text for e in ds.examples]


def test_three_way_split_is_a_seeded_partition(fake_root):
    parts = {s: load_dataset("subj", s, fake_root) for s in ("train", "dev", "test")}
    assert [len(parts[s]) for s in ("train", "dev", "test")] == [40, 5, 5]
    together = sorted(t for ds in parts.values() for t in texts(ds))
    assert together == sorted(f"sentence number {i}" for i in range(50))
    assert texts(load_dataset("subj", "dev", fake_root, seed=0)) == texts(parts["dev"])
    assert texts(load_dataset("subj", "dev", fake_root, seed=1)) != texts(parts["dev"])
    assert "seed 0" in parts["dev"].info and "seed 1" in load_dataset("subj", "dev", fake_root, seed=1).info


def test_trec_dev_is_held_out_of_train(fake_root):
    train, dev = (
        load_dataset("trec", "train", fake_root, seed=3),
        load_dataset("trec", "dev", fake_root, seed=3),
    )
    assert (len(train), len(dev)) == (36, 4)
    assert sorted(texts(train) + texts(dev)) == sorted(f"question {i} ?" for i in range(40))
    assert texts(train) == sorted(texts(train), key=lambda t: int(t.split()[1]))  # file order kept


def test_e2e_holds_out_whole_mrs(fake_root):
    train, dev = load_dataset("e2e", "train", fake_root), load_dataset("e2e", "dev", fake_root)
    assert len(dev) == 2  # floor(10% of 20 MRs)
    assert not {e.prompt for e in train.examples} & {e.prompt for e in dev.examples}
    assert len(train) + sum(len(e.references) for e in dev.examples) == sum(1 + m % 3 for m in range(20))
    for ex in dev.examples:
        number = int(ex.prompt.split("name[R")[1].split("]")[0])
        assert ex.references == tuple(f"Ref {number}.{r} here." for r in range(1 + number % 3))


def test_malformed_recipe_line_names_file_and_line(fake_root):
    with pytest.raises(ValueError, match=r"sst2/train\.txt:3: label 2 is outside 0\.\.1"):
        load_dataset("sst2", "train", fake_root)


def test_unknown_split_lists_valid_ones(fake_root):
    with pytest.raises(
        ValueError, match=r"trec has no split 'validation'; valid splits are \['train', 'dev', 'test'\]"
    ):
        load_dataset("trec", "validation", fake_root)


def test_missing_recipe_file_is_a_clear_error(fake_root):
    with pytest.raises(ValueError, match=r"mr/all\.txt: file not found"):
        load_dataset("mr", "train", fake_root)


def test_every_recipe_declares_task_and_splits():
    assert sorted(RECIPES) == ["e2e", "mr", "sst2", "subj", "trec"]
    for recipe in RECIPES.values():
        assert recipe.task in ("classify", "generate") and recipe.splits == ("train", "dev", "test")

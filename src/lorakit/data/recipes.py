"""Named data sets over the shared data root: sst2, trec, subj, mr (classification) and e2e (generation).

Each recipe knows its files, its splits (the given ones, or seeded ones where the source has none)
and its label names. See the data root's README.md for the sources. Label mappings:

- sst2, mr: 0 = negative, 1 = positive.
- subj: 0 = subjective, 1 = objective, as given by the source (Pang and Lee 2004: review snippets
  vs. plot summaries).
- trec: 0 = DESC, 1 = ENTY, 2 = ABBR, 3 = HUM, 4 = LOC, 5 = NUM. Not alphabetical: the numbering is
  the order of first appearance in the original TREC training file. Confirmed on this copy by the class
  counts, which equal Li and Roth's published coarse-class counts exactly (train 1162/1250/86/1223/835/
  896, test 138/94/9/65/81/113), and by the questions themselves (label 2: "What does INRI stand for").
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from lorakit.data.examples import ClassificationExample, Dataset, GenerationExample, Task
from lorakit.data.readers import count_fallbacks, parse_labeled_line, read_csv_rows, read_lines
from lorakit.data.splits import holdout_split, three_way_split
from lorakit.errors import LorakitError

# The E2E prompt: the paper's task is MR -> one sentence; the instruction makes it usable as a chat turn.
E2E_PROMPT_PREFIX = "Describe this restaurant in one sentence: "
HOLDOUT_FRACTION = 0.1  # dev (and, for subj/mr, test) fraction where the source gives no split


@dataclass(frozen=True)
class Recipe:
    """A named data set: which splits exist and how to build one."""

    name: str
    task: Task
    splits: tuple[str, ...]
    description: str
    build: Callable[[Path, str, int], Dataset]  # (data_root, split, seed) -> Dataset


def _read_classification(path: Path, num_labels: int) -> tuple[list[ClassificationExample], int]:
    """Read a ``LABEL<space>text`` file; return the examples and how many lines needed a fallback."""
    if not path.is_file():
        raise LorakitError(f"{path}: file not found (is the data root right?)")
    lines = read_lines(path)
    examples = []
    for line in lines:
        if not line.text.strip():
            continue  # a blank line holds no example; the README counts agree with this rule
        label, text = parse_labeled_line(path, line, num_labels)
        examples.append(ClassificationExample(text, label))
    return examples, count_fallbacks(lines)


def _label_map(names: list[str]) -> str:
    return ", ".join(f"{i}={name}" for i, name in enumerate(names))


def _fallback_note(path: Path, n: int) -> str:
    if not n:
        return ""
    return f" {n} line(s) of {path.name} were not UTF-8 and were decoded as cp1252/ISO-8859-1."


def _given_splits(folder: str, names: list[str], files: dict[str, str], extra: str = "") -> Callable:
    """A builder for data sets whose files already are the splits (sst2)."""

    def build(root: Path, split: str, seed: int) -> Dataset:
        path = root / folder / files[split]
        examples, fallbacks = _read_classification(path, len(names))
        info = (
            f"{folder} {split}: {path} as given, {len(examples)} examples; labels "
            f"{_label_map(names)}.{extra}{_fallback_note(path, fallbacks)}"
        )
        return Dataset(folder, split, "classify", examples, len(names), list(names), info)

    return build


def _build_trec(root: Path, split: str, seed: int) -> Dataset:
    names = ["DESC", "ENTY", "ABBR", "HUM", "LOC", "NUM"]
    labels = (
        f"labels {_label_map(names)} (source order, confirmed by the published class "
        f"counts; see lorakit.data.recipes)."
    )
    if split == "test":
        path = root / "trec" / "test.txt"
        examples, fallbacks = _read_classification(path, len(names))
        info = f"trec test: {path} as given, {len(examples)} examples; {labels}"
    else:
        path = root / "trec" / "train.txt"
        everything, fallbacks = _read_classification(path, len(names))
        kept, held = holdout_split(len(everything), HOLDOUT_FRACTION, seed)
        chosen = kept if split == "train" else held
        examples = [everything[i] for i in chosen]
        info = (
            f"trec {split}: {path} split by seed {seed} into train {len(kept)} / dev {len(held)} "
            f"(dev = {HOLDOUT_FRACTION:.0%} held out of train.txt); {labels}"
        )
    info += _fallback_note(path, fallbacks)
    return Dataset("trec", split, "classify", examples, len(names), names, info)


def _seeded_three_way(folder: str, names: list[str], meaning: str) -> Callable:
    """A builder for data sets shipped as one ``all.txt`` (subj, mr): seeded 80/10/10 split."""

    def build(root: Path, split: str, seed: int) -> Dataset:
        path = root / folder / "all.txt"
        everything, fallbacks = _read_classification(path, len(names))
        parts = three_way_split(len(everything), seed, HOLDOUT_FRACTION, HOLDOUT_FRACTION)
        examples = [everything[i] for i in parts[split]]
        sizes = " / ".join(f"{k} {len(v)}" for k, v in parts.items())
        info = (
            f"{folder} {split}: {path} ({len(everything)} lines) split 80/10/10 by seed {seed} "
            f"into {sizes}; labels {_label_map(names)} ({meaning}).{_fallback_note(path, fallbacks)}"
        )
        return Dataset(folder, split, "classify", examples, len(names), list(names), info)

    return build


def _read_e2e(path: Path) -> tuple[list[tuple[str, str]], dict[str, list[str]]]:
    """Read an E2E ``mr,ref`` CSV into its (mr, ref) pairs and refs grouped by MR (file order kept)."""
    if not path.is_file():
        raise LorakitError(f"{path}: file not found (is the data root right?)")
    header, rows, _ = read_csv_rows(path)
    columns = {h.lower(): h for h in header}
    if "mr" not in columns or "ref" not in columns:
        raise LorakitError(f"{path}:1: expected columns mr,ref, found {header}")
    pairs, grouped = [], {}
    for number, row in rows:
        mr, ref = row[columns["mr"]].strip(), row[columns["ref"]].strip()
        if not mr or not ref:
            raise LorakitError(f"{path}:{number}: empty {'mr' if not mr else 'ref'}")
        pairs.append((mr, ref))
        grouped.setdefault(mr, []).append(ref)
    return pairs, grouped


def _e2e_grouped(grouped: dict[str, list[str]], mrs: list[str]) -> list[GenerationExample]:
    """One example per MR: first reference as the completion, all references for scoring."""
    return [GenerationExample(E2E_PROMPT_PREFIX + mr, grouped[mr][0], tuple(grouped[mr])) for mr in mrs]


def _build_e2e(root: Path, split: str, seed: int) -> Dataset:
    prompt_note = f'prompt = "{E2E_PROMPT_PREFIX}" + MR'
    if split == "test":
        path = root / "e2e" / "testset_w_refs.csv"
        pairs, grouped = _read_e2e(path)
        examples = _e2e_grouped(grouped, list(grouped))
        info = (
            f"e2e test: {path}, {len(pairs)} pairs grouped into {len(examples)} MRs with all "
            f"references each (completion = first reference); {prompt_note}."
        )
        return Dataset("e2e", split, "generate", examples, info=info)
    path = root / "e2e" / "devset.csv"
    pairs, grouped = _read_e2e(path)
    mrs = list(grouped)
    kept, held = holdout_split(len(mrs), HOLDOUT_FRACTION, seed)
    if split == "dev":
        examples = _e2e_grouped(grouped, [mrs[i] for i in held])
        what = f"{len(held)} MRs held out, one example per MR with all references"
    else:
        held_mrs = {mrs[i] for i in held}
        examples = [
            GenerationExample(E2E_PROMPT_PREFIX + mr, ref, tuple(grouped[mr]))
            for mr, ref in pairs
            if mr not in held_mrs
        ]
        what = f"{len(kept)} MRs, one example per (MR, reference) pair"
    info = (
        f"e2e {split}: {path} ({len(pairs)} pairs, {len(mrs)} MRs) with {HOLDOUT_FRACTION:.0%} of "
        f"MRs held out as dev by seed {seed}; this split: {what}; {prompt_note}."
    )
    return Dataset("e2e", split, "generate", examples, info=info)


RECIPES: dict[str, Recipe] = {
    recipe.name: recipe
    for recipe in [
        Recipe(
            "sst2",
            "classify",
            ("train", "dev", "test"),
            "binary sentiment, splits as given",
            _given_splits(
                "sst2", ["negative", "positive"], {"train": "train.txt", "dev": "dev.txt", "test": "test.txt"}
            ),
        ),
        Recipe(
            "trec",
            "classify",
            ("train", "dev", "test"),
            "6-way question type; dev = seeded 10% of train.txt",
            _build_trec,
        ),
        Recipe(
            "subj",
            "classify",
            ("train", "dev", "test"),
            "subjective/objective; seeded 80/10/10 split of all.txt",
            _seeded_three_way("subj", ["subjective", "objective"], "as given by the source"),
        ),
        Recipe(
            "mr",
            "classify",
            ("train", "dev", "test"),
            "movie-review polarity; seeded 80/10/10 split of all.txt",
            _seeded_three_way("mr", ["negative", "positive"], "review polarity"),
        ),
        Recipe(
            "e2e",
            "generate",
            ("train", "dev", "test"),
            "restaurant MR -> sentence; train/dev from devset.csv, test = testset_w_refs.csv",
            _build_e2e,
        ),
    ]
}


def load_recipe(name: str, split: str, root: Path, seed: int = 0) -> Dataset:
    """Build split ``split`` of recipe ``name`` from ``root``; unknown names/splits list the valid ones."""
    if name not in RECIPES:
        raise LorakitError(f"unknown data set {name!r}; recipes are {sorted(RECIPES)}")
    recipe = RECIPES[name]
    if split not in recipe.splits:
        raise LorakitError(f"{name} has no split {split!r}; valid splits are {list(recipe.splits)}")
    return recipe.build(root, split, seed)

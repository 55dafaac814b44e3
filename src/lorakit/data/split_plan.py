"""Which rows train, which pick the best checkpoint, which are reported: splits that cannot lie.

``plan_splits`` turns what the user gave into three data sets and a report of how they were made:

- a recipe (sst2, trec, …): its own splits, as before;
- a folder with ``train`` and ``dev`` (and maybe ``test``) files: those files;
- a single file, or a folder without ``dev``: a seeded ``eval_fraction`` of its rows is held out as
  dev (:func:`lorakit.data.splits.hold_out`) and never trained on;
- ``eval_data`` / ``test_data``: explicit files for dev / test, overriding the above.

Evaluating on rows that were trained on needs ``eval_on_train_rows=True``, and the report then says
``held_out: false`` in as many words. The report (files, counts, seed, fraction, bad rows, and how
many evaluation inputs also occur in the training rows) goes to ``metrics.json`` and the console.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from lorakit.data.examples import Dataset
from lorakit.data.files import Columns, check_suffix, find_split_file, load_files
from lorakit.data.recipes import RECIPES, load_recipe
from lorakit.data.root import resolve_data_root
from lorakit.data.splits import hold_out
from lorakit.errors import LorakitError

DEFAULT_EVAL_FRACTION = 0.1
SPLIT_SEED = 0  # held-out rows stay the same when the training seed changes (as for the recipes)
UNSAFE_OPTION = "--eval-on-train-rows"  # the option's CLI spelling, named in errors and warnings
BAD_ROWS_SHOWN = 5  # reasons listed in the report; the count covers all


@dataclass
class TrainingSplits:
    """The three data sets of a run and the JSON report of how they were made."""

    train: Dataset
    eval: Dataset  # picks the best checkpoint during training
    test: Dataset  # the final report
    report: dict[str, Any]

    def lines(self) -> list[str]:
        """The report as a few human-readable lines (printed before training)."""
        return describe(self.report)


def plan_splits(
    data: str,
    *,
    data_root: str | Path | None = None,
    eval_split: str = "dev",
    test_split: str | None = None,
    eval_data: str | None = None,
    test_data: str | None = None,
    eval_fraction: float = DEFAULT_EVAL_FRACTION,
    seed: int = SPLIT_SEED,
    eval_on_train_rows: bool = False,
    columns: Columns | None = None,
    skip_bad_rows: bool = False,
    test_limit: int | None = None,
) -> TrainingSplits:
    """Read the train, eval and test data of a run; see the module docstring for the rules.

    ``test_split`` None means: ``test`` when a test file was given (or, for generation, exists), else
    ``dev``. ``test_limit`` keeps the first N test examples.
    """
    columns = columns or Columns()
    for name, split in (("eval_split", eval_split), ("test_split", test_split)):
        if split == "train" and not eval_on_train_rows:
            raise LorakitError(f"{name} 'train' would evaluate on training rows; pass {UNSAFE_OPTION} if you mean it")
    if data in RECIPES:
        sets, how = _recipe_sets(data, data_root, eval_split, test_split, eval_data, test_data, columns, seed)
    elif Path(data).exists():
        sets, how = _file_sets(Path(data), eval_data, test_data, eval_fraction, seed, eval_on_train_rows,
                               columns, skip_bad_rows)
    else:
        raise LorakitError(f"unknown data set {data!r}: not a recipe ({', '.join(sorted(RECIPES))}) "
                           f"and no such file or directory")
    train = sets["train"]
    if test_split is None:
        given = test_data is not None or (train.task == "generate" and "test" in sets)
        test_split = "test" if given and "test" in sets else "dev"
    for name, split in (("eval_split", eval_split), ("test_split", test_split)):
        if split not in sets:
            raise LorakitError(f"{name} {split!r}: {data} has no such split (available: {sorted(sets)})")
    test = sets[test_split]
    if test_limit is not None and test_limit < len(test):
        test = replace(test, examples=test.examples[:test_limit],
                       info=f"{test.info} Limited to the first {test_limit} of {len(test)} examples.")
    held_out = not any(s == "train" or how.get(s) == "train" for s in (eval_split, test_split))
    report = _report(train, sets[eval_split], eval_split, test, test_split, how, seed, eval_fraction, held_out)
    return TrainingSplits(train, sets[eval_split], test, report)


def _recipe_sets(name: str, data_root: Any, eval_split: str, test_split: str | None, eval_data: str | None,
                 test_data: str | None, columns: Columns, seed: int) -> tuple[dict[str, Dataset], dict[str, str]]:
    if columns != Columns():
        raise LorakitError(f"column options apply to data files, not to the recipe {name!r}")
    root = resolve_data_root(data_root)
    wanted = {"train", eval_split, test_split or "dev"}
    if test_split is None and RECIPES[name].task == "generate":
        wanted.add("test")
    sets = {split: load_recipe(name, split, root, seed) for split in wanted if split in RECIPES[name].splits}
    how = {split: "recipe" for split in sets}
    for split, path in (("dev", eval_data), ("test", test_data)):
        if path is not None:
            sets[split] = _recipe_extra(sets["train"], Path(path), split)
            how[split] = "given file"
    return sets, how


def _recipe_extra(train: Dataset, path: Path, split: str) -> Dataset:
    """An extra file for a recipe: same task, labels as the recipe's indices."""
    check_suffix(path)
    extra = load_files({split: path})[split]
    if extra.task != train.task:
        raise LorakitError(f"{path}: a {extra.task} file cannot evaluate the {train.task} data set {train.name}")
    if train.task == "classify":
        if extra.label_names is not None or extra.num_labels > train.num_labels:
            raise LorakitError(f"{path}: labels must be the indices 0..{train.num_labels - 1} of {train.name}")
        extra = replace(extra, num_labels=train.num_labels, label_names=train.label_names)
    return extra


def _file_sets(path: Path, eval_data: str | None, test_data: str | None, fraction: float, seed: int,
               unsafe: bool, columns: Columns, skip: bool) -> tuple[dict[str, Dataset], dict[str, str]]:
    files: dict[str, Path] = {}
    peers: list[Path] = []
    if path.is_dir():
        files["train"] = find_split_file(path, "train")
        for split in ("dev", "test"):
            found = find_split_file(path, split, required=False)
            if found is not None:
                files[split] = found
        peers = sorted(p for p in path.iterdir() if p.is_file() and p.suffix in (".jsonl", ".csv", ".tsv"))
    else:
        check_suffix(path)
        files["train"] = path
    for split, given in (("dev", eval_data), ("test", test_data)):
        if given is not None:
            check_suffix(Path(given))
            files[split] = Path(given)
    for split in ("dev", "test"):
        if split in files and files[split].resolve() == files["train"].resolve() and not unsafe:
            raise LorakitError(f"the {split} file {files[split]} is the training file; evaluating on trained rows "
                               f"needs {UNSAFE_OPTION}")
    sets = load_files(files, columns, skip, label_peers=peers)
    how = {split: "given file" for split in sets}
    if "dev" not in sets:
        if unsafe:
            sets["dev"] = replace(sets["train"], split="dev", bad_rows=())
            how["dev"] = "train"
        else:
            sets["train"], sets["dev"] = hold_out(sets["train"], fraction, seed)
            how["dev"] = "held out"
    return sets, how


def _input_key(example: Any) -> Any:
    """What the model reads of an example (used to find evaluation inputs that were also trained on)."""
    text = getattr(example, "text", None)
    if text is not None:
        return text
    return tuple((m["role"], m["content"]) for m in example.messages[:-1]) or example.prompt


def _part(ds: Dataset, name: str, how: str, seed: int, fraction: float) -> dict[str, Any]:
    out = {"split": name, "source": ds.name, "examples": len(ds), "how": how, "info": ds.info}
    if how == "held out":
        out.update(seed=seed, fraction=fraction)
    return out


def _report(train: Dataset, dev: Dataset, eval_name: str, test: Dataset, test_name: str, how: dict[str, str],
            seed: int, fraction: float, held_out: bool) -> dict[str, Any]:
    seen = {_input_key(e) for e in train.examples}
    report = {
        "held_out": held_out,
        "seed": seed,
        "labels": train.label_names or (list(range(train.num_labels)) if train.num_labels else None),
        "train": _part(train, "train", "held-out rows removed" if how.get("dev") == "held out" else "as given",
                       seed, fraction),
        "eval": _part(dev, eval_name, how.get(eval_name, "given file"), seed, fraction),
        "test": _part(test, test_name, how.get(test_name, "given file"), seed, fraction),
        "inputs_also_in_train": {
            "eval": sum(_input_key(e) in seen for e in dev.examples),
            "test": sum(_input_key(e) in seen for e in test.examples),
        },
    }
    bad = [r for ds in _distinct(train, dev, test) for r in ds.bad_rows]
    report["bad_rows"] = {"count": len(bad), "first": bad[:BAD_ROWS_SHOWN]}
    return report


def _distinct(*sets: Dataset) -> list[Dataset]:
    """Each data set once (eval and test are often the same object)."""
    out: list[Dataset] = []
    for ds in sets:
        if all(ds is not other for other in out):
            out.append(ds)
    return out


def describe(report: dict[str, Any]) -> list[str]:
    """Human-readable lines of a split report."""
    lines = []
    for key in ("train", "eval", "test"):
        part = report[key]
        how = part["how"]
        if key == "test" and part == report["eval"]:
            lines.append("  test  = eval (no test file; --test-data FILE gives the final report its own split)")
            continue
        if how == "held out":
            how = f"{part['fraction'] * 100:g}% held out by seed {part['seed']}, never trained on"
        elif how == "held-out rows removed":
            how = "minus the held-out dev rows"
        elif how == "train":
            how = "THE TRAINING ROWS THEMSELVES"
        name = key if part["split"] == key else f"{key}: {part['split']}"
        lines.append(f"  {name:<10} {part['examples']:>7,} examples  {part['source']}  ({how})")
    if report.get("labels"):
        lines.append("  labels " + ", ".join(f"{i}={name}" for i, name in enumerate(report["labels"])))
    if not report["held_out"]:
        lines.append(f"  WARNING: evaluation uses rows that were trained on ({UNSAFE_OPTION}); its metrics "
                     f"do not measure generalisation")
    overlap = report["inputs_also_in_train"]
    if overlap["eval"] or overlap["test"]:
        lines.append(f"  note: {overlap['eval']} of {report['eval']['examples']} eval inputs (and {overlap['test']} of "
                     f"{report['test']['examples']} test inputs) also occur among the training rows: duplicate "
                     f"texts in the data, which make their metrics optimistic")
    bad = report["bad_rows"]
    if bad["count"]:
        lines.append(f"  skipped {bad['count']} bad row(s) (--skip-bad-rows); first: " + "; ".join(bad["first"]))
    return lines

"""``load_dataset``: one entry point for named recipes and generic data files."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from lorakit.data.examples import Dataset
from lorakit.data.files import Columns, find_split_file, load_file
from lorakit.data.recipes import RECIPES, load_recipe
from lorakit.data.root import resolve_data_root
from lorakit.data.split_plan import DEFAULT_EVAL_FRACTION
from lorakit.data.splits import hold_out
from lorakit.errors import LorakitError


def load_dataset(
    name_or_path: str,
    split: str = "train",
    data_root: str | Path | None = None,
    *,
    seed: int = 0,
    text_column: str | None = None,
    label_column: str | None = None,
    prompt_column: str | None = None,
    completion_column: str | None = None,
    limit: int | None = None,
    skip_bad_rows: bool = False,
) -> Dataset:
    """Load one split of a named recipe (``sst2``, ``trec``, ``subj``, ``mr``, ``e2e``) or of a file.

    A recipe name wins over a same-named path; anything else must be an existing ``.jsonl``, ``.csv``
    or ``.tsv`` file (whose own contents are the split, so ``split`` is ignored) or a directory holding
    ``{split}.jsonl|csv|tsv``; a directory without a ``dev`` file gets the seeded held-out dev split
    that ``lorakit train`` uses (:mod:`lorakit.data.split_plan`), and its ``train`` loses those rows.
    ``seed`` drives the seeded splits. The ``*_column`` options apply to files only. ``limit`` keeps the
    first ``limit`` examples of the split. ``skip_bad_rows`` skips (and lists) malformed rows.
    """
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise LorakitError(f"limit must be a positive int or None, got {limit!r}")
    columns = Columns(text_column, label_column, prompt_column, completion_column)
    if name_or_path in RECIPES:
        if columns != Columns():
            raise LorakitError(f"column options apply to data files, not to the recipe {name_or_path!r}")
        dataset = load_recipe(name_or_path, split, resolve_data_root(data_root), seed)
    elif Path(name_or_path).is_dir() and split in ("train", "dev") and find_split_file(
            Path(name_or_path), "dev", required=False) is None:
        held = hold_out(load_file(name_or_path, "train", columns, skip_bad_rows), DEFAULT_EVAL_FRACTION, seed)
        dataset = held[0] if split == "train" else held[1]
    elif Path(name_or_path).exists():
        dataset = load_file(name_or_path, split, columns, skip_bad_rows)
    else:
        raise LorakitError(
            f"unknown data set {name_or_path!r}: not a recipe ({', '.join(sorted(RECIPES))}) "
            f"and no such file or directory"
        )
    if limit is not None and limit < len(dataset.examples):
        dataset = replace(
            dataset,
            examples=dataset.examples[:limit],
            info=f"{dataset.info} Limited to the first {limit} of {len(dataset.examples)} examples.",
        )
    return dataset

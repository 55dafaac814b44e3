"""Data: named data sets and generic files → examples → tokenized batches.

``batches`` (the collators) is not imported here, so that reading data never imports torch's
tokenizer stack; import it as ``lorakit.data.batches``.
"""

from lorakit.data.examples import ClassificationExample, Dataset, GenerationExample
from lorakit.data.loader import load_dataset
from lorakit.data.recipes import RECIPES
from lorakit.data.root import resolve_data_root

__all__ = [
    "RECIPES",
    "ClassificationExample",
    "Dataset",
    "GenerationExample",
    "load_dataset",
    "resolve_data_root",
]

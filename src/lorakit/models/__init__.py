"""Hugging Face models for lorakit: embedded defaults by name, offline loading, GGUF conversion, saving.

The lorakit package that loads ``transformers`` models (``serve/kv.py`` also uses its cache classes);
imported inside functions, so importing ``lorakit.models`` stays cheap.
"""

from lorakit.models.cache import cache_root
from lorakit.models.embedded import EMBEDDED, EmbeddedModel, embedded_names
from lorakit.models.loading import TASKS, LoadedModel, load_model, model_family
from lorakit.models.resolve import resolve_model_path
from lorakit.models.saving import save_merged

__all__ = [
    "EMBEDDED",
    "TASKS",
    "EmbeddedModel",
    "LoadedModel",
    "cache_root",
    "embedded_names",
    "load_model",
    "model_family",
    "resolve_model_path",
    "save_merged",
]

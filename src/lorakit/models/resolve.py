"""Turn what a user typed (an embedded name or a folder) into a local Hugging Face model folder."""

from __future__ import annotations

import os
from pathlib import Path

from lorakit.errors import LorakitError
from lorakit.models.embedded import EMBEDDED, embedded_names, locate_embedded

__all__ = ["resolve_model_path"]


def resolve_model_path(name_or_path: str | os.PathLike[str]) -> Path:
    """The local HF model folder (with ``config.json``) for an embedded name or a folder path.

    Embedded names win over a folder of the same name in the working directory. For ``smollm2`` this is
    the cached safetensors conversion of the packaged GGUF file, converted on first use (~30 s).
    Raises ValueError for anything else, saying what is accepted.
    """
    if not isinstance(name_or_path, str | os.PathLike):
        raise TypeError(f"model must be a name or a path, got {type(name_or_path).__name__}")
    text = os.fspath(name_or_path)
    entry = EMBEDDED.get(text)
    if entry is not None:
        located = locate_embedded(entry.name)
        if entry.kind == "gguf":
            from lorakit.models.gguf import converted_gguf  # keeps the hashing/caching code off plain imports

            return converted_gguf(entry.name, located)
        return located
    path = Path(text).expanduser()
    if path.is_dir() and (path / "config.json").is_file():
        return path
    accepted = f"one of the embedded names ({', '.join(embedded_names())}) or a local folder with config.json"
    if path.is_dir():
        why = f"folder {str(path)!r} has no config.json"
    elif path.exists():
        why = f"{str(path)!r} is a file, not a model folder"
    else:
        why = f"{text!r} is neither an embedded model nor an existing folder"
    raise LorakitError(f"{why}; expected {accepted}")

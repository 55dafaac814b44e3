"""The adapters folder: safe name → path resolution and a listing of what can be loaded.

A name is one path component of ``[A-Za-z0-9._-]`` (not ``.`` or ``..``), so it can never climb out
of the folder, be absolute, or carry URL-encoded separators. The resolved path (symlinks followed)
must still lie inside the folder, and so must the two files read from it: a symlink pointing elsewhere
(the adapter's folder or one of its files) is refused like any other bad name.
"""

from __future__ import annotations

import re
from pathlib import Path

from lorakit.errors import LorakitError
from lorakit.io import CONFIG_NAME, WEIGHTS_NAME

NAME_PATTERN = re.compile(r"[A-Za-z0-9._-]{1,128}")


def check_name(name: object) -> str:
    """Return ``name`` if it is a valid adapter name, else raise ``ValueError`` saying what is allowed."""
    if not isinstance(name, str) or not NAME_PATTERN.fullmatch(name) or name in (".", ".."):
        shown = repr(name)[:80]
        raise LorakitError(f"invalid adapter name {shown}: use 1-128 characters of A-Z a-z 0-9 . _ - "
                           f"(not '.' or '..')")
    return name


class AdapterNotFound(LookupError):
    """No adapter of that name (the HTTP layer answers 404)."""


class AdapterFolder:
    """A folder holding one adapter per sub-folder (PEFT layout), looked up by name only."""

    def __init__(self, root: str | Path) -> None:
        root = Path(root)
        if not root.is_dir():
            raise LorakitError(f"adapters folder not found: {root}")
        self.root = root.resolve()

    def resolve(self, name: str) -> Path:
        """The folder of adapter ``name``; ``ValueError`` for a bad name, ``AdapterNotFound`` if absent."""
        check_name(name)
        candidate = self.root / name
        try:
            resolved = candidate.resolve(strict=True)
        except (OSError, RuntimeError):  # missing, or a symlink loop
            raise AdapterNotFound(f"adapter {name!r} not found in the adapters folder") from None
        if not resolved.is_relative_to(self.root) or resolved == self.root:
            # A symlink pointing out of the folder: treat it as absent, and say no more about it.
            raise AdapterNotFound(f"adapter {name!r} not found in the adapters folder")
        if not resolved.is_dir() or not (resolved / CONFIG_NAME).is_file():
            raise AdapterNotFound(f"adapter {name!r} not found in the adapters folder (no {CONFIG_NAME})")
        for file in (CONFIG_NAME, WEIGHTS_NAME):  # a file symlinked out of the folder counts as a way out
            if not (resolved / file).resolve().is_relative_to(self.root):
                raise AdapterNotFound(f"adapter {name!r} not found in the adapters folder")
        return resolved

    def available(self) -> list[str]:
        """Names of every loadable adapter in the folder, sorted."""
        names = []
        for child in sorted(self.root.iterdir()):
            try:
                self.resolve(child.name)
            except (ValueError, AdapterNotFound):
                continue
            names.append(child.name)
        return names

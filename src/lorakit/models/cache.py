"""A folder cache for models that are expensive to build (a GGUF file converted to safetensors).

A cache entry is built in a temporary sibling folder and then renamed into place. A rename within one
file system is atomic, so an entry either exists complete or not at all: a crash, Ctrl-C or full disk
mid-build never leaves a half-written model that a later load would trust.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from lorakit.errors import LorakitError
from lorakit.io.atomic import sync, sync_folder

__all__ = ["cache_root", "cached_folder"]

logger = logging.getLogger(__name__)

CACHE_ENV = "LORAKIT_CACHE"  # overrides the cache root (tests, shared machines, read-only homes)
_TMP_PREFIX = ".tmp-"  # build folders; never returned as entries
_STALE_TMP_SECONDS = 3600.0  # a build folder this old belongs to a crashed process, not a running one


def cache_root() -> Path:
    """The lorakit cache root: ``$LORAKIT_CACHE`` if set, else ``~/.cache/lorakit``."""
    env = os.environ.get(CACHE_ENV)
    return Path(env).expanduser() if env else Path.home() / ".cache" / "lorakit"


def cached_folder(
    entry: str,
    build: Callable[[Path], None],
    *,
    required: Sequence[str] = ("config.json",),
    root: Path | None = None,
) -> Path:
    """The folder ``<root>/models/<entry>``, calling ``build(tmp_dir)`` to fill it the first time.

    ``build`` writes into an empty temporary folder; only when it returns is that folder renamed to the
    entry. An existing entry that lacks one of the ``required`` files was not made by this function
    (e.g. edited by hand) and is rebuilt rather than trusted.
    """
    if not entry or "/" in entry or "\\" in entry or entry.startswith("."):
        raise LorakitError(f"cache entry name must be a plain folder name, got {entry!r}")
    models = (root if root is not None else cache_root()) / "models"
    final = models / entry
    if _complete(final, required):
        return final
    models.mkdir(parents=True, exist_ok=True)
    _remove_stale_builds(models)
    if final.exists():
        logger.warning("cache entry %s is incomplete (missing one of %s); rebuilding it", final, list(required))
        shutil.rmtree(final)
    tmp = Path(tempfile.mkdtemp(prefix=f"{_TMP_PREFIX}{entry}-", dir=models))
    try:
        build(tmp)
        missing = [name for name in required if not (tmp / name).exists()]
        if missing:
            raise RuntimeError(f"building cache entry {entry!r} did not write {missing}")
        sync_folder(tmp)  # a power cut must not leave a complete-looking entry with lost data
        try:
            os.rename(tmp, final)
            sync(models)
        except OSError:
            # Another process finished the same entry first; its copy is as good as ours.
            if not _complete(final, required):
                raise
            logger.info("cache entry %s was built concurrently; using that copy", final)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return final


def _complete(folder: Path, required: Sequence[str]) -> bool:
    return folder.is_dir() and all((folder / name).exists() for name in required)


def _remove_stale_builds(models: Path) -> None:
    """Delete build folders left by crashed processes (they can hold hundreds of MB each)."""
    now = time.time()
    for path in models.glob(f"{_TMP_PREFIX}*"):
        try:
            if path.is_dir() and now - path.stat().st_mtime > _STALE_TMP_SECONDS:
                shutil.rmtree(path, ignore_errors=True)
        except OSError:  # raced with its owner or another cleaner: nothing to do
            pass

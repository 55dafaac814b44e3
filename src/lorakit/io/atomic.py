"""The one atomic file write: a reader (or a crash) sees the old file or the new one, never half a file.

Every file lorakit writes goes through :func:`replacing` (directly, or through :func:`write_atomic`
for bytes / text / JSON): the data goes to a temporary file in the target's own folder (so the rename
never crosses a file system), is flushed and fsync'd, is renamed over the target, and the folder is
fsync'd so that the rename itself survives a power cut. On any failure the temporary file is removed
and the old file is left as it was.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

__all__ = ["replacing", "sync", "sync_folder", "write_atomic", "write_json_atomic"]

# mkstemp creates files 0600; a written file gets the mode open() would give it (0666 less the umask).
# Read once here: os.umask can only be read by setting it, which is not thread-safe later on.
_UMASK = os.umask(0o022)
os.umask(_UMASK)
_FILE_MODE = 0o666 & ~_UMASK


def sync(path: str | Path) -> None:
    """fsync a file or a folder (a folder's entries: the renames into it). Folders: POSIX only."""
    path = Path(path)
    if os.name != "posix" and path.is_dir():  # Windows cannot open a folder to fsync it
        return
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def sync_folder(folder: str | Path) -> None:
    """fsync every file under ``folder``, then the folders themselves: before a folder is renamed into place.

    A folder published by one rename (a checkpoint, a model-cache entry) must not appear with files whose
    data a power cut could still lose; the caller fsyncs the parent after its rename.
    """
    folder = Path(folder)
    for path in sorted(folder.rglob("*"), key=lambda p: len(p.parts), reverse=True):  # files before their folder
        sync(path)
    sync(folder)


@contextmanager
def replacing(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; when the block ends without an error, publish it there.

    For writers that want a file name (``safetensors.save_file``, a GGUF writer): write the whole file
    to the yielded path inside the ``with`` block. Missing parent folders are created.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        os.chmod(tmp, _FILE_MODE)
        sync(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    sync(path.parent)


def write_atomic(path: str | Path, data: bytes | str) -> Path:
    """Write ``data`` (text is UTF-8 encoded) to ``path`` atomically and durably; returns ``path``."""
    payload = data.encode("utf-8") if isinstance(data, str) else data
    with replacing(path) as tmp:
        tmp.write_bytes(payload)
    return Path(path)


def write_json_atomic(path: str | Path, obj: Any, **dumps: Any) -> Path:
    """``json.dumps(obj, **dumps)`` plus a final newline, written with :func:`write_atomic`.

    The text is built before the file is touched, so an object that cannot be serialised leaves the
    old file in place.
    """
    return write_atomic(path, json.dumps(obj, **dumps) + "\n")

"""Where the shared data sets live: an explicit path, else ``$LORAKIT_DATA``, else ``../shared/data``."""

from __future__ import annotations

import os
from pathlib import Path

from lorakit.errors import LorakitError

ENV_VAR = "LORAKIT_DATA"


def default_data_roots() -> list[Path]:
    """Candidate default roots, in the order tried: beside the repository checkout, then beside cwd.

    The data sits at ``../shared/data`` relative to the project checkout; trying the source tree first
    makes it work from any cwd in a checkout, and the cwd variant covers an installed package run from
    the project folder.
    """
    repo_root = Path(__file__).resolve().parents[3]  # src/lorakit/data/root.py -> repository root
    return [repo_root / ".." / "shared" / "data", Path.cwd() / ".." / "shared" / "data"]


def resolve_data_root(data_root: str | Path | None = None) -> Path:
    """Return the data root as an absolute path: ``data_root`` > ``$LORAKIT_DATA`` > defaults.

    An explicit argument or environment variable that names a missing folder is an error rather than a
    silent fall-through to the defaults, so a typo never reads different data than intended.
    """
    if data_root is not None:
        tried = [(Path(data_root).expanduser(), "the data_root argument / --data-root")]
    elif os.environ.get(ENV_VAR):
        tried = [(Path(os.environ[ENV_VAR]).expanduser(), f"${ENV_VAR}")]
    else:
        tried = [(path, "default") for path in default_data_roots()]
    for path, _ in tried:
        if path.is_dir():
            return path.resolve()
    listing = "; ".join(f"{path} ({source})" for path, source in tried)
    raise LorakitError(
        f"data root not found; tried: {listing}. Pass --data-root PATH (data_root=...) or set "
        f"{ENV_VAR}=PATH to the folder holding sst2/, trec/, subj/, mr/, e2e/."
    )

"""The jobs file of ``lorakit train-many``: one shared model, one ``[[job]]`` table per adapter.

::

    model = "minilm"          # top level: the shared base (and defaults for every job)
    base_dtype = "fp32"
    max_steps = 200
    [[job]]
    name = "sst2-r4"          # DIR/sst2-r4/ is laid out like `lorakit train --out DIR/sst2-r4`
    data = "sst2"
    rank = 4
    [[job]]
    name = "trec-r8"
    data = "trec"
    rank = 8
    targets = ["q", "k", "v"]

Every key is a :class:`~lorakit.train.config.TrainConfig` field (``lorakit train``'s option names),
validated by it; a job's keys override the top level. What defines the one base model (:data:`SHARED`)
must be the same for every job.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from lorakit.core.variants import INITS, lookup
from lorakit.errors import LorakitError
from lorakit.train.config import TrainConfig, read_config_file

# One base model for all jobs: these options may be set at the top level only (or to the same value).
SHARED = ("model", "base_dtype", "device", "threads", "checkpointing")
# Set by train-many itself, never by the file.
RESERVED = ("out", "resume")
# Options of the train-many run itself (top level only), not of any job.
RUN_OPTIONS = ("max_rows",)
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")


def jobs_from_mapping(raw: Mapping[str, Any], source: str = "jobs") -> dict[str, TrainConfig]:
    """``{name: TrainConfig}`` from a parsed jobs file (see the module doc); bad input raises ValueError."""
    top = {str(k).replace("-", "_"): v for k, v in raw.items() if k != "job"}
    tables = raw.get("job")
    if not isinstance(tables, list | tuple) or not tables or not all(isinstance(t, Mapping) for t in tables):
        raise LorakitError(f"{source}: needs one [[job]] table per adapter (none found)")
    for key in RESERVED:
        if key in top:
            raise LorakitError(f"{source}: {key!r} is set by train-many (--out DIR, --resume), not by the file")
    jobs: dict[str, TrainConfig] = {}
    for number, table in enumerate(tables, 1):
        table = {str(k).replace("-", "_"): tuple(v) if isinstance(v, list) else v for k, v in table.items()}
        name = table.pop("name", None)
        where = f"{source}: job {number}" + (f" ({name!r})" if name else "")
        if not isinstance(name, str) or not NAME.match(name):
            raise LorakitError(f"{where}: needs a name of letters, digits, '.', '_' or '-' (it names its folder), "
                               f"got {name!r}")
        if name in jobs:
            raise LorakitError(f"{where}: the name {name!r} is used twice")
        for key in RESERVED:
            if key in table:
                raise LorakitError(f"{where}: {key!r} is set by train-many (--out DIR/{name}, --resume)")
        for key in SHARED:
            if key in table and key in top and table[key] != top[key]:
                raise LorakitError(f"{where}: {key} = {table[key]!r} differs from the shared {top[key]!r}; "
                                   f"all jobs train over one base model")
        jobs[name] = TrainConfig.from_mapping({**top, **table}, source=where)
    check_jobs(jobs)
    return jobs


def check_jobs(jobs: Mapping[str, TrainConfig]) -> None:
    """What one mixed batch over one base needs: the same base settings, plain LoRA, no packing."""
    first_name, first = next(iter(jobs.items()))
    for name, cfg in jobs.items():
        for key in SHARED:
            if getattr(cfg, key) != getattr(first, key):
                raise LorakitError(f"job {name!r}: {key} {getattr(cfg, key)!r} differs from job {first_name!r}'s "
                                   f"{getattr(first, key)!r}; all jobs train over one base model")
        if cfg.model is None or cfg.data is None:
            raise LorakitError(f"job {name!r}: needs a model (top level) and data")
        unsupported = [opt for opt, on in (("full", cfg.full), ("bitfit", cfg.bitfit), ("dora", cfg.dora),
                                           ("packing", cfg.packing),
                                           (f"init={cfg.init}", lookup(INITS, "init", cfg.init).moves_base)) if on]
        if unsupported:
            raise LorakitError(f"job {name!r}: train-many trains plain LoRA adapters over a shared frozen base; "
                               f"not supported here: {', '.join(unsupported)} (use lorakit train)")


def read_jobs(path: str | Path) -> tuple[dict[str, TrainConfig], dict[str, Any]]:
    """Parse and validate a jobs file (TOML, or YAML with the same keys): its jobs and its run options
    (:data:`RUN_OPTIONS` found at the top level)."""
    raw = dict(read_config_file(path))
    options = {}
    for key in list(raw):
        name = str(key).replace("-", "_")
        if name in RUN_OPTIONS:
            options[name] = raw.pop(key)
    return jobs_from_mapping(raw, source=str(path)), options


def job_configs(jobs: Mapping[str, TrainConfig], out: str | Path, resume: bool) -> dict[str, TrainConfig]:
    """Each job's config with its output folder ``out/<name>`` and the resume flag."""
    return {name: dataclasses.replace(cfg, out=str(Path(out) / name), resume=resume) for name, cfg in jobs.items()}

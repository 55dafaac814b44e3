"""What every benchmark's results file must hold: the run's provenance (``machine``), in the JSON and the table."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from benchmarks.common import provenance_line

MACHINE_KEYS = {"date", "lorakit_commit", "lorakit_dirty", "command", "cpu", "cpus", "threads", "versions"}


def check_provenance(json_path: Path, md_path: Path | None = None, command: str | None = None) -> dict[str, Any]:
    """Read ``json_path``; fail unless it records :func:`benchmarks.common.machine` (and ``command``, if given),
    and unless ``md_path``'s third line, under its title, is that run's provenance line. Returns the JSON."""
    data = json.loads(json_path.read_text(encoding="utf-8"))
    info = data.get("machine")
    assert isinstance(info, dict), f"{json_path.name} records no machine()"
    assert set(info) >= MACHINE_KEYS, f"machine() fields missing: {sorted(MACHINE_KEYS - set(info))}"
    if command is not None:
        assert info["command"] == command
    if md_path is not None:
        title, blank, line = md_path.read_text(encoding="utf-8").splitlines()[:3]
        assert title.startswith("# ") and blank == "" and line == provenance_line(info)
    assert not list(json_path.parent.glob("*.tmp")), "a temporary file was left behind"
    return data


@pytest.fixture
def provenance() -> Callable[..., dict[str, Any]]:
    """:func:`check_provenance`, for the benchmarks' tests."""
    return check_provenance

"""Shared helpers for the reproduction scripts: results folder, JSON/markdown writing, timing, caching."""

from __future__ import annotations

import json
import os
import platform
import statistics
import time
from collections.abc import Callable
from datetime import date
from pathlib import Path
from typing import Any

import torch

RESULTS = Path(__file__).resolve().parents[1] / "results"


def machine() -> dict[str, Any]:
    """Where a figure was measured: CPU count, torch version, threads, date."""
    return {"cpus": os.cpu_count(), "torch": torch.__version__, "threads": torch.get_num_threads(),
            "platform": platform.platform(), "date": date.today().isoformat()}


def median_time(fn: Callable[[], Any], reps: int) -> tuple[float, list[float]]:
    """Median wall time of ``fn`` over ``reps`` calls (seconds), and all the samples."""
    samples = []
    for _ in range(reps):
        start = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - start)
    return statistics.median(samples), samples


def write_results(name: str, payload: dict[str, Any], table: str) -> tuple[Path, Path]:
    """Write ``results/<name>.json`` and ``results/<name>.md`` (atomically: temp + rename)."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    out_json, out_md = RESULTS / f"{name}.json", RESULTS / f"{name}.md"
    for path, text in ((out_json, json.dumps(payload, indent=2) + "\n"), (out_md, table)):
        tmp = path.with_suffix(path.suffix + ".tmp")
        tmp.write_text(text, encoding="utf-8")
        tmp.replace(path)
    return out_json, out_md


def markdown_table(rows: list[dict[str, Any]], columns: list[str]) -> str:
    """A GitHub markdown table of ``rows`` restricted to ``columns``."""

    def fmt(v: Any) -> str:
        if isinstance(v, float):
            return f"{v:.4g}"
        if isinstance(v, int) and not isinstance(v, bool):
            return f"{v:,}"
        return str(v)

    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(fmt(r.get(c, "")) for c in columns) + " |" for r in rows]
    return "\n".join(lines) + "\n"

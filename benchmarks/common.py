"""What every benchmark shares: the results folder, provenance of a figure, result files, tables, spreads.

Every results file records :func:`machine` (when, on which commit, by which command, on which CPU,
with which library versions and threads), so each figure traces back to the run that made it.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
# CPU features that decide which kernels torch runs (bf16 matmuls need avx512_bf16 or AMX to be fast).
CPU_FLAGS = ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile")
PACKAGES = ("torch", "transformers", "peft", "vllm", "bitsandbytes")


def command(args: Sequence[str] | None = None, module: str | None = None) -> str:
    """The command line that reproduces this run: ``python -m benchmarks.X ARGS`` from the repository root.

    ``args`` defaults to ``sys.argv[1:]``; ``module`` to the module run with ``-m`` (or the script run by
    path, named as its module), which a caller that is not ``__main__`` (a test) passes itself.
    """
    args = list(sys.argv[1:] if args is None else args)
    if module is None:
        spec = getattr(sys.modules.get("__main__"), "__spec__", None)
        module = spec.name if spec is not None and spec.name.startswith("benchmarks.") else None
    if module is None:
        script = Path(sys.argv[0]).resolve() if sys.argv and sys.argv[0] else None
        module = (".".join(script.relative_to(REPO).with_suffix("").parts)
                  if script is not None and script.is_relative_to(REPO) else "benchmarks.<script>")
    return " ".join(["python", "-m", module, *args])


def cpu_info(cpuinfo: Path = Path("/proc/cpuinfo")) -> dict[str, Any]:
    """The CPU's model name and which of :data:`CPU_FLAGS` it has (Linux; elsewhere what platform knows)."""
    try:
        text = cpuinfo.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return {"model": platform.processor() or None, "flags": None}
    fields: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip() not in fields:  # the first processor's fields
            fields[key.strip()] = value.strip()
    flags = set(fields.get("flags", "").split())
    return {"model": fields.get("model name"), "flags": {f: f in flags for f in CPU_FLAGS}}


def git_state(repo: Path = REPO) -> dict[str, Any]:
    """The checkout's commit and whether its tracked files differ from it (None where git is unavailable)."""

    def git(*args: str) -> str | None:
        try:
            # --no-optional-locks: reading the state must never take .git/index.lock from a commit in progress
            done = subprocess.run(["git", "--no-optional-locks", "-C", str(repo), *args], capture_output=True,
                                  text=True, timeout=30)
        except (OSError, subprocess.TimeoutExpired):
            return None
        return done.stdout.strip() if done.returncode == 0 else None

    commit = git("rev-parse", "HEAD")
    # Results files a running sweep has just rewritten are not code: they do not make the checkout dirty.
    status = git("status", "--porcelain", "--untracked-files=no", "--", ".", ":(exclude)benchmarks/results")
    return {"commit": commit, "dirty": None if status is None else bool(status)}


def versions(packages: Iterable[str] = PACKAGES) -> dict[str, str | None]:
    """Installed versions of the packages a figure depends on (None where one is not installed)."""
    found: dict[str, str | None] = {}
    for name in packages:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = None
    return found


# The checkout as this process found it. A benchmark writes its results at the end, which may be hours
# later; by then HEAD may have moved, but the code that ran is the one it started from.
_STARTED: dict[str, Any] | None = None


def started_state() -> dict[str, Any]:
    """:func:`git_state` when this process first asked (benchmarks.common is imported at start-up)."""
    global _STARTED
    if _STARTED is None:
        _STARTED = git_state()
    return _STARTED


def machine(args: Sequence[str] | None = None, module: str | None = None) -> dict[str, Any]:
    """Where, when and how a figure was measured: date (UTC), commit, command, CPU, versions, threads.

    ``args`` / ``module``: as :func:`command` takes them (by default this process's own command line).
    The commit and dirty flag are the checkout's when the process started; when either changed since, the
    state at write time is recorded beside them (``lorakit_commit_at_write``, ``lorakit_dirty_at_write``).
    """
    import torch  # here, not at the top: the helpers above work without it

    start, now = started_state(), git_state()
    moved = {f"lorakit_{k}_at_write": now[k] for k in ("commit", "dirty")} if now != start else {}
    return {"date": datetime.now(UTC).isoformat(timespec="seconds"), **{f"lorakit_{k}": v for k, v in
            start.items()}, **moved, "command": command(args, module), "cpu": cpu_info(), "cpus": os.cpu_count(),
            "threads": torch.get_num_threads(), "versions": versions(), "python": platform.python_version(),
            "platform": platform.platform()}


def spread(values: Sequence[float]) -> dict[str, float | int]:
    """Median, min, max and count of repeated measurements (what a table shows as ``median (min–max)``)."""
    if not values:
        raise ValueError("spread() of no values")
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "n": len(values)}


def median_time(fn: Callable[[], Any], reps: int) -> tuple[float, list[float]]:
    """Median wall time of ``fn`` over ``reps`` calls (seconds), and all the samples."""
    samples = []
    for _ in range(reps):
        start = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - start)
    return statistics.median(samples), samples


def write_results(name: str, payload: dict[str, Any], table: str | None = None,
                  out: Path | None = None) -> tuple[Path, Path | None]:
    """Write ``<out>/<name>.json`` (with :func:`machine` under ``"machine"`` unless given) and ``<name>.md``.

    ``out`` defaults to ``benchmarks/results``. Each file is written atomically (temp file + rename),
    so an interrupted run never leaves half a file. A table whose text lacks the run's
    :func:`provenance_line` gets it under its title, so that every page says where it was measured.
    """
    out = RESULTS if out is None else Path(out)
    out.mkdir(parents=True, exist_ok=True)
    payload = payload if "machine" in payload else {"machine": machine(), **payload}
    info = payload["machine"]
    if table is not None and isinstance(info, dict) and {"date", "cpu", "cpus", "versions", "threads"} <= info.keys():
        table = with_provenance(table, info)
    out_json, out_md = out / f"{name}.json", (out / f"{name}.md" if table is not None else None)
    files = [(out_json, json.dumps(payload, indent=2, default=str) + "\n")]
    files += [(out_md, table)] if out_md is not None else []
    for path, text in files:
        tmp = path.with_suffix(path.suffix + ".tmp")
        tmp.write_text(text, encoding="utf-8")
        tmp.replace(path)
    return out_json, out_md


def with_provenance(table: str, info: dict[str, Any]) -> str:
    """``table`` (markdown, a ``# title`` first) with ``info``'s provenance line under the title, once."""
    line = provenance_line(info)
    if line in table:
        return table
    title, sep, rest = table.partition("\n")
    if not title.startswith("# "):
        return f"{line}\n\n{table}"
    return f"{title}\n\n{line}\n\n{rest.lstrip(chr(10))}"


def write_results_file(out: Path, result: dict[str, Any], argv: Sequence[str] | None, module: str) -> Path:
    """Write ``out`` (``NAME.json``; another suffix becomes ``.json``) with the run's :func:`machine` and return it.

    For campaigns that name their own results file with ``--out``; atomic like :func:`write_results`.
    """
    path, _ = write_results(out.stem, {"machine": machine(argv, module), **result}, out=out.parent)
    return path


def write_page(name: str, title: str, body: list[str], payload: dict[str, Any], info: dict[str, Any],
               out: Path | None = None) -> None:
    """Write ``<out>/<name>.json`` (``payload`` with ``info``, the run's :func:`machine`) and ``<name>.md``, and print it.

    The page is the title, the provenance line and the command that made it, then ``body`` (markdown lines).
    """
    lines = [f"# {title}", "", provenance_line(info), "", "    " + info["command"], "", *body]
    write_results(name, {"machine": info, **payload}, "\n".join(lines) + "\n", out=out)
    print("\n".join(lines))


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


def provenance_line(info: dict[str, Any]) -> str:
    """One markdown line naming the run's date, commit, CPU and versions (under a table's title)."""
    flags = info["cpu"]["flags"] or {}
    has = ", ".join(f for f, on in flags.items() if on) or "none of " + "/".join(CPU_FLAGS)
    dirty = " (uncommitted changes)" if info.get("lorakit_dirty") else ""
    if info.get("lorakit_commit_at_write", info.get("lorakit_commit")) != info.get("lorakit_commit"):
        dirty += f" (HEAD at {str(info['lorakit_commit_at_write'])[:12]} when written)"  # it moved during the run
    libs = ", ".join(f"{k} {v}" for k, v in info["versions"].items() if v)
    return (f"Measured {info['date']} on lorakit {str(info.get('lorakit_commit'))[:12]}{dirty}; "
            f"{info['cpu']['model']} ({info['cpus']} CPUs; {has}); {libs}; {info['threads']} torch thread(s).")


# Taken at import, which for a benchmark is its start-up.
started_state()

"""How steady is a training run's memory peak under each malloc setting, and what does each cost in speed?

Runs the same ``lorakit train`` command (by default the issue's full fine-tuning probe,
``smollm2 e2e --full --max-steps 6 --batch-size 8``) ``--reps`` times per setting of
``lorakit.cli.allocator.SETTINGS`` (``LORAKIT_MALLOC``), each in a fresh process, the settings
interleaved (A B C, A B C, ...) so that a noisy stretch of the machine hits all of them alike. Per
setting: the run's own ``peak_memory_mb`` (max over its phases) and the training phase's peak, as
median (min-max) with the spread ``max/min - 1``, and training tokens/s as a ratio to ``glibc`` (the
default malloc) over the same repetitions.

    python -m benchmarks.allocator [--settings glibc,mmap-4m] [--reps 3] [--name allocator]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from benchmarks.common import machine, markdown_table, provenance_line, spread, write_results
from lorakit.cli.allocator import SETTINGS

PROBE = ["smollm2", "e2e", "--full", "--max-steps", "6", "--batch-size", "8"]
# The final test evaluation is not what is probed: a few MRs keep each run short (its peak is kept apart).
FAST_EVAL = ["--eval-limit", "8", "--no-base-eval", "--no-progress"]


def one_run(setting: str, train_args: list[str], out: Path) -> dict:
    """One fresh ``lorakit train`` process under ``setting``; the figures of its metrics.json."""
    env = dict(os.environ, LORAKIT_MALLOC=setting)
    cmd = [sys.executable, "-m", "lorakit", "train", *train_args, *FAST_EVAL, "--out", str(out)]
    subprocess.run(cmd, check=True, env=env, stdout=subprocess.DEVNULL)
    metrics = json.loads((out / "metrics.json").read_text(encoding="utf-8"))
    phases = metrics.get("peak_memory_phases_mb") or {}
    return {"peak_mb": metrics["peak_memory_mb"], "train_peak_mb": phases.get("train"),
            "phases_mb": phases, "tokens_per_s": metrics["tokens_per_second"],
            "train_seconds": metrics["train_seconds"]}


def summarise(setting: str, runs: list[dict], base: list[dict]) -> dict:
    """One table line: peak spread, train-phase peak spread and speed ratio to glibc (paired by repetition)."""
    peak = spread([r["peak_mb"] for r in runs])
    train = [r["train_peak_mb"] for r in runs if r["train_peak_mb"] is not None]
    speed = spread([r["tokens_per_s"] / b["tokens_per_s"] for r, b in zip(runs, base, strict=True)])
    line = {"setting": setting, "peak_mb": peak, "peak_spread": peak["max"] / peak["min"] - 1,
            "tokens_per_s": spread([r["tokens_per_s"] for r in runs]), "speed_vs_glibc": speed, "runs": runs}
    if train:
        t = spread(train)
        line.update(train_peak_mb=t, train_peak_spread=t["max"] / t["min"] - 1)
    return line


def table(lines: list[dict], info: dict, train_args: list[str]) -> str:
    """The markdown report."""
    def cell(s: dict, fmt: str = ".0f") -> str:
        return f"{s['median']:{fmt}} ({s['min']:{fmt}}-{s['max']:{fmt}})"

    rows = [{"setting": f"`{x['setting']}`", "peak MB, median (min-max)": cell(x["peak_mb"]),
             "peak spread": f"{100 * x['peak_spread']:.1f}%",
             "train-phase peak MB": cell(x["train_peak_mb"]) if "train_peak_mb" in x else "",
             "train-phase spread": f"{100 * x['train_peak_spread']:.1f}%" if "train_peak_spread" in x else "",
             "tokens/s": cell(x["tokens_per_s"], ".1f"), "speed vs glibc": cell(x["speed_vs_glibc"], ".2f")}
            for x in lines]
    n = lines[0]["peak_mb"]["n"] if lines else 0
    return (f"# Memory-peak spread per malloc setting ({n} fresh processes each)\n\n{provenance_line(info)}\n\n"
            f"Command: `LORAKIT_MALLOC=<setting> lorakit train {' '.join(train_args + FAST_EVAL)}`\n\n"
            + markdown_table(rows, list(rows[0]) if rows else []))


def main() -> None:
    """Run every setting ``--reps`` times, interleaved; write results/<name>.{json,md}."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--settings", default=",".join(SETTINGS), help="comma-separated LORAKIT_MALLOC names")
    parser.add_argument("--reps", type=int, default=3, help="fresh processes per setting (>= 3 for a spread)")
    parser.add_argument("--name", default="allocator", help="results/<name>.{json,md}")
    parser.add_argument("--train-args", default=" ".join(PROBE), help="the lorakit train arguments probed")
    args = parser.parse_args()
    settings = [s for s in args.settings.split(",") if s]
    unknown = [s for s in settings if s not in SETTINGS]
    if unknown or "glibc" not in settings:
        raise SystemExit(f"--settings must name known settings including glibc ({', '.join(SETTINGS)}); "
                         f"unknown: {unknown}")
    train_args = args.train_args.split()
    info = machine()
    runs: dict[str, list[dict]] = {s: [] for s in settings}
    with tempfile.TemporaryDirectory(prefix="lorakit-alloc-") as tmp:
        for rep in range(args.reps):
            for setting in settings:
                out = Path(tmp) / f"{setting}-{rep}"
                runs[setting].append(one_run(setting, train_args, out))
                print(f"rep {rep} {setting}: peak {runs[setting][-1]['peak_mb']:.0f} MB, "
                      f"{runs[setting][-1]['tokens_per_s']:.1f} tok/s", flush=True)
    lines = [summarise(s, runs[s], runs["glibc"]) for s in settings]
    payload = {"machine": info, "train_args": train_args + FAST_EVAL, "reps": args.reps, "table": lines}
    for path in write_results(args.name, payload, table(lines, info, train_args)):
        if path is not None:
            print("wrote", path)


if __name__ == "__main__":
    main()

"""train-many vs N separate runs: wall time and peak memory of N LoRA jobs over one base, side by side.

For each N (``--jobs 1 4 8``) the same N jobs (mixed ranks 4–64, cycling over the data sets of
``--suite``) are trained three ways, each process fresh:

- ``train-many``: one ``lorakit train-many --max-rows all`` process, all N jobs in one mixed batch;
- ``train-many-capped``: the same with ``--max-rows`` = one job's batch (``--batch-size``; what
  ``auto``, the default, picks on a CPU), so each forward holds one job's rows;
- ``sequential``: N ``lorakit train`` processes one after another (wall: their sum);
- ``concurrent``: N ``lorakit train`` processes at once, 1 torch thread each (wall: until the last ends).

Peak memory is each run's own ``peak_memory_mb`` as lorakit records it (``train_many.json`` of a
train-many run, ``metrics.json`` of a ``lorakit train`` run): the largest of its phases' peaks (load,
evaluation, training; lorakit resets the high-water mark at every phase, so the mark a process holds
as it exits is its last phase's, not its peak). Model loading is included, as for a user. For
``sequential`` the largest of the N runs, for ``concurrent`` the sum (what the machine must hold at
once, at worst). Medians over ``--reps`` round-robin repetitions, each a fresh process, with the
min–max shown (memory ratios want ``--reps`` ≥ 3).

    python -m benchmarks.train_many                                   # results/train_many.{json,md}
    python -m benchmarks.train_many --suite smollm2-e2e --jobs 1 4 8 16
    python -m benchmarks.train_many --jobs 1 2 --steps 2 --reps 1 --name smoke      # a quick check

Every run uses ``--steps`` optimizer steps, one evaluation at the end on ``--eval-limit`` examples, no
base evaluation, ``base_dtype`` fp32 (``--base-dtype``) and ``--threads`` torch threads per process.
The data sets are found as ``lorakit train`` finds them (``LORAKIT_DATA``, else ``../shared/data``).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.common import machine, provenance_line, spread, write_results

SUITES = {  # name -> (model, data sets cycled over the jobs)
    "minilm-glue": ("minilm", ("sst2", "trec", "subj", "mr")),
    "smollm2-e2e": ("smollm2", ("e2e",)),
}
RANKS = (4, 8, 16, 32, 64)


def jobs_for(n: int, suite: str) -> list[dict]:
    """N jobs: ranks cycling 4..64, data sets cycling over the suite, seeds 0..N-1."""
    _, datasets = SUITES[suite]
    return [{"name": f"job{i}-{datasets[i % len(datasets)]}-r{RANKS[i % len(RANKS)]}",
             "data": datasets[i % len(datasets)], "rank": RANKS[i % len(RANKS)], "seed": i} for i in range(n)]


def shared_options(args: argparse.Namespace) -> dict:
    """Options every run gets (train-many: top level; lorakit train: flags)."""
    return {"max_steps": args.steps, "batch_size": args.batch_size, "base_eval": False, "eval_every": 0,
            "eval_limit": args.eval_limit, "base_dtype": args.base_dtype, "threads": args.threads,
            "progress": False, "max_new_tokens": 16, **({"checkpointing": True} if args.checkpointing else {}),
            **({"pad_multiple": args.pad_multiple} if args.pad_multiple else {})}


def _flags(options: dict) -> list[str]:
    out = []
    for key, value in options.items():
        flag = "--" + key.replace("_", "-")
        if isinstance(value, bool):
            out.append(flag if value else "--no-" + key.replace("_", "-"))
        else:
            out += [flag, str(value)]
    return out


def _lorakit(argv: list[str]) -> list[str]:
    """``python -m lorakit ARGV``: a fresh process, as a user runs it."""
    return [sys.executable, "-m", "lorakit", *argv]


def run_peak_mb(summary: Path) -> float:
    """A run's own peak memory (MiB): ``peak_memory_mb`` of its ``train_many.json`` / ``metrics.json``.

    lorakit records it as the largest of its phases' peaks (load, evaluations, training).
    """
    data = json.loads(summary.read_text())
    if "peak_memory_mb" not in data:
        raise RuntimeError(f"{summary} records no peak_memory_mb")
    return float(data["peak_memory_mb"])


def run_many(model: str, jobs: list[dict], args: argparse.Namespace, tmp: Path, max_rows: int | None = None) -> dict:
    """One train-many process (``max_rows``: its --max-rows)."""
    lines = [f"model = {json.dumps(model)}"] + [f"{k} = {json.dumps(v)}" for k, v in shared_options(args).items()]
    for job in jobs:
        lines += ["[[job]]"] + [f"{k} = {json.dumps(v)}" for k, v in job.items()]
    jobs_file = tmp / "jobs.toml"
    jobs_file.write_text("\n".join(lines) + "\n")
    cap = ["--max-rows", str(max_rows) if max_rows else "all"]
    started = time.perf_counter()
    subprocess.run(_lorakit(["train-many", str(jobs_file), "--out", str(tmp / "many"), "--no-progress", *cap]),
                   check=True, stdout=subprocess.DEVNULL)
    wall = time.perf_counter() - started
    return {"wall_s": wall, "peak_mb": run_peak_mb(tmp / "many" / "train_many.json")}


def _train_argv(model: str, job: dict, args: argparse.Namespace, out: Path, threads: int | None = None) -> list[str]:
    options = {k: v for k, v in job.items() if k not in ("name", "data")}
    shared = {**shared_options(args), **({"threads": threads} if threads else {})}
    return ["train", model, job["data"], "--out", str(out / job["name"]), *_flags({**shared, **options})]


def run_separate(model: str, jobs: list[dict], args: argparse.Namespace, tmp: Path, concurrent: bool) -> dict:
    """N lorakit train processes, one after another or all at once."""
    mode = "concurrent" if concurrent else "sequential"
    threads = 1 if concurrent else None  # N processes share the cores: one thread each
    cmds = [_lorakit(_train_argv(model, job, args, tmp / mode, threads)) for job in jobs]
    started = time.perf_counter()
    if concurrent:
        procs = [subprocess.Popen(c, stdout=subprocess.DEVNULL) for c in cmds]
        codes = [p.wait() for p in procs]
    else:
        codes = [subprocess.run(c, stdout=subprocess.DEVNULL).returncode for c in cmds]
    wall = time.perf_counter() - started
    if any(codes):
        raise RuntimeError(f"{mode}: a lorakit train run failed (exit codes {codes})")
    peaks = [run_peak_mb(tmp / mode / job["name"] / "metrics.json") for job in jobs]
    return {"wall_s": wall, "peak_mb": sum(peaks) if concurrent else max(peaks), "peaks_mb": peaks}


def measure(args: argparse.Namespace) -> dict:
    """Every (N, way) ``--reps`` times, round-robin; medians."""
    model, _ = SUITES[args.suite]
    raw: dict[str, dict[str, list[dict]]] = {}
    for rep in range(args.reps):
        for n in args.jobs:
            jobs = jobs_for(n, args.suite)
            for way in args.ways:
                if args.only and f"{n}:{way}" not in args.only:
                    continue
                tmp = Path(tempfile.mkdtemp(prefix=f"train_many-{way}-{n}-"))
                try:
                    if way.startswith("train-many"):
                        result = run_many(model, jobs, args, tmp, args.batch_size if way.endswith("capped") else None)
                    else:
                        result = run_separate(model, jobs, args, tmp, concurrent=way == "concurrent")
                finally:
                    shutil.rmtree(tmp, ignore_errors=True)
                raw.setdefault(str(n), {}).setdefault(way, []).append(result)
                print(f"rep {rep} N={n} {way}: {result['wall_s']:.1f}s, {result['peak_mb']:.0f} MiB", flush=True)
    medians = {}
    for n, ways in raw.items():
        medians[n] = {}
        for way, runs in ways.items():
            peaks = spread([r["peak_mb"] for r in runs])
            medians[n][way] = {"wall_s": statistics.median(r["wall_s"] for r in runs), "peak_mb": peaks["median"],
                               "peak_mb_min": peaks["min"], "peak_mb_max": peaks["max"], "reps": peaks["n"]}
    return {"suite": args.suite, "model": model, "steps": args.steps, "batch_size": args.batch_size,
            "threads": args.threads, "base_dtype": args.base_dtype, "checkpointing": args.checkpointing,
            "pad_multiple": args.pad_multiple,
            "reps": args.reps,
            "jobs": {n: jobs_for(int(n), args.suite) for n in raw}, "median": medians, "runs": raw}


WAYS = ("train-many", "train-many-capped", "sequential", "concurrent")


def table(result: dict) -> str:
    """Markdown: one row per N, wall and peak (median, min–max) per way, and train-many's ratios
    (wall vs sequential, peak vs one job's peak: the N=1 sequential run, a plain ``lorakit train``)."""
    present = set().union(*(m.keys() for m in result["median"].values()))
    ways = [w for w in WAYS if w in present]
    many = [w for w in ways if w.startswith("train-many")]
    one = result["median"].get("1", {}).get("sequential", {}).get("peak_mb")
    head = ("| N | " + " | ".join(f"{w} wall s | {w} peak MiB" for w in ways) + " | "
            + " | ".join(f"{w} / sequential wall | {w} peak / one job's" for w in many) + " |")
    few = " (fewer than 3: the memory ratios are not settled)" if result["reps"] < 3 else ""
    info = result.get("machine")
    lines = ([provenance_line(info), "", f"Command: `{info['command']}`", ""] if info else []) + [
             f"{result['suite']}, {result['steps']} steps of batch {result['batch_size']}, {result['threads']} "
             f"thread(s) per process (concurrent: 1 each), base {result['base_dtype']}, checkpointing "
             f"{'on' if result.get('checkpointing') else 'off'}; medians of up to {result['reps']} round-robin "
             f"repetitions{few}, each a fresh process; peak = each run's own peak_memory_mb (the largest of its "
             "phases' peaks; sequential: the largest run, concurrent: the sum), median (min–max)",
             "", head, "|" + "---:|" * (1 + 2 * len(ways) + 2 * len(many))]

    def peak_cell(cell: dict) -> str:
        low, high = cell.get("peak_mb_min", cell["peak_mb"]), cell.get("peak_mb_max", cell["peak_mb"])
        return f"{cell['peak_mb']:.0f} ({low:.0f}–{high:.0f})"

    for n, m in result["median"].items():
        cells = " | ".join(f"{m[w]['wall_s']:.1f} | {peak_cell(m[w])}" if w in m else "- | -" for w in ways)
        ratios = []
        for w in many:
            wall = f"{m[w]['wall_s'] / m['sequential']['wall_s']:.2f}" if w in m and "sequential" in m else "-"
            peak = f"{m[w]['peak_mb'] / one:.2f}" if w in m and one else "-"
            ratios += [wall, peak]
        lines.append(f"| {n} | {cells} | {' | '.join(ratios)} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    """Parse options, measure, write results/<name>.{json,md}."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--suite", choices=sorted(SUITES), default="minilm-glue")
    parser.add_argument("--jobs", type=int, nargs="+", default=[1, 4, 8], help="numbers of jobs N")
    parser.add_argument("--ways", nargs="+", default=list(WAYS), choices=list(WAYS))
    parser.add_argument("--only", nargs="+", default=[], metavar="N:WAY",
                        help="run just these (N, way) pairs, e.g. 16:train-many-capped 16:sequential")
    parser.add_argument("--steps", type=int, default=50, help="optimizer steps per job")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--eval-limit", type=int, default=64)
    parser.add_argument("--base-dtype", default="fp32", help="every run's --base-dtype (always passed: pinned)")
    parser.add_argument("--checkpointing", action="store_true", help="every run with --checkpointing")
    parser.add_argument("--pad-multiple", type=int, default=None,
                        help="every run with this --pad-multiple (default: lorakit's, 16)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per process")
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--name", default="train_many", help="results/<name>.{json,md}")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    info = machine()
    result = {"machine": info, **measure(args)}
    write_results(args.name, result, table(result))
    print(table(result))


if __name__ == "__main__":
    main()

"""train-many vs N separate runs: wall time and peak memory of N LoRA jobs over one base, side by side.

For each N (``--jobs 1 4 8``) the same N jobs (mixed ranks 4–64, cycling over the data sets of
``--suite``) are trained three ways, each process fresh:

- ``train-many``: one ``lorakit train-many --max-rows all`` process, all N jobs in one mixed batch;
- ``train-many-capped``: the same with ``--max-rows`` = one job's batch (``--batch-size``; what
  ``auto``, the default, picks on a CPU), so each forward holds one job's rows;
- ``sequential``: N ``lorakit train`` processes one after another (wall: their sum);
- ``concurrent``: N ``lorakit train`` processes at once, 1 torch thread each (wall: until the last ends).

Peak memory is each process's ``VmHWM`` (``/proc/self/status``, read by the process itself as it exits:
model loading included, as for a user); for ``sequential`` the largest, for ``concurrent`` the sum (what
the machine must hold at once, at worst). Medians over ``--reps`` round-robin repetitions.

    python benchmarks/train_many.py                                   # results/train_many.{json,md}
    python benchmarks/train_many.py --suite smollm2-e2e --jobs 1 4 8 16
    python benchmarks/train_many.py --jobs 1 2 --steps 2 --reps 1 --name smoke      # a quick check

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

RESULTS = Path(__file__).resolve().parent / "results"
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


def _worker_cmd(argv: list[str], report: Path) -> list[str]:
    return [sys.executable, __file__, "--worker", str(report), "--", *argv]


def _read(report: Path) -> dict:
    return json.loads(report.read_text())


def run_many(model: str, jobs: list[dict], args: argparse.Namespace, tmp: Path, max_rows: int | None = None) -> dict:
    """One train-many process (``max_rows``: its --max-rows)."""
    lines = [f"model = {json.dumps(model)}"] + [f"{k} = {json.dumps(v)}" for k, v in shared_options(args).items()]
    for job in jobs:
        lines += ["[[job]]"] + [f"{k} = {json.dumps(v)}" for k, v in job.items()]
    jobs_file = tmp / "jobs.toml"
    jobs_file.write_text("\n".join(lines) + "\n")
    report = tmp / "many.json"
    cap = ["--max-rows", str(max_rows) if max_rows else "all"]
    started = time.perf_counter()
    subprocess.run(_worker_cmd(["train-many", str(jobs_file), "--out", str(tmp / "many"), "--no-progress", *cap],
                               report), check=True, stdout=subprocess.DEVNULL)
    wall = time.perf_counter() - started
    r = _read(report)
    return {"wall_s": wall, "peak_mb": r["vmhwm_mb"], "exit": r["exit"]}


def _train_argv(model: str, job: dict, args: argparse.Namespace, out: Path, threads: int | None = None) -> list[str]:
    options = {k: v for k, v in job.items() if k not in ("name", "data")}
    shared = {**shared_options(args), **({"threads": threads} if threads else {})}
    return ["train", model, job["data"], "--out", str(out / job["name"]), *_flags({**shared, **options})]


def run_separate(model: str, jobs: list[dict], args: argparse.Namespace, tmp: Path, concurrent: bool) -> dict:
    """N lorakit train processes, one after another or all at once."""
    mode = "concurrent" if concurrent else "sequential"
    reports = [tmp / f"{mode}-{i}.json" for i in range(len(jobs))]
    threads = 1 if concurrent else None  # N processes share the cores: one thread each
    cmds = [_worker_cmd(_train_argv(model, job, args, tmp / mode, threads), rep)
            for job, rep in zip(jobs, reports, strict=True)]
    started = time.perf_counter()
    if concurrent:
        procs = [subprocess.Popen(c, stdout=subprocess.DEVNULL) for c in cmds]
        codes = [p.wait() for p in procs]
    else:
        codes = [subprocess.run(c, stdout=subprocess.DEVNULL).returncode for c in cmds]
    wall = time.perf_counter() - started
    if any(codes):
        raise RuntimeError(f"{mode}: a lorakit train run failed (exit codes {codes})")
    peaks = [_read(r)["vmhwm_mb"] for r in reports]
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
    medians = {n: {way: {"wall_s": statistics.median(r["wall_s"] for r in runs),
                         "peak_mb": statistics.median(r["peak_mb"] for r in runs)} for way, runs in ways.items()}
               for n, ways in raw.items()}
    return {"suite": args.suite, "model": model, "steps": args.steps, "batch_size": args.batch_size,
            "threads": args.threads, "base_dtype": args.base_dtype, "checkpointing": args.checkpointing,
            "pad_multiple": args.pad_multiple,
            "reps": args.reps,
            "jobs": {n: jobs_for(int(n), args.suite) for n in raw}, "median": medians, "runs": raw}


WAYS = ("train-many", "train-many-capped", "sequential", "concurrent")


def table(result: dict) -> str:
    """Markdown: one row per N, wall and peak per way, and train-many's ratios (wall vs sequential,
    peak vs one job's peak: the N=1 sequential run, a plain ``lorakit train``)."""
    present = set().union(*(m.keys() for m in result["median"].values()))
    ways = [w for w in WAYS if w in present]
    many = [w for w in ways if w.startswith("train-many")]
    one = result["median"].get("1", {}).get("sequential", {}).get("peak_mb")
    head = ("| N | " + " | ".join(f"{w} wall s | {w} peak MiB" for w in ways) + " | "
            + " | ".join(f"{w} / sequential wall | {w} peak / one job's" for w in many) + " |")
    lines = [f"{result['suite']}, {result['steps']} steps of batch {result['batch_size']}, {result['threads']} "
             f"thread(s) per process (concurrent: 1 each), base {result['base_dtype']}, checkpointing "
             f"{'on' if result.get('checkpointing') else 'off'}; medians of up to {result['reps']} round-robin "
             f"repetitions; peak = VmHWM of each process (sequential: the largest, concurrent: the sum)",
             "", head, "|" + "---:|" * (1 + 2 * len(ways) + 2 * len(many))]
    for n, m in result["median"].items():
        cells = " | ".join(f"{m[w]['wall_s']:.1f} | {m[w]['peak_mb']:.0f}" if w in m else "- | -" for w in ways)
        ratios = []
        for w in many:
            wall = f"{m[w]['wall_s'] / m['sequential']['wall_s']:.2f}" if w in m and "sequential" in m else "-"
            peak = f"{m[w]['peak_mb'] / one:.2f}" if w in m and one else "-"
            ratios += [wall, peak]
        lines.append(f"| {n} | {cells} | {' | '.join(ratios)} |")
    return "\n".join(lines) + "\n"


def worker(report: str, argv: list[str]) -> int:
    """Run ``lorakit ARGV`` in this process and write its exit code and VmHWM to ``report``."""
    from lorakit.cli.main import main

    code = main(argv)
    with open("/proc/self/status", encoding="ascii") as fh:
        peak = next(int(line.split()[1]) / 1024 for line in fh if line.startswith("VmHWM:"))
    Path(report).write_text(json.dumps({"exit": code, "vmhwm_mb": peak}))
    return code


def main() -> None:
    """Parse options, measure, write results/<name>.{json,md}."""
    if "--worker" in sys.argv:
        at = sys.argv.index("--worker")
        sys.exit(worker(sys.argv[at + 1], sys.argv[sys.argv.index("--") + 1:]))
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--suite", choices=sorted(SUITES), default="minilm-glue")
    parser.add_argument("--jobs", type=int, nargs="+", default=[1, 4, 8], help="numbers of jobs N")
    parser.add_argument("--ways", nargs="+", default=list(WAYS), choices=list(WAYS))
    parser.add_argument("--only", nargs="+", default=[], metavar="N:WAY",
                        help="run just these (N, way) pairs, e.g. 16:train-many-capped 16:sequential")
    parser.add_argument("--steps", type=int, default=50, help="optimizer steps per job")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--eval-limit", type=int, default=64)
    parser.add_argument("--base-dtype", default="fp32")
    parser.add_argument("--checkpointing", action="store_true", help="every run with --checkpointing")
    parser.add_argument("--pad-multiple", type=int, default=None,
                        help="every run with this --pad-multiple (default: lorakit's, 16)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per process")
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--name", default="train_many", help="results/<name>.{json,md}")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    result = measure(args)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{args.name}.json").write_text(json.dumps(result, indent=1))
    (RESULTS / f"{args.name}.md").write_text(table(result))
    print(table(result))


if __name__ == "__main__":
    main()

"""Decode tokens/s of lorakit's engine on smollm2, before vs after a change, alternated in one run.

Each *config* is ``label=SRC:DTYPE``: the lorakit sources to import (``src`` of this checkout, or
of an older checkout / worktree for "before") and the base dtype (``fp32``; ``bf16`` etc. need
sources that have ``serve --dtype``). Every rep runs every config once, in a fresh worker process,
in the same order (alternation), and each worker measures every scenario:

- ``base``: ``--batch`` rows on the base model;
- ``1``: every row on the e2e adapter;
- ``8``: rows spread over 8 adapters (copies of the e2e adapter under 8 names: 8 slots).

After an untimed warm-up of the same shape, a measurement submits ``--batch`` requests (an E2E test prompt, ``--tokens`` new tokens, EOS
ignored), runs the prefill step, then times the decode steps only: rows x steps / seconds.
Medians over reps are reported.

    python -m benchmarks.serve_decode --config before=/path/to/old/src:fp32 --config after=src:fp32 \\
        --config after-bf16=src:bf16      # writes results/serve_decode.{json,md}
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

from benchmarks.common import REPO as ROOT
from benchmarks.common import RESULTS, machine, write_page

PROMPT = ("Describe this restaurant in one sentence: name[The Eagle], eatType[coffee shop], food[French], "
          "priceRange[moderate], customer rating[3 out of 5], area[riverside], kidsFriendly[yes], near[Burger King]")
SCENARIOS = ("base", "1", "8")


def worker(args) -> None:
    """Load the model once, measure every scenario, print one JSON line."""
    import torch

    from lorakit.serve import LoraServer, SamplingParams

    torch.set_num_threads(args.threads)
    kwargs = {} if args.dtype == "fp32" else {"dtype": args.dtype}
    try:
        server = LoraServer.from_pretrained(args.model, max_loaded=8, **kwargs)
    except TypeError:  # sources from before `serve --dtype`: fp32 only
        server = LoraServer.from_pretrained(args.model, max_loaded=8)
    names = [f"a{i}" for i in range(8)]
    for name in names:
        server.add_adapter(name, args.adapter)
    ids = server.tokenizer(PROMPT)["input_ids"]
    out = {}
    for scenario in args.scenarios:
        rows = [None] if scenario == "base" else names[:int(scenario)]
        # An untimed warm-up of the same shapes first: the first LoRA decode steps of a process pay
        # one-time kernel setup (measured: 2.6 vs 19 tok/s for the first adapter scenario in bf16).
        for max_tokens, timed in ((4, False), (args.tokens, True)):
            for i in range(args.batch):
                server.submit(ids, SamplingParams(max_tokens=max_tokens, ignore_eos=True), rows[i % len(rows)], None)
            server.engine.step()  # admits and prefills every row (and decodes once)
            tokens, start = 0, time.perf_counter()
            while server.engine.batch_size:
                tokens += server.engine.batch_size
                server.engine.step()
            if timed:
                out[scenario] = tokens / (time.perf_counter() - start)
    print(json.dumps(out), flush=True)


def write(args, configs: list[tuple[str, str, str]], runs: dict[str, list[dict]],
          argv: list[str] | None = None) -> None:
    """``<out>/serve_decode.{json,md}``: every rep and the medians, with the run's provenance (``machine``)."""
    med = {label: {s: statistics.median(r[s] for r in rs) for s in args.scenarios} for label, rs in runs.items()}
    title = (f"Decode tokens/s, {args.model}, batch {args.batch}, {args.tokens} new tokens, {args.threads} threads, "
             f"median of {args.reps} alternated reps")
    lines = ["| config | src:dtype | " + " | ".join(f"{s} tok/s" for s in args.scenarios) + " |",
             "|---|---|" + "---|" * len(args.scenarios)]
    lines += [f"| {label} | {src}:{dtype} | " + " | ".join(f"{med[label][s]:.2f}" for s in args.scenarios) + " |"
              for label, src, dtype in configs]
    write_page("serve_decode", title, lines, {"configs": configs, "runs": runs, "median": med},
               machine(argv, "benchmarks.serve_decode"), out=args.out)


def main(argv: list[str] | None = None) -> int:
    """Alternate the configs over reps in worker processes; write the medians."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config", action="append", default=[], help="label=SRC:DTYPE (repeatable)")
    p.add_argument("--model", default="smollm2")
    p.add_argument("--adapter", default=str(ROOT / "adapters" / "smollm2" / "e2e"))
    p.add_argument("--scenarios", nargs="+", choices=SCENARIOS, default=list(SCENARIOS))
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--tokens", type=int, default=32)
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--dtype", default="fp32", help=argparse.SUPPRESS)
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--out", type=Path, default=RESULTS)
    args = p.parse_args(argv)
    if args.worker:
        worker(args)
        return 0
    configs = [(c.split("=", 1)[0], *c.split("=", 1)[1].rsplit(":", 1)) for c in args.config or ["after=src:fp32"]]
    runs: dict[str, list[dict]] = {label: [] for label, _, _ in configs}
    common = ["--model", args.model, "--adapter", args.adapter, "--batch", str(args.batch), "--tokens",
              str(args.tokens), "--threads", str(args.threads), "--scenarios", *args.scenarios]
    for rep in range(args.reps):
        for label, src, dtype in configs:
            env = dict(os.environ, PYTHONPATH=str((ROOT / src).resolve()), OMP_NUM_THREADS=str(args.threads))
            done = subprocess.run([sys.executable, "-m", "benchmarks.serve_decode", "--worker", "--dtype", dtype,
                                   *common], env=env, cwd=ROOT,
                                  capture_output=True, text=True, check=True)
            runs[label].append(json.loads(done.stdout.strip().splitlines()[-1]))
            print(f"rep {rep} {label}: " + ", ".join(f"{k} {v:.2f}" for k, v in runs[label][-1].items()), flush=True)
    write(args, configs, runs, argv)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

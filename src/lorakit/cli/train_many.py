"""Train many LoRA adapters at once over one frozen base model, in one mixed batch.

Examples::

    lorakit train-many jobs.toml --out runs/sweep
    lorakit train-many jobs.toml --out runs/sweep --resume     # after a kill: each job continues exactly

The jobs file names the shared ``model`` (and base settings such as ``base_dtype``) at the top level
and one ``[[job]]`` table per adapter with ``lorakit train``'s option names plus ``name`` and ``data``::

    model = "minilm"
    [[job]]
    name = "sst2-r4"
    data = "sst2"
    rank = 4
    [[job]]
    name = "trec-r8"
    data = "trec"
    rank = 8
    max_steps = 200

Each job writes ``OUT/<name>/`` exactly like ``lorakit train --out OUT/<name>`` (adapter/, metrics.json,
log.jsonl, loss.png, checkpoint/); ``OUT/train_many.json`` sums up. A job with bad data or a diverging
loss stops alone (its error is printed and listed); the exit code is then 1.
"""

from __future__ import annotations

import argparse
import sys

from lorakit.cli.common import positive_int
from lorakit.cli.options import add_config_options, one_line_errors


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The jobs file, the output folder, --resume and --no-progress."""
    parser.add_argument("jobs", metavar="JOBS", help="TOML (or YAML) file: shared model at the top, one [[job]] per adapter")
    parser.add_argument("--out", required=True, metavar="DIR", help="output folder; each job writes DIR/<name>/")
    add_config_options(parser, ["resume", "progress"],
                       helps={"resume": "continue every job from DIR/<name>/checkpoint exactly where it stopped",
                              "progress": "one progress bar per job"})
    parser.add_argument("--max-rows", type=_max_rows, default=None, metavar="N|auto|all",
                        help="rows per forward: each step's micro-batches of the jobs run in forwards of at "
                             "most N rows (whole jobs each; same adapters either way). auto (default): all in "
                             "one on a GPU, the largest job's micro-batch on a CPU (as fast, less memory); "
                             "all: one forward. Also max_rows at the top of the jobs file")
    one_line_errors(parser)


def _max_rows(text: str) -> int | str:
    if text in ("auto", "all"):
        return text
    try:
        return positive_int(text)
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(f"expected a positive number of rows, auto or all, got {text!r}") from None


def run(args: argparse.Namespace) -> int:
    """Train every job; print one line per job."""
    from lorakit.train.many import train_many

    results = train_many(args.jobs, args.out, resume=args.resume, progress=args.progress, max_rows=args.max_rows)
    failed = 0
    for name, m in results.items():
        if "error" in m:
            failed += 1
            print(f"{name}: FAILED: {m['error']}", file=sys.stderr)
        elif "test" in m:
            test = m["test"]
            score = ", ".join(f"{k} {test[k]:.4f}" for k in ("accuracy", "bleu", "loss") if k in test)
            print(f"{name}: {m['step']} steps, {score}; saved {m['adapter_dir']}")
        else:
            print(f"{name}: {m.get('stopped')} at step {m.get('step')}: checkpoint written; continue with --resume",
                  file=sys.stderr)
    print(f"summary: {args.out}/train_many.json")
    return 1 if failed else 0

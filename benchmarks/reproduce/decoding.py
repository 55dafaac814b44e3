"""Greedy vs the paper's beam search on one saved E2E adapter, the same test MRs, side by side.

The published ``adapters/smollm2/e2e`` has no run folder on a fresh machine, so ``nlg.py --beam`` (which
decodes a finished training row's adapter) cannot score it without retraining. This scores the saved
adapter itself, twice: greedy (the adapter card's command, so its row reproduces the card) and the
paper's beam search (beam 10, length penalty 0.9, no repeated 4-gram; Hu et al. 2021, appendix D.3).

    python -m benchmarks.reproduce.decoding --adapter adapters/smollm2/e2e --base-dtype bf16 --threads 2

Each row is a ``lorakit eval`` process (cached under runs/reproduce/ like the other sweeps);
results/<name>.{json,md} are rewritten after each row.
"""

from __future__ import annotations

import argparse
import hashlib
import re

from benchmarks.common import REPO, machine, markdown_table, provenance_line, write_results
from benchmarks.reproduce.nlg import BEAM, BEAM_KEY, METRICS
from benchmarks.reproduce.sweep import Row, process_wall, row_commit, run_row, test_metrics


def decoding_rows(adapter: str, eval_limit: int, batch_size: int, max_new_tokens: int, base_dtype: str,
                  threads: int) -> list[Row]:
    """The greedy row, then the beam row: the same adapter, MRs, batch and precision; only decoding differs."""
    slug = re.sub(r"[^A-Za-z0-9]+", "-", adapter).strip("-")
    # The weights' digest is part of the key: a folder re-published with new weights (publish.py) must not
    # read the cached scores of the adapter it replaced.
    digest = hashlib.sha256((REPO / adapter / "adapter_model.safetensors").read_bytes()).hexdigest()[:10]
    common = ("smollm2", "e2e", "--adapter", adapter, "--split", "test", "--limit", str(eval_limit),
              "--batch-size", str(batch_size), "--max-new-tokens", str(max_new_tokens), "--base-dtype", base_dtype,
              "--threads", str(threads))
    key = f"decode-{slug}-{digest}-l{eval_limit}-{base_dtype}"
    return [Row(f"{key}-greedy", common, {"decoding": "greedy"}, verb="eval"),
            Row(f"{key}-{BEAM_KEY}", (*common, *BEAM), {"decoding": "beam 10, length penalty 0.9, no repeated 4-gram"},
                verb="eval")]


def line(row: Row, result: dict) -> dict:
    """One table line: the decoding, its scores, and the eval process's wall time."""
    scores = test_metrics(result)
    wall = process_wall(row)
    return {"decoding": row.labels["decoding"], **{m: scores.get(m) for m in METRICS},
            "eval_minutes": None if wall is None else wall / 60, "command": row.command, "commit": row_commit(row)}


def main() -> None:
    """Evaluate both rows (or read them from their cache) and write results/<name>.{json,md}."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--adapter", default="adapters/smollm2/e2e", help="saved adapter folder (relative to the repo)")
    parser.add_argument("--eval-limit", type=int, default=630, help="test MRs scored (630 in all)")
    parser.add_argument("--batch-size", type=int, default=50)
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--base-dtype", default="bf16", help="the precision the adapter was trained and reported in")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--timeout", type=float, default=None, help="seconds per row")
    parser.add_argument("--name", default="e2e_decoding", help="results/<name>.{json,md}")
    args = parser.parse_args()
    if not (REPO / args.adapter).is_dir():
        parser.error(f"no adapter folder {args.adapter}")
    table: list[dict] = []
    for row in decoding_rows(args.adapter, args.eval_limit, args.batch_size, args.max_new_tokens, args.base_dtype,
                             args.threads):
        if (result := run_row(row, args.timeout)) is None:
            break  # the beam row without its greedy row would not be side by side
        table.append(line(row, result))
        info = machine()
        md = (f"# {args.adapter}: greedy vs beam search, first {args.eval_limit} E2E test MRs\n\n"
              f"{provenance_line(info)}\n\nScores against all references of each MR; "
              f"base {args.base_dtype}, eval batch {args.batch_size}, at most {args.max_new_tokens} new tokens.\n\n"
              + markdown_table(table, ["decoding", *METRICS, "eval_minutes"])
              + "\nCommands:\n\n" + "".join(f"    {t['command']}\n" for t in table))
        for path in write_results(args.name, {"machine": info, "adapter": args.adapter, "eval_limit": args.eval_limit,
                                              "table": table}, md):
            print("wrote", path)


if __name__ == "__main__":
    main()

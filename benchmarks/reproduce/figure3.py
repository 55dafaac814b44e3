"""Figure 3 and Table 7 analogues: subspace similarity of the r=8 and r=64 SST-2 adapters, and amplification.

Claims tested (paper §7.2-7.3): the top singular direction of ΔW is shared between a rank-8 and a
rank-64 adapter (φ(1, j) > 0.5) while the other directions look like chance; ΔW amplifies directions
of W that W itself does not emphasise (amplification factor ≫ 1, ‖UᵀWVᵀ‖ close to random directions).

Uses the adapters of rank.py's r=8 and r=64 rows (trained if missing: about 8 minutes), then runs
`lorakit analyze subspace` and `lorakit analyze amplification`; the analysis itself takes seconds.

    python -m benchmarks.reproduce.figure3 [--steps 120]
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys

from benchmarks.common import RESULTS, machine, write_results
from benchmarks.reproduce.rank import rank_row
from benchmarks.reproduce.sweep import REPO, run_row


def lorakit(*args: str) -> None:
    """Run a lorakit command from the repository root (paths stay relative in its outputs), echoing it."""
    print("$ lorakit " + " ".join(args), flush=True)
    subprocess.run([sys.executable, "-m", "lorakit", *args], check=True, cwd=REPO)


def analyze(*args: str) -> None:
    """``lorakit analyze ... --json FILE``, then FILE gets this run's provenance block.

    lorakit itself records no machine block (it must not import the benchmarks); the file's ``machine`` is
    this script's (its command regenerates the file) and ``lorakit_command`` the analysis it ran.
    """
    lorakit("analyze", *args)
    path = REPO / args[args.index("--json") + 1]
    report = json.loads(path.read_text())
    # write_results: the same atomic write (temp file + rename) as every other results file
    write_results(path.stem, {"machine": machine(), "lorakit_command": shlex.join(["lorakit", "analyze", *args]),
                              **report}, out=path.parent)


def main() -> None:
    """Train or reuse the two adapters, then write the figure, the φ table and the amplification table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=120)
    args = parser.parse_args()
    rows = [rank_row(8, args.steps), rank_row(64, args.steps)]
    for row in rows:
        if run_row(row) is None:
            raise SystemExit(f"training failed: {row.command}")
    a8, a64 = (os.path.relpath(row.out / "adapter", REPO) for row in rows)
    RESULTS.mkdir(parents=True, exist_ok=True)
    res = os.path.relpath(RESULTS, REPO)
    for matrix in ("A", "B"):
        analyze("subspace", a8, a64, "--matrix", matrix, "--labels", "r=8,r=64", "--max-panels", "12",
                "--plot", f"{res}/figure3_{matrix}.png", "--json", f"{res}/figure3_{matrix}.json")
    analyze("amplification", "minilm", a8, "--json", f"{res}/amplification_r8.json")
    analyze("amplification", "minilm", a64, "--json", f"{res}/amplification_r64.json")
    payload = {"machine": machine(), "adapters": {"r8": rows[0].command, "r64": rows[1].command},
               "files": sorted(p.name for p in RESULTS.glob("figure3_*")) + ["amplification_r8.json",
                                                                            "amplification_r64.json"]}
    summary = json.loads((RESULTS / "figure3_A.json").read_text())
    write_results("figure3", {**payload, "subspace_A": summary},
                  "# Figure 3 analogue\n\nSee figure3_A.png, figure3_B.png and the JSON files.\n")


if __name__ == "__main__":
    main()

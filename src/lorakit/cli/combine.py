"""Combine adapters into one: ``ΔW = Σ wᵢ·ΔWᵢ`` stored as a single LoRA pair per module (scaling 1).

  lorakit combine ADAPTER[:WEIGHT] ... --out DIR [--method svd --rank R | --method concat]

``svd`` keeps the best rank-R approximation of the sum; ``concat`` stacks the factors and is exact
(rank = the sum of the ranks). The result is a PEFT-layout folder that PEFT and lorakit both load.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from lorakit.analysis.adapters import combine_adapter_files
from lorakit.cli.common import print_table
from lorakit.errors import LorakitError
from lorakit.io import read_adapter, write_adapter


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``lorakit combine``."""
    parser.add_argument("adapters", nargs="+", metavar="ADAPTER[:WEIGHT]",
                        help="adapter folders, each with an optional weight (default 1), e.g. runs/a:0.7 runs/b:0.3")
    parser.add_argument("--out", required=True, help="output folder for the combined adapter")
    parser.add_argument("--method", choices=("svd", "concat"), default="svd",
                        help="svd: truncated SVD to --rank; concat: exact, rank = sum of ranks [default: %(default)s]")
    parser.add_argument("--rank", "-r", type=int, default=None, help="rank of the combined adapter (svd only)")
    parser.add_argument("--saved-from", type=int, default=None, metavar="N",
                        help="take full-weight tensors (modules_to_save such as a classifier head, trained biases) "
                             "from the N-th adapter (1-based) when the adapters' differ")
    parser.add_argument("--force", action="store_true", help="write into --out even if it is not empty")


def parse_source(text: str) -> tuple[str, float]:
    """``"runs/a:0.7"`` -> ``("runs/a", 0.7)``; without a ``:WEIGHT`` the weight is 1."""
    path, sep, weight = text.rpartition(":")
    if not sep:
        return text, 1.0
    try:
        return path, float(weight)
    except ValueError:
        raise LorakitError(f"bad adapter weight in {text!r}: expected PATH:NUMBER such as runs/a:0.7") from None


def run(args: argparse.Namespace) -> int:
    """Read, combine, write, then read the result back to check what another reader will see."""
    if args.method == "svd" and args.rank is None:
        raise LorakitError("--method svd needs --rank (or use --method concat for the exact sum)")
    if args.method == "concat" and args.rank is not None:
        raise LorakitError("--rank applies to --method svd only; concat's rank is the sum of the ranks")
    if args.rank is not None and args.rank < 1:
        raise LorakitError(f"--rank must be a positive integer, got {args.rank}")
    sources = [parse_source(s) for s in args.adapters]
    if args.saved_from is not None and not 1 <= args.saved_from <= len(sources):
        raise LorakitError(f"--saved-from must be between 1 and {len(sources)}, got {args.saved_from}")
    out = Path(args.out)
    for path, _ in sources:
        # Never write over an input, --force or not: that would lose the data being combined.
        if out.resolve() == Path(path).resolve():
            raise LorakitError(f"--out {out} is one of the input adapters; choose another folder")
    if out.exists() and (not out.is_dir() or any(out.iterdir())) and not args.force:
        raise LorakitError(f"{out} exists and is not empty (use --force to write into it)")
    adapters = [read_adapter(path) for path, _ in sources]
    weights = [w for _, w in sources]
    combined = combine_adapter_files(adapters, weights, method=args.method, rank=args.rank,
                                     saved_from=None if args.saved_from is None else args.saved_from - 1)
    for note in combined.notes:
        print(f"note: {note}")
    written = write_adapter(out, combined.config, combined.tensors)
    back = read_adapter(written).factors()
    bad = [p for p, f in back.items() if abs(f.scaling - 1.0) > 1e-9]
    if bad or set(back) != set(combined.kept_energy):
        raise RuntimeError(f"internal error: {written} does not read back with scaling 1 for every module ({bad[:3]})")
    rows = [{"module": path, "rank": f.rank, "scaling": f.scaling, "kept energy": combined.kept_energy[path],
             "rel. error": max(0.0, 1.0 - combined.kept_energy[path]) ** 0.5} for path, f in back.items()]
    print(f"combined {len(adapters)} adapters ({', '.join(f'{p}×{w:g}' for p, w in sources)}) "
          f"by {args.method} -> {written}")
    print_table(rows, ["module", "rank", "scaling", "kept energy", "rel. error"])
    print("kept energy: share of ‖Σ wᵢ·ΔWᵢ‖²_F the stored pair keeps; rel. error = ‖ΔW_stored − ΔW_sum‖_F / ‖ΔW_sum‖_F")
    return 0

"""Print the adapter/base-model mismatch table of RELIABILITY.md (promise 3) and save it.

Usage: ``python -m benchmarks.reliability_mismatch_table`` (from the repository root; ~10 s on CPU).
Writes ``benchmarks/results/reliability_mismatch_table.{md,json}`` (the table; every row, with provenance).
"""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from benchmarks.common import RESULTS, machine, provenance_line, write_results

if TYPE_CHECKING:
    from benchmarks.reliability.mismatch_cases import Row


def write(table: list[Row], out: Path = RESULTS) -> tuple[Path, Path | None]:
    """``out/reliability_mismatch_table.{json,md}``: every row, and the table under a title and the provenance.

    The markdown still holds the table exactly as RELIABILITY.md quotes it (a test compares the two).
    """
    from benchmarks.reliability.mismatch_cases import markdown

    info = machine([], "benchmarks.reliability_mismatch_table")  # the script takes no arguments
    text = (f"# Adapters that do not fit their base model: what lorakit says (RELIABILITY.md, promise 3)\n\n"
            f"{provenance_line(info)}\n\n{markdown(table)}\n")
    payload = {"machine": info, "cases": len(table), "refused": sum(bool(r.error) for r in table),
               "model_untouched": sum(r.model_untouched for r in table),
               "rows": [dataclasses.asdict(r) for r in table]}
    return write_results("reliability_mismatch_table", payload, text, out=out)


def main() -> int:
    """Run every case of benchmarks/reliability/mismatch_cases.py and print the markdown table."""
    from benchmarks.reliability.mismatch_cases import markdown, rows

    table = rows()
    write(table)
    print(markdown(table))
    untouched = sum(r.model_untouched for r in table)
    print(f"\n{len(table)} mismatch cases, {sum(bool(r.error) for r in table)} refused, "
          f"{untouched} left the model untouched", file=sys.stderr)
    return 0 if untouched == len(table) else 1


if __name__ == "__main__":
    raise SystemExit(main())

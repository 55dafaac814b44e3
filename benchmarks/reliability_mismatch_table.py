"""Print the adapter/base-model mismatch table of RELIABILITY.md (promise 3) and save it.

Usage: ``python -m benchmarks.reliability_mismatch_table`` (from the repository root; ~10 s on CPU).
Writes ``benchmarks/results/reliability_mismatch_table.md``.
"""

from __future__ import annotations

import sys

from benchmarks.common import RESULTS


def main() -> int:
    """Run every case of benchmarks/reliability/mismatch_cases.py and print the markdown table."""
    from benchmarks.reliability.mismatch_cases import markdown, rows

    table = rows()
    text = markdown(table)
    out = RESULTS / "reliability_mismatch_table.md"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text + "\n", encoding="utf-8")
    print(text)
    untouched = sum(r.model_untouched for r in table)
    print(f"\n{len(table)} mismatch cases, {sum(bool(r.error) for r in table)} refused, "
          f"{untouched} left the model untouched", file=sys.stderr)
    return 0 if untouched == len(table) else 1


if __name__ == "__main__":
    raise SystemExit(main())

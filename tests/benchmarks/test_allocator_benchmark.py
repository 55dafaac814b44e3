"""benchmarks/allocator.py's summary: spreads per setting and speed paired with glibc's run of each repetition."""

from __future__ import annotations

import pytest

from benchmarks import allocator


def _run(peak: float, tps: float, train_peak: float | None = None) -> dict:
    return {"peak_mb": peak, "train_peak_mb": train_peak, "phases_mb": {}, "tokens_per_s": tps, "train_seconds": 1.0}


def test_summary_is_medians_spreads_and_paired_speed_ratios() -> None:
    glibc = [_run(4000, 50, 3900), _run(6800, 40, 6700), _run(4200, 60, 4100)]
    fixed = [_run(4000, 45, 3950), _run(4100, 40, 4000), _run(4200, 30, 4100)]
    line = allocator.summarise("mmap-4m", fixed, glibc)
    assert line["peak_mb"] == {"median": 4100, "min": 4000, "max": 4200, "n": 3}
    assert line["peak_spread"] == pytest.approx(0.05)
    assert line["train_peak_spread"] == pytest.approx(4100 / 3950 - 1)
    # each repetition against glibc's run of the same repetition: 0.9, 1.0, 0.5
    assert line["speed_vs_glibc"] == {"median": 0.9, "min": 0.5, "max": 1.0, "n": 3}
    base = allocator.summarise("glibc", glibc, glibc)
    assert base["peak_spread"] == pytest.approx(0.7) and base["speed_vs_glibc"]["median"] == 1.0
    text = allocator.table([base, line], {"date": "d", "lorakit_commit": "c", "cpu": {"model": "m", "flags": {}},
                                          "cpus": 2, "versions": {}, "threads": 2}, allocator.PROBE)
    assert "| `mmap-4m` | 4100 (4000-4200) | 5.0% |" in text and "70.0%" in text

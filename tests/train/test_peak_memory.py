"""Per-phase peak memory: each phase reports its own high-water mark, the overall peak is the largest."""

from __future__ import annotations

import subprocess
import sys

import pytest

# Run in a fresh interpreter: in a long-lived process (the whole suite) freed heap pages are already
# resident, so a new 64 MiB block may not raise the resident set at all and the check would measure
# the test runner's history rather than PeakMemory.
PROGRAM = """
import torch
from lorakit.train.outputs import PeakMemory, peak_memory_mb, reset_peak_rss

assert reset_peak_rss()
memory = PeakMemory(torch.device("cpu"))
memory.phase("big")
block = torch.ones(64 * 2**20 // 4)  # 64 MiB, touched
del block
memory.phase("small")
small = torch.ones(1024)
del small
overall = memory.overall()
assert memory.peaks["big"] - memory.peaks["small"] > 48, memory.peaks  # the block counts only in its phase
assert overall == memory.peaks["big"] and peak_memory_mb() <= overall + 1, (overall, memory.peaks)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="VmHWM and clear_refs are Linux's")
def test_each_phase_has_its_own_peak() -> None:
    done = subprocess.run([sys.executable, "-c", PROGRAM], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]

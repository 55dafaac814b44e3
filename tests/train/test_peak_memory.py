"""Per-phase peak memory: each phase reports its own high-water mark, the overall peak is the largest."""

from __future__ import annotations

import sys

import pytest
import torch

from lorakit.train.outputs import PeakMemory, peak_memory_mb, reset_peak_rss


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="VmHWM and clear_refs are Linux's")
def test_each_phase_has_its_own_peak() -> None:
    assert reset_peak_rss()
    memory = PeakMemory(torch.device("cpu"))
    memory.phase("big")
    block = torch.ones(64 * 2**20 // 4)  # 64 MiB, touched
    del block
    memory.phase("small")
    small = torch.ones(1024)
    del small
    overall = memory.overall()
    assert memory.peaks["big"] - memory.peaks["small"] > 48  # the 64 MiB block counts only in its phase
    assert overall == memory.peaks["big"] and peak_memory_mb() <= overall + 1

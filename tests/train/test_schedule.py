"""lr_at: warm-up, linear and cosine decay, as a pure function of the step."""

from __future__ import annotations

import math

import pytest

from lorakit.train.schedule import Schedule, lr_at


def test_warmup_rises_linearly_to_peak() -> None:
    rates = [lr_at(s, 1.0, 100, warmup_steps=4) for s in range(4)]
    assert rates == [0.25, 0.5, 0.75, 1.0]


@pytest.mark.parametrize("decay", ["linear", "cosine"])
def test_decay_ends_at_min_ratio(decay: str) -> None:
    assert lr_at(10, 2.0, 110, warmup_steps=10, decay=decay) == pytest.approx(2.0)
    assert lr_at(110, 2.0, 110, warmup_steps=10, decay=decay, min_ratio=0.1) == pytest.approx(0.2)
    assert lr_at(500, 2.0, 110, warmup_steps=10, decay=decay) == pytest.approx(0.0)  # past the end: clamped


def test_linear_midpoint_and_cosine_shape() -> None:
    assert lr_at(50, 1.0, 100, decay="linear") == pytest.approx(0.5)
    assert lr_at(50, 1.0, 100, decay="cosine") == pytest.approx(0.5)
    assert lr_at(25, 1.0, 100, decay="cosine") == pytest.approx(0.5 * (1 + math.cos(math.pi / 4)))
    assert lr_at(77, 1.0, 100, decay="constant") == 1.0


def test_schedule_is_pure_and_validated() -> None:
    s = Schedule(1e-3, 20, warmup_steps=2, decay="cosine")
    assert [s(i) for i in range(20)] == [s(i) for i in range(20)]
    assert all(s(i) >= s(i + 1) for i in range(1, 19))
    with pytest.raises(ValueError, match="decay"):
        Schedule(1e-3, 20, decay="step")
    with pytest.raises(ValueError, match="warmup"):
        Schedule(1e-3, 20, warmup_steps=21)
    with pytest.raises(ValueError, match="learning rate"):
        Schedule(float("nan"), 20)

"""Learning-rate schedule: linear warm-up, then linear or cosine decay, as one pure function.

``lr_at(step)`` depends on the step alone (nanoGPT's ``get_lr(it)``), so the schedule has no state
to checkpoint beyond the step counter, and a resumed run gets exactly the same rates.

::

    lr
    peak ┤    ╭──╮_
         │   ╱     ‾‾╲__            cosine (or a straight line for "linear")
         │  ╱            ‾‾╲__
     min ┤ ╱                  ‾‾──
         └─┴──────────────────────┴─► step
           warmup               total
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from lorakit.errors import LorakitError

DECAYS = ("linear", "cosine", "constant")


@dataclass(frozen=True)
class Schedule:
    """Warm-up then decay from ``peak`` to ``peak * min_ratio`` at ``total_steps``."""

    peak: float  # the learning rate reached at the end of warm-up
    total_steps: int  # optimizer steps of the whole run (the decay ends here)
    warmup_steps: int = 0  # linear ramp from ~0 to peak over these steps
    decay: str = "linear"  # "linear", "cosine" or "constant" (no decay after warm-up)
    min_ratio: float = 0.0  # final lr as a fraction of peak

    def __post_init__(self) -> None:
        if not (math.isfinite(self.peak) and self.peak > 0):
            raise LorakitError(f"learning rate must be a finite number > 0, got {self.peak!r}")
        if self.total_steps < 1:
            raise LorakitError(f"total steps must be >= 1, got {self.total_steps}")
        if not 0 <= self.warmup_steps <= self.total_steps:
            raise LorakitError(f"warmup steps must be in [0, {self.total_steps}], got {self.warmup_steps}")
        if self.decay not in DECAYS:
            raise LorakitError(f"decay must be one of {', '.join(DECAYS)}, got {self.decay!r}")
        if not 0.0 <= self.min_ratio <= 1.0:
            raise LorakitError(f"min_ratio must be in [0, 1], got {self.min_ratio!r}")

    def __call__(self, step: int) -> float:
        """The learning rate of optimizer step ``step`` (0-based)."""
        return lr_at(step, self.peak, self.total_steps, self.warmup_steps, self.decay, self.min_ratio)


def lr_at(step: int, peak: float, total_steps: int, warmup_steps: int = 0, decay: str = "linear",
          min_ratio: float = 0.0) -> float:
    """Learning rate for 0-based optimizer ``step``: pure, no state.

    Warm-up uses ``(step + 1) / warmup_steps`` so step 0 already moves the weights a little (a zero
    first rate would waste a step). After warm-up the progress ``p`` runs from 0 to 1 over the remaining
    steps and the rate is ``min + (peak - min) * f(p)`` with ``f = 1 - p`` or ``(1 + cos(pi p)) / 2``.
    """
    if step < warmup_steps:
        return peak * (step + 1) / warmup_steps
    floor = peak * min_ratio
    if decay == "constant":
        return peak
    span = max(total_steps - warmup_steps, 1)
    progress = min(max(step - warmup_steps, 0) / span, 1.0)
    factor = 1.0 - progress if decay == "linear" else 0.5 * (1.0 + math.cos(math.pi * progress))
    return floor + (peak - floor) * factor

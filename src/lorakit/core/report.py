"""Parameter counts of a model with adapters, as the LoRA paper reports them (trainable share, LoRA size).

A reading of the model, not a change to it: the adapter parameters are those :mod:`~lorakit.core.inject`
names, counted against everything else.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from lorakit.core.inject import adapter_parameters


@dataclass(frozen=True)
class ParameterReport:
    """Counts of parameters, as the paper reports them."""

    total: int
    trainable: int
    lora: int

    @property
    def percent(self) -> float:
        """Trainable share of all parameters, in percent."""
        return 100.0 * self.trainable / max(self.total, 1)

    def __str__(self) -> str:
        return f"trainable {self.trainable:,} of {self.total:,} parameters ({self.percent:.4f}%), LoRA {self.lora:,}"


def parameter_report(model: nn.Module) -> ParameterReport:
    """Total, trainable and LoRA parameter counts (shared tensors counted once)."""
    adapter = {id(p) for p in adapter_parameters(model).values()}
    seen: set[int] = set()
    total = trainable = lora = 0
    for _, p in model.named_parameters(remove_duplicate=False):
        if id(p) in seen:
            continue
        seen.add(id(p))
        total += p.numel()
        trainable += p.numel() if p.requires_grad else 0
        lora += p.numel() if id(p) in adapter else 0
    return ParameterReport(total, trainable, lora)

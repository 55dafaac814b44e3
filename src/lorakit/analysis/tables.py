"""Table rows and JSON-ready records of the analyses, for the terminal and for ``--json`` files.

Rows are ``{column: value}`` dicts with plain Python numbers (``lorakit.cli.common.print_table``
aligns them); records are nested dicts/lists that ``json.dumps`` accepts. Nothing here computes.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from typing import Any

from torch import Tensor

from lorakit.analysis.amplification import Amplification
from lorakit.analysis.spectrum import Spectrum
from lorakit.analysis.subspace import random_baseline

SUBSPACE_COLUMNS = ["module", "d", "r1", "r2", "φ(1,1)", "chance 1,1", "φ(1,r2)", "chance 1,r2", "φ(k,k)",
                    "chance k,k"]
SUBSPACE_LEGEND = ("φ = 1: one subspace contains the other, 0: orthogonal; chance = max(i, j)/d, the mean for "
                   "random subspaces; k = min(r1, r2)")
SPECTRUM_COLUMNS = ["module", "shape", "r", "‖ΔW‖_F", "σ1", "top-1 energy", "eff. rank", "rank@energy"]
AMPLIFICATION_COLUMNS = ["module", "r", "‖ΔW‖_F", "‖W‖_F", "‖UᵀWV‖ ΔW", "‖UᵀWV‖ W", "‖UᵀWV‖ random",
                         "amplification"]
AMPLIFICATION_LEGEND = ("‖UᵀWV‖_F: W projected on the top-r singular directions of ΔW, of W itself, or on random "
                        "ones (mean±std); amplification = ‖ΔW‖_F / ‖UᵀWV‖_F with ΔW's directions (paper Table 7)")


def format_values(values: Tensor | Sequence[float], limit: int = 12) -> str:
    """``0.91 0.73 …`` for a short series; longer ones show the first ``limit`` values and a count."""
    vals = [float(v) for v in values]
    text = " ".join(f"{v:.2f}" for v in vals[:limit])
    return text + (f" … ({len(vals)} values)" if len(vals) > limit else "")


def subspace_rows(grids: Mapping[str, Tensor], dims: Mapping[str, int]) -> list[dict[str, Any]]:
    """One row per module: φ(1,1), φ(1, r₂) and φ(k, k), each beside its chance level max(i, j)/d."""
    rows = []
    for path, grid in grids.items():
        r1, r2 = grid.shape
        k = min(r1, r2)
        chance = random_baseline(dims[path], r1, r2)
        cells = [path, dims[path], r1, r2, grid[0, 0], chance[0, 0], grid[0, -1], chance[0, -1],
                 grid[k - 1, k - 1], chance[k - 1, k - 1]]
        rows.append(dict(zip(SUBSPACE_COLUMNS, map(_plain, cells), strict=True)))
    return rows


def subspace_details(grids: Mapping[str, Tensor], limit: int = 12) -> str:
    """The headline series of every module: the diagonal φ(i, i) and the first row φ(1, j)."""
    lines = []
    for path, grid in grids.items():
        k = min(grid.shape)
        lines += [path,
                  f"  φ(i, i), i = 1..{k}: {format_values(grid.diagonal(), limit)}",
                  f"  φ(1, j), j = 1..{grid.shape[1]}: {format_values(grid[0], limit)}"]
    return "\n".join(lines)


def subspace_record(grid: Tensor, d: int) -> dict[str, Any]:
    """JSON-ready record of one module's φ grid, with its headline series and their chance levels."""
    r1, r2 = grid.shape
    chance = random_baseline(d, r1, r2)
    return {
        "d": d, "r1": r1, "r2": r2,
        "phi": to_jsonable(grid),
        "diagonal": to_jsonable(grid.diagonal()),
        "first_row": to_jsonable(grid[0]),
        "chance_diagonal": to_jsonable(chance.diagonal()),
        "chance_first_row": to_jsonable(chance[0]),
    }


def spectrum_rows(spectra: Mapping[str, Spectrum]) -> list[dict[str, Any]]:
    """One row per module: shape, rank, ‖ΔW‖_F, σ₁, top-1 energy share, effective rank, rank at threshold."""
    rows = []
    for path, spec in spectra.items():
        s = spec.singular_values
        cells = [path, f"{spec.shape[0]}x{spec.shape[1]}", s.numel(), spec.frobenius_norm,
                 s[0] if s.numel() else 0.0, spec.energy[0] if s.numel() else 0.0,
                 spec.effective_rank, spec.rank_at_threshold]
        rows.append(dict(zip(SPECTRUM_COLUMNS, map(_plain, cells), strict=True)))
    return rows


def amplification_rows(results: Mapping[str, Amplification]) -> list[dict[str, Any]]:
    """The paper's Table 7, one row per module."""
    rows = []
    for path, a in results.items():
        cells = [path, a.rank, a.delta_norm, a.weight_norm, a.projection_delta, a.projection_weight,
                 f"{a.projection_random:.4g}±{a.projection_random_std:.2g}", a.amplification]
        rows.append(dict(zip(AMPLIFICATION_COLUMNS, map(_plain, cells), strict=True)))
    return rows


def to_jsonable(value: Any) -> Any:
    """Tensors to (nested) lists, dataclasses to dicts, non-finite floats to None (JSON has no inf)."""
    if isinstance(value, Tensor):
        return to_jsonable(value.detach().cpu().tolist())
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: to_jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, Mapping):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [to_jsonable(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _plain(value: Any) -> Any:
    """0-d tensors to Python numbers, so table printers format them as numbers."""
    return value.item() if isinstance(value, Tensor) else value

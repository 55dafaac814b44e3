"""Figures for the analyses (matplotlib, imported lazily with the non-interactive Agg backend).

``plot_subspace`` follows the paper's Figure 3 (one φ(i, j) heatmap per module, shared 0..1 colour
scale) and adds, under each heatmap, φ(1, j) and the diagonal φ(i, i) against the random-subspace
baseline so that signal can be told from chance. ``plot_spectrum`` shows singular values, cumulative
energy and effective ranks per module.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from torch import Tensor

from lorakit.analysis.spectrum import Spectrum
from lorakit.errors import LorakitError


def _pyplot() -> Any:
    """matplotlib.pyplot on the Agg backend: imported here so that analysis works without it."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def short_names(paths: Sequence[str], width: int = 42) -> tuple[str, list[str]]:
    """(common dotted prefix, paths without it), each cut from the left to ``width`` characters.

    The prefix keeps the name of a numbered container (``layer`` in ``layer.3.query``), so a panel
    titled ``layer.3.attention.self.query`` still says what the number is.
    """
    parts = [p.split(".") for p in paths]
    common = 0
    if len(parts) > 1:
        while all(len(p) > common + 1 for p in parts) and len({p[common] for p in parts}) == 1:
            common += 1
        if common and any(p[common].isdigit() for p in parts):
            common -= 1
    names = [".".join(p[common:]) for p in parts]
    prefix = ".".join(parts[0][:common])
    return prefix, [n if len(n) <= width else "…" + n[-(width - 1):] for n in names]


def _select(keys: Sequence[str], max_panels: int) -> list[str]:
    """At most ``max_panels`` keys, evenly spaced (first and last kept) so every depth is represented."""
    if len(keys) <= max_panels:
        return list(keys)
    step = (len(keys) - 1) / (max_panels - 1)
    return [keys[round(i * step)] for i in range(max_panels)]


def plot_subspace(
    grids: Mapping[str, Tensor],
    out_png: str | Path,
    *,
    dims: Mapping[str, int] | int | None = None,
    title: str = "Subspace similarity φ(i, j)",
    labels: tuple[str, str] = ("adapter 1", "adapter 2"),
    max_panels: int = 8,
) -> Path:
    """Save a Figure-3-style PNG of φ grids (``{module: grid}``, ``grid[i-1, j-1] = φ(i, j)``).

    ``dims`` gives the ambient dimension d per module (or one d for all) and enables the chance
    line ``max(i, j)/d``; ``labels`` name the two adapters on the axes. With more than
    ``max_panels`` modules an evenly spaced selection is drawn and the title says so.
    """
    if not grids:
        raise LorakitError("no φ grids to plot")
    plt = _pyplot()
    keys = _select(list(grids), max_panels)
    prefix, names = short_names(keys)
    ncols = min(len(keys), 4)
    nrows = math.ceil(len(keys) / ncols)
    fig = plt.figure(figsize=(4.2 * ncols + 1.2, 5.6 * nrows), constrained_layout=True)
    gs = fig.add_gridspec(2 * nrows, ncols, height_ratios=[3, 2] * nrows)
    image = None
    for n, (key, name) in enumerate(zip(keys, names, strict=True)):
        grid = grids[key].detach().cpu().double().numpy()
        r1, r2 = grid.shape
        row, col = divmod(n, ncols)
        ax = fig.add_subplot(gs[2 * row, col])
        # extent puts cell (i, j) at integer coordinates, so ticks read as the 1-based i and j.
        image = ax.imshow(grid, vmin=0.0, vmax=1.0, cmap="viridis", aspect="auto",
                          extent=(0.5, r2 + 0.5, r1 + 0.5, 0.5), interpolation="nearest")
        if r1 * r2 <= 100:  # small grids: print the values, the colour alone is hard to read exactly
            for i in range(r1):
                for j in range(r2):
                    ax.text(j + 1, i + 1, f"{grid[i, j]:.2f}", ha="center", va="center", fontsize=7,
                            color="black" if grid[i, j] > 0.6 else "white")
        ax.set_title(name, fontsize=9)
        ax.set_xlabel(f"j  (top-j of {labels[1]})", fontsize=8)
        ax.set_ylabel(f"i  (top-i of {labels[0]})", fontsize=8)
        _integer_ticks(ax)
        d = dims.get(key) if isinstance(dims, Mapping) else dims
        _plot_lines(fig.add_subplot(gs[2 * row + 1, col]), grid, d, legend=n == 0)
    fig.colorbar(image, ax=fig.axes[::2], label="φ(i, j)", shrink=0.8)
    shown = "" if len(keys) == len(grids) else f"  (showing {len(keys)} of {len(grids)} modules)"
    fig.suptitle(title + shown + (f"\nmodules under {prefix}" if prefix else ""), fontsize=11)
    return _save(fig, out_png)


def _plot_lines(ax: Any, grid: np.ndarray, d: int | None, legend: bool) -> None:
    """φ(1, j) and φ(i, i) against the chance level max(i, j)/d (= k/d on both curves)."""
    r1, r2 = grid.shape
    k = min(r1, r2)
    ax.plot(range(1, r2 + 1), grid[0], marker="o", markersize=3, label="φ(1, j)")
    ax.plot(range(1, k + 1), grid.diagonal(), marker="s", markersize=3, linestyle="--", label="φ(i, i)")
    if d is not None:
        xs = range(1, max(r1, r2) + 1)
        ax.plot(xs, [x / d for x in xs], color="grey", linestyle=":", label=f"chance, k/d (d={d})")
    ax.set_ylim(-0.02, 1.05)
    ax.set_xlim(0.5, max(r1, r2) + 0.5)
    ax.set_xlabel("j, or i on the diagonal", fontsize=8)
    ax.set_ylabel("φ", fontsize=8)
    ax.grid(alpha=0.3)
    _integer_ticks(ax, y=False)
    if legend:
        ax.legend(fontsize=7, loc="best")


def plot_spectrum(
    spectra: Mapping[str, Spectrum],
    out_png: str | Path,
    *,
    title: str = "Spectrum of ΔW = s·B·A",
) -> Path:
    """Save a PNG with, per module: singular values (log scale), cumulative energy with the
    threshold line, and a bar chart of effective rank and rank at the energy threshold."""
    if not spectra:
        raise LorakitError("no spectra to plot")
    plt = _pyplot()
    keys = list(spectra)
    prefix, names = short_names(keys)
    cmap = plt.get_cmap("viridis")
    colours = [cmap(i / max(len(keys) - 1, 1)) for i in range(len(keys))]
    height = max(4.5, 0.28 * len(keys) + 1.5)
    fig, (ax_s, ax_e, ax_r) = plt.subplots(1, 3, figsize=(16, height), constrained_layout=True,
                                           gridspec_kw={"width_ratios": [1, 1, 1.1]})
    legend = len(keys) <= 10  # beyond that a legend hides the data; the bar chart names the colours
    for n, (key, name, colour) in enumerate(zip(keys, names, colours, strict=True)):
        spec = spectra[key]
        ks = range(1, spec.singular_values.numel() + 1)
        label = name if legend else f"#{n + 1}"
        positive = spec.singular_values.clamp_min(1e-300).numpy()  # log scale: zeros drawn at the floor
        ax_s.plot(ks, positive, marker="o", markersize=2, color=colour, label=label)
        ax_e.plot(ks, spec.energy.numpy(), marker="o", markersize=2, color=colour, label=label)
    threshold = spectra[keys[0]].threshold
    ax_s.set_yscale("log")
    ax_s.set(xlabel="k", ylabel=r"$\sigma_k$", title="singular values")
    ax_e.axhline(threshold, color="grey", linestyle=":", label=f"{threshold:.0%} energy")
    ax_e.set(xlabel="k", ylabel=r"$\sum_{i \leq k} \sigma_i^2 \;/\; \sum_i \sigma_i^2$", title="cumulative energy", ylim=(0, 1.02))
    for ax in (ax_s, ax_e):
        ax.grid(alpha=0.3)
        _integer_ticks(ax, y=False)
    if legend:
        ax_e.legend(fontsize=7, loc="lower right")
    ys = range(len(keys))
    eff = [spectra[k].effective_rank for k in keys]
    r90 = [spectra[k].rank_at_threshold for k in keys]
    ax_r.barh([y - 0.2 for y in ys], eff, height=0.4, color=colours, label="effective rank")
    ax_r.barh([y + 0.2 for y in ys], r90, height=0.4, color=colours, alpha=0.45, hatch="//",
              label=f"rank at {threshold:.0%} energy")
    ax_r.set_yticks(list(ys), [f"#{n + 1} {name}" for n, name in enumerate(names)], fontsize=7)
    ax_r.invert_yaxis()
    # The x axis runs to the largest possible rank, so the bars read as "k of r".
    max_rank = max(spectra[k].singular_values.numel() for k in keys)
    ax_r.set(xlabel=f"rank (axis ends at the largest r = {max_rank})", xlim=(0, max_rank),
             title="effective rank (solid) / rank at threshold (hatched)")
    ax_r.grid(alpha=0.3, axis="x")
    ax_r.legend(fontsize=7, loc="lower right")
    fig.suptitle(title + (f"\nmodules under {prefix}" if prefix else ""), fontsize=11)
    return _save(fig, out_png)


def _integer_ticks(ax: Any, y: bool = True) -> None:
    """Integer tick labels only: i, j and k are counts of directions."""
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True, nbins=8))
    if y:
        ax.yaxis.set_major_locator(MaxNLocator(integer=True, nbins=8))


def _save(fig: Any, out_png: str | Path) -> Path:
    """Write the figure (creating the folder) and free it: Agg figures otherwise pile up in memory."""
    import matplotlib.pyplot as plt

    path = Path(out_png)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path

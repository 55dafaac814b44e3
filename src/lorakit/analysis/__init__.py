"""Pure functions over adapter tensors (Hu et al. 2021, §7): subspace similarity, spectra,
amplification of the base weight, adapter algebra, plots and tables.

Imports torch, ``lorakit.core`` and ``lorakit.io`` (to read adapter files) only; matplotlib is imported inside the
plotting functions.
"""

from lorakit.analysis.adapters import (
    CombinedAdapter,
    amplification_by_module,
    combine_adapter_files,
    select_modules,
    spectrum_by_module,
    subspace_by_module,
)
from lorakit.analysis.algebra import FactorsLike, combine_concat, combine_modules, combine_svd
from lorakit.analysis.amplification import Amplification, amplification, projection_norm
from lorakit.analysis.lowrank import as_matrix, factor_matrices, lowrank_svd
from lorakit.analysis.plots import plot_spectrum, plot_subspace
from lorakit.analysis.spectrum import (
    Spectrum,
    effective_rank,
    energy_curve,
    rank_at_energy,
    spectrum,
    spectrum_from_factors,
)
from lorakit.analysis.subspace import (
    phi_from_overlap,
    phi_grid,
    random_baseline,
    random_baseline_mc,
    subspace_basis,
    subspace_dim,
)

__all__ = [
    "Amplification",
    "CombinedAdapter",
    "amplification_by_module",
    "combine_adapter_files",
    "select_modules",
    "spectrum_by_module",
    "subspace_by_module",
    "FactorsLike",
    "Spectrum",
    "amplification",
    "as_matrix",
    "combine_concat",
    "combine_modules",
    "combine_svd",
    "effective_rank",
    "energy_curve",
    "factor_matrices",
    "lowrank_svd",
    "phi_from_overlap",
    "phi_grid",
    "plot_spectrum",
    "plot_subspace",
    "projection_norm",
    "random_baseline",
    "random_baseline_mc",
    "rank_at_energy",
    "spectrum",
    "spectrum_from_factors",
    "subspace_basis",
    "subspace_dim",
]

"""Analyse adapters as in the paper's §7: subspace similarity, spectra and amplification.

  lorakit analyze subspace ADAPTER_1 ADAPTER_2 [--modules REGEX] [--matrix A|B] [--plot F.png] [--json F]
  lorakit analyze spectrum ADAPTER [--modules REGEX] [--threshold 0.9] [--plot F.png] [--json F]
  lorakit analyze amplification MODEL ADAPTER [--modules REGEX] [--n-random 8] [--json [F]]

Tables go to stdout; ``--json`` without a file (or ``--json -``) prints JSON alone to stdout instead.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from lorakit.analysis.adapters import (
    amplification_by_module,
    select_modules,
    spectrum_by_module,
    subspace_by_module,
)
from lorakit.analysis.tables import (
    AMPLIFICATION_COLUMNS,
    AMPLIFICATION_LEGEND,
    SPECTRUM_COLUMNS,
    SUBSPACE_COLUMNS,
    SUBSPACE_LEGEND,
    amplification_rows,
    spectrum_rows,
    subspace_details,
    subspace_record,
    subspace_rows,
    to_jsonable,
)
from lorakit.cli.common import print_table, write_json
from lorakit.errors import LorakitError
from lorakit.io import AdapterFile, read_adapter


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``lorakit analyze`` and its three analyses."""
    sub = parser.add_subparsers(dest="analysis", metavar="ANALYSIS", required=True)

    p = sub.add_parser("subspace", help="φ(i, j): how much the top-i directions of one adapter span those of another",
                       description="Subspace similarity (paper §7.2, Figure 3) between two adapters, per module.")
    p.add_argument("adapter1", metavar="ADAPTER_1", help="adapter folder (PEFT layout)")
    p.add_argument("adapter2", metavar="ADAPTER_2", help="adapter folder (PEFT layout)")
    p.add_argument("--matrix", choices=("A", "B"), default="A",
                   help="compare the row spaces of A (input side) or column spaces of B (output side) "
                        "[default: %(default)s]")
    p.add_argument("--max-panels", type=int, default=8, help="most modules drawn in --plot [default: %(default)s]")
    p.add_argument("--labels", metavar="NAME1,NAME2", default=None,
                   help="names of the two adapters in --plot (default: their folder names)")
    _common(p, plot=True)

    p = sub.add_parser("spectrum", help="singular values, energy and effective rank of each ΔW = s·B·A",
                       description="Singular-value spectrum of each module's update ΔW = s·B·A.")
    p.add_argument("adapter", metavar="ADAPTER", help="adapter folder (PEFT layout)")
    p.add_argument("--threshold", type=float, default=0.9,
                   help="energy share for the 'rank at energy' column [default: %(default)s]")
    _common(p, plot=True)

    p = sub.add_parser("amplification", help="how strongly ΔW's directions are present in W (paper Table 7)",
                       description="‖U_rᵀ W V_r‖_F for ΔW's, W's and random directions, and ‖ΔW‖_F over it.")
    p.add_argument("model", metavar="MODEL", help="the adapter's base model: embedded name or local HF folder")
    p.add_argument("adapter", metavar="ADAPTER", help="adapter folder (PEFT layout)")
    p.add_argument("--n-random", type=int, default=8, help="random draws averaged [default: %(default)s]")
    p.add_argument("--seed", type=int, default=0, help="seed of the random directions [default: %(default)s]")
    _common(p, plot=False)


def _common(p: argparse.ArgumentParser, plot: bool) -> None:
    p.add_argument("--modules", metavar="REGEX", default=None,
                   help="only modules whose path matches this regular expression (re.search)")
    if plot:
        p.add_argument("--plot", metavar="FILE.png", default=None, help="write a figure to this PNG file")
    p.add_argument("--json", metavar="FILE", nargs="?", const="-", default=None,
                   help="write all results as JSON to FILE (no FILE or '-': to stdout, instead of the table)")


def run(args: argparse.Namespace) -> int:
    """Run the chosen analysis."""
    return {"subspace": _subspace, "spectrum": _spectrum, "amplification": _amplification}[args.analysis](args)


def _say(args: argparse.Namespace, text: str) -> None:
    # With JSON on stdout, everything else goes to stderr so stdout stays parseable.
    print(text, file=sys.stderr if args.json == "-" else sys.stdout)


def _wrote_json(args: argparse.Namespace) -> None:
    if args.json != "-":
        print(f"wrote {args.json}")


def _check_plot(args: argparse.Namespace) -> None:
    # Checked before any work, so a typo in the file name does not cost a whole analysis.
    if args.plot is not None and Path(args.plot).suffix.lower() != ".png":
        raise LorakitError(f"--plot must name a .png file, got {args.plot!r}")


def _subspace(args: argparse.Namespace) -> int:
    _check_plot(args)
    if args.max_panels < 1:
        raise LorakitError(f"--max-panels must be at least 1, got {args.max_panels}")
    if args.labels is not None and (args.labels.count(",") != 1 or not all(args.labels.split(","))):
        raise LorakitError(f"--labels must be two names separated by a comma, got {args.labels!r}")
    first, second = read_adapter(args.adapter1), read_adapter(args.adapter2)
    grids, dims, notes = subspace_by_module(select_modules(first.factors(), args.modules),
                                            select_modules(second.factors(), args.modules), args.matrix)
    for note in notes:
        _say(args, f"note: {note}")
    if args.json != "-":
        print(f"subspace similarity of {args.matrix}: {args.adapter1} (1) vs {args.adapter2} (2), "
              f"{len(grids)} module(s)")
        print_table(subspace_rows(grids, dims), SUBSPACE_COLUMNS)
        print(f"\n{SUBSPACE_LEGEND}\n\n{subspace_details(grids)}")
    if args.plot:
        from lorakit.analysis.plots import plot_subspace

        labels = tuple(args.labels.split(",", 1)) if args.labels else (_name(args.adapter1), _name(args.adapter2))
        title = f"Subspace similarity φ(i, j) of {args.matrix}: {labels[0]} vs {labels[1]}"
        path = plot_subspace(grids, args.plot, dims=dims, title=title, labels=labels, max_panels=args.max_panels)
        _say(args, f"wrote {path}")
    if args.json is not None:
        write_json({"analysis": "subspace", "matrix": args.matrix, "adapters": [args.adapter1, args.adapter2],
                    "chance": "max(i, j) / d", "notes": notes,
                    "modules": {p: subspace_record(g, dims[p]) for p, g in grids.items()}}, args.json)
        _wrote_json(args)
    return 0


def _spectrum(args: argparse.Namespace) -> int:
    _check_plot(args)
    if not 0.0 < args.threshold <= 1.0:
        raise LorakitError(f"--threshold must be in (0, 1], got {args.threshold}")
    adapter = read_adapter(args.adapter)
    spectra = spectrum_by_module(select_modules(adapter.factors(), args.modules), args.threshold)
    if args.json != "-":
        print(f"spectrum of ΔW = s·B·A: {args.adapter}, {len(spectra)} module(s); "
              f"rank@energy: smallest k holding {args.threshold:.0%} of ‖ΔW‖²_F")
        print_table(spectrum_rows(spectra), SPECTRUM_COLUMNS)
    if args.plot:
        from lorakit.analysis.plots import plot_spectrum

        path = plot_spectrum(spectra, args.plot, title=f"Spectrum of ΔW = s·B·A: {_name(args.adapter)}")
        _say(args, f"wrote {path}")
    if args.json is not None:
        write_json({"analysis": "spectrum", "adapter": args.adapter, "modules": to_jsonable(spectra)}, args.json)
        _wrote_json(args)
    return 0


def _amplification(args: argparse.Namespace) -> int:
    if args.n_random < 1:
        raise LorakitError(f"--n-random must be at least 1, got {args.n_random}")
    adapter = read_adapter(args.adapter)
    factors = select_modules(adapter.factors(), args.modules)
    model = load_base_model(args.model, adapter)
    results, notes = amplification_by_module(model, factors, n_random=args.n_random, seed=args.seed)
    for note in notes:
        _say(args, f"note: {note}")
    if args.json != "-":
        print(f"amplification: {args.adapter} on {args.model}, {len(results)} module(s)")
        print_table(amplification_rows(results), AMPLIFICATION_COLUMNS)
        print(f"\n{AMPLIFICATION_LEGEND}")
    if args.json is not None:
        write_json({"analysis": "amplification", "model": args.model, "adapter": args.adapter, "notes": notes,
                    "modules": to_jsonable(results)}, args.json)
        _wrote_json(args)
    return 0


def load_base_model(name_or_path: str, adapter: AdapterFile) -> torch.nn.Module:
    """The adapter's base model (with the head it was trained with), as an ``nn.Module``."""
    from lorakit.cli.common import load_model_for_adapter

    return load_model_for_adapter(name_or_path, adapter).model


GENERIC_NAMES = ("adapter", "best")  # folders lorakit train writes: the run's folder names it better


def _name(path: str) -> str:
    p = Path(path)
    return (p.parent.name if p.name in GENERIC_NAMES and p.parent.name else p.name) or str(path)

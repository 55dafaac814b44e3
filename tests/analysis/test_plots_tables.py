"""Plots are written as readable PNGs; tables and JSON records hold what the CLI promises."""

from __future__ import annotations

import json

import pytest
import torch

from lorakit.analysis import phi_grid, plot_spectrum, plot_subspace, spectrum_from_factors
from lorakit.analysis.plots import short_names
from lorakit.analysis.tables import (
    SPECTRUM_COLUMNS,
    SUBSPACE_COLUMNS,
    spectrum_rows,
    subspace_details,
    subspace_record,
    subspace_rows,
    to_jsonable,
)

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture
def grids():
    g = torch.Generator().manual_seed(0)
    paths = [f"bert.encoder.layer.{i}.attention.self.{m}" for i in range(5) for m in ("query", "value")]
    return {p: phi_grid(torch.randn(4, 32, generator=g), torch.randn(8, 32, generator=g)) for p in paths}


def test_plot_subspace_writes_a_png_and_selects_panels(tmp_path, grids):
    out = plot_subspace(grids, tmp_path / "sub" / "phi.png", dims=32, max_panels=4)
    assert out.read_bytes()[:8] == PNG_MAGIC
    small = plot_subspace(dict(list(grids.items())[:1]), tmp_path / "one.png", dims={next(iter(grids)): 32})
    assert small.stat().st_size > 10_000  # a figure, not an empty canvas


def test_plot_spectrum_writes_a_png(tmp_path):
    g = torch.Generator().manual_seed(1)
    spectra = {f"layer.{i}.q": spectrum_from_factors(torch.randn(4, 16, generator=g), torch.randn(16, 4, generator=g))
               for i in range(12)}  # > 10 modules: numbered instead of a legend
    assert plot_spectrum(spectra, tmp_path / "spec.png").read_bytes()[:8] == PNG_MAGIC
    with pytest.raises(ValueError, match="no spectra"):
        plot_spectrum({}, tmp_path / "empty.png")


def test_short_names_keep_the_numbered_container():
    prefix, names = short_names(["bert.encoder.layer.0.attention.self.query", "bert.encoder.layer.1.output.dense"])
    assert prefix == "bert.encoder" and names == ["layer.0.attention.self.query", "layer.1.output.dense"]
    assert short_names(["a.b.c"]) == ("", ["a.b.c"])


def test_subspace_rows_and_records(grids):
    dims = dict.fromkeys(grids, 32)
    rows = subspace_rows(grids, dims)
    assert list(rows[0]) == SUBSPACE_COLUMNS and len(rows) == len(grids)
    first = next(iter(grids))
    assert rows[0]["φ(1,1)"] == pytest.approx(float(grids[first][0, 0]))
    assert rows[0]["chance 1,r2"] == pytest.approx(8 / 32) and rows[0]["chance k,k"] == pytest.approx(4 / 32)
    record = subspace_record(grids[first], 32)
    assert json.loads(json.dumps(record))["phi"][0][0] == pytest.approx(float(grids[first][0, 0]))
    assert len(record["first_row"]) == 8 and len(record["diagonal"]) == 4
    assert "φ(1, j), j = 1..8" in subspace_details(grids)


def test_spectrum_rows_and_json_of_a_dataclass():
    spec = spectrum_from_factors(torch.eye(3, 5), torch.eye(4, 3), 2.0)
    row = spectrum_rows({"m": spec})[0]
    assert list(row) == SPECTRUM_COLUMNS and row["σ1"] == pytest.approx(2.0) and row["eff. rank"] == pytest.approx(3)
    data = to_jsonable(spec)
    assert data["singular_values"] == pytest.approx([2.0, 2.0, 2.0]) and data["shape"] == [4, 5]
    assert to_jsonable({"x": float("inf")}) == {"x": None}

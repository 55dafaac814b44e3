"""The reliability campaigns' results files record their run (``machine``), whatever ``--out`` names.

Each test calls the function that writes a script's results with made-up figures and a temporary
folder: no training, no server, no fuzzing.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmarks import reliability_fuzz, reliability_kill, reliability_mismatch_table, reliability_serve_load
from benchmarks.reliability.mismatch_cases import Row, markdown


@pytest.mark.parametrize("module", [reliability_kill, reliability_serve_load, reliability_fuzz],
                         ids=lambda m: m.__name__.rsplit(".", 1)[-1])
def test_a_campaigns_json_records_the_run_and_keeps_its_figures(tmp_path: Path, provenance, module) -> None:
    result = {"seed": 1, "seconds": 2.5, "details": {"chains": [{"exact": True}]}}
    path = module.write(result, tmp_path / "campaign.json", ["--seed", "1"])
    assert path == tmp_path / "campaign.json"
    data = provenance(path, command=f"python -m {module.__name__} --seed 1")
    assert {k: v for k, v in data.items() if k != "machine"} == result


def test_the_mismatch_table_keeps_the_documented_table_under_the_provenance(tmp_path: Path, provenance) -> None:
    table = [Row("shape", "A | B transposed", "ValueError", "adapter does not fit", True),
             Row("config", "no magnitude", "", "", False)]
    out_json, out_md = reliability_mismatch_table.write(table, tmp_path)
    data = provenance(out_json, out_md, "python -m benchmarks.reliability_mismatch_table")
    assert (data["cases"], data["refused"], data["model_untouched"]) == (2, 1, 1)
    assert data["rows"][0] == {"check": "shape", "case": "A | B transposed", "error": "ValueError",
                               "message": "adapter does not fit", "model_untouched": True}
    assert markdown(table) in out_md.read_text()  # RELIABILITY.md quotes this table verbatim

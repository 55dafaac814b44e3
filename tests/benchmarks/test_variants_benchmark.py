"""benchmarks.variants writes its table with the run's provenance."""

from __future__ import annotations

import argparse
from pathlib import Path

from benchmarks import variants


def test_variants_results_record_the_run(tmp_path: Path, provenance) -> None:
    args = argparse.Namespace(steps=120, nlg_steps=40, eval_limit=100, seed=0)
    table = [{"data": "sst2", "method": "dora-r8", "accuracy": 90.5, "vs_lora": "+0.50", "trainable_params": 1000}]
    out_json, out_md = variants.write(args, table, 2, out=tmp_path)
    data = provenance(out_json, out_md)
    assert data["machine"]["command"].startswith("python -m benchmarks.variants")
    assert (data["rows_done"], data["rows_total"], data["table"]) == (1, 2, table)
    assert "1/2 rows finished" in out_md.read_text()

"""benchmarks.lora_saved_memory writes its figures with the run's provenance."""

from __future__ import annotations

from pathlib import Path

from benchmarks import lora_saved_memory


def test_saved_memory_results_record_the_run(tmp_path: Path, provenance) -> None:
    rows = [{"x_dtype": "bfloat16", "dropout": 0.05, "old_mib": 13.5, "new_mib": 2.25}]
    out_json, out_md = lora_saved_memory.write(rows, tmp_path, [])
    data = provenance(out_json, out_md, "python -m benchmarks.lora_saved_memory")
    assert data["rows"] == rows and data["shape"] == lora_saved_memory.SHAPE
    assert "| bfloat16 | 0.05 | 13.5 | 2.25 |" in out_md.read_text()

"""``lorakit quickstart`` end to end on the real minilm and SST-2 (slow: minutes)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lorakit.cli.main import main


@pytest.mark.slow
def test_quickstart_improves_sst2_accuracy(data_root: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "quickstart"
    assert main(["quickstart", "--data-root", str(data_root), "--out", str(out), "--max-steps", "60",
                 "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert "SST-2 dev accuracy" in printed and "loss.png" in printed
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["test"]["accuracy"] > metrics["base"]["accuracy"] + 0.15
    assert metrics["test"]["accuracy"] > 0.75 and metrics["trainable_percent"] < 0.5
    assert (out / "adapter" / "adapter_model.safetensors").is_file() and (out / "loss.png").is_file()

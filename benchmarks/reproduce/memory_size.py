"""Memory and size (paper §4.2): peak training memory of LoRA vs full fine-tuning, adapter vs model checkpoint.

Claims tested: LoRA needs about 3x less training memory than full fine-tuning (paper: GPT-3 175B,
1.2 TB -> 350 GB of VRAM, mostly optimizer state) and its checkpoint is orders of magnitude smaller
(350 GB -> 35 MB). No run of its own: it reads the rows of nlu.py and nlg.py (each run is a fresh
process, so its peak resident set is its own) and compares, per model and data set, every LoRA row
with the full fine-tuning row trained the same way. Seconds to run once those tables exist.

    python benchmarks/reproduce/memory_size.py
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import RESULTS, machine, markdown_table, write_results  # noqa: E402
from sweep import RUNS  # noqa: E402


def _load(name: str) -> list[dict]:
    path = RESULTS / f"{name}.json"
    if not path.is_file():
        raise SystemExit(f"{path} is missing: run benchmarks/reproduce/{name}.py first")
    return json.loads(path.read_text())["table"]


def _metrics(line: dict) -> dict:
    """The metrics.json of a table line's (first) run, under runs/reproduce/."""
    key = line["runs"][0] if "runs" in line else line["run"]
    return json.loads((RUNS / key / "metrics.json").read_text())


def compare(model: str, group: str, lines: list[dict]) -> list[dict]:
    """LoRA (and BitFit) lines of one group against the group's full fine-tuning line."""
    full = next((line for line in lines if line["method"] == "full"), None)
    if full is None:
        return []
    full_m = _metrics(full)
    rows = []
    for line in lines:
        if line["method"] in ("full", "base (zero-shot)"):
            continue
        m = _metrics(line)
        saved = m.get("adapter_bytes") or m.get("model_bytes")
        rows.append({
            "model": model, "data": group, "method": line["method"],
            "trainable_params": m["trainable_params"], "full_trainable_params": full_m["trainable_params"],
            "peak_memory_mb": m["peak_memory_mb"], "full_peak_memory_mb": full_m["peak_memory_mb"],
            "memory_saving": full_m["peak_memory_mb"] / m["peak_memory_mb"],
            "saved_bytes": saved, "full_model_bytes": full_m["model_bytes"],
            "size_ratio": full_m["model_bytes"] / saved,
            "saved_as": "adapter" if m.get("adapter_bytes") else "whole model",
        })
    return rows


def main() -> None:
    """Read nlu.json and nlg.json, write results/memory_size.{json,md}."""
    rows = []
    nlu = _load("nlu")
    for data in dict.fromkeys(line["data"] for line in nlu):
        rows += compare("minilm", data, [line for line in nlu if line["data"] == data])
    rows += compare("smollm2", "e2e", _load("nlg"))
    payload = {"machine": machine(), "command": "python benchmarks/reproduce/memory_size.py", "rows": rows}
    md = ("# Memory and checkpoint size: LoRA (and BitFit) vs full fine-tuning\n\n"
          "Peak resident memory of each training process (model, optimizer state, activations, "
          "evaluation) and the size of what it saves, from the runs of nlu.py (minilm, seed 0 on SST-2) "
          "and nlg.py (smollm2). `memory_saving` = full FT peak / this peak; `size_ratio` = full model "
          "checkpoint / this checkpoint.\n\n"
          + markdown_table(rows, ["model", "data", "method", "trainable_params", "peak_memory_mb",
                                  "full_peak_memory_mb", "memory_saving", "saved_bytes", "full_model_bytes",
                                  "size_ratio", "saved_as"]))
    for path in write_results("memory_size", payload, md):
        print("wrote", path)


if __name__ == "__main__":
    main()

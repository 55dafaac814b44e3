"""Memory and size (paper §4.2): peak training memory of LoRA vs full fine-tuning, adapter vs model checkpoint.

Claims tested: LoRA needs about 3x less training memory than full fine-tuning (paper: GPT-3 175B,
1.2 TB -> 350 GB of VRAM, mostly optimizer state) and its checkpoint is orders of magnitude smaller
(350 GB -> 35 MB). Two views:

1. The runs of nlu.py and nlg.py (each a fresh process, so its peak resident set is its own): per
   model and data set, every LoRA row against the full fine-tuning row trained the same way. On a CPU
   the resident set also holds the runtime, libraries, model and data, the same for all methods: a
   fresh process that loads them and stops before the first step is measured too.
2. The training state itself, measured in-process after one optimizer step (AdamW, batch 8 x 64 random
   tokens): bytes of the weights, of the gradients and of the optimizer's state tensors, for LoRA q,v
   r=8, LoRA all-linear r=8 and full fine-tuning on both models. This is what the paper's 3x is about.

About 2 minutes (the second part loads each model three times); the first part needs the tables.

    python -m benchmarks.reproduce.memory_size
"""

from __future__ import annotations

import json
import subprocess
import sys

from benchmarks.common import RESULTS, machine, markdown_table, write_results
from benchmarks.reproduce.sweep import RUNS, saved_bytes


def _load(name: str) -> list[dict]:
    path = RESULTS / f"{name}.json"
    if not path.is_file():
        raise SystemExit(f"{path} is missing: run benchmarks/reproduce/{name}.py first")
    return json.loads(path.read_text())["table"]


def _metrics(line: dict) -> dict:
    """The metrics.json of a table line's (first) run, under runs/reproduce/."""
    key = line["runs"][0]
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
        saved = saved_bytes(m)
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


def training_state(model_name: str, method: str) -> dict:
    """Bytes of weights, gradients and AdamW state after one training step of ``method`` on ``model_name``."""
    import torch

    import lorakit
    from lorakit.models import load_model

    task = "classify" if model_name == "minilm" else "generate"
    loaded = load_model(model_name, task, num_labels=2 if task == "classify" else None)
    model = loaded.model.train()
    heads = ("classifier",) if task == "classify" else ()
    if method == "full":
        for p in model.parameters():
            p.requires_grad = True
    else:
        targets = method.removeprefix("lora-").removesuffix("-r8")
        lorakit.inject(model, lorakit.LoraSpec(r=8, alpha=16, targets=(targets,), modules_to_save=heads))
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-5)
    ids = torch.randint(0, model.config.vocab_size, (8, 64), generator=torch.Generator().manual_seed(0))
    out = model(input_ids=ids, labels=torch.zeros(8, dtype=torch.long) if task == "classify" else ids)
    out.loss.backward()
    optimizer.step()

    def nbytes(tensors) -> int:
        seen, total = set(), 0
        for t in tensors:
            if t is not None and t.data_ptr() not in seen:  # tied weights count once
                seen.add(t.data_ptr())
                total += t.numel() * t.element_size()
        return total

    state = [t for s in optimizer.state.values() for t in s.values() if torch.is_tensor(t) and t.dim() > 0]
    weights, grads, moments = nbytes(model.parameters()), nbytes(p.grad for p in params), nbytes(state)
    return {"model": model_name, "method": method, "trainable_params": sum(p.numel() for p in params),
            "weights_mb": weights / 2**20, "grads_mb": grads / 2**20, "optimizer_mb": moments / 2**20,
            "total_mb": (weights + grads + moments) / 2**20}


BASELINE_CODE = """
import sys
import lorakit.train.runner, lorakit.train.evaluate
from lorakit.data import load_dataset
from lorakit.models import load_model
name, data, task = sys.argv[1:4]
load_model(name, task, num_labels=2 if task == "classify" else None)
load_dataset(data, "train", None, seed=0)
# VmHWM, not ru_maxrss: Linux carries ru_maxrss over fork + exec, so a child of a big parent would
# report the parent's size.
hwm = next(line for line in open("/proc/self/status") if line.startswith("VmHWM:"))
print(int(hwm.split()[1]) / 1024)
"""


def runtime_baseline_mb(model_name: str) -> float:
    """Peak RSS (MiB) of a fresh process that imports lorakit's trainer, loads the model and reads the data.

    What every training process holds before its first step; the rest of its peak is training.
    """
    data, task = ("sst2", "classify") if model_name == "minilm" else ("e2e", "generate")
    out = subprocess.run([sys.executable, "-c", BASELINE_CODE, model_name, data, task], check=True,
                         capture_output=True, text=True)
    return float(out.stdout.strip().splitlines()[-1])


def main() -> None:
    """Read nlu.json and nlg.json, measure the training state, write results/memory_size.{json,md}."""
    state = [training_state(m, method) for m in ("minilm", "smollm2")
             for method in ("lora-qv-r8", "lora-all-linear-r8", "full")]
    baselines = {m: runtime_baseline_mb(m) for m in ("minilm", "smollm2")}
    print("runtime + model + data, before training (MiB):", baselines)
    for line in state:
        line["process_before_training_mb"] = baselines[line["model"]]
        full = next(s for s in state if s["model"] == line["model"] and s["method"] == "full")
        line["saving_vs_full"] = full["total_mb"] / line["total_mb"]
        print(f"{line['model']:8s} {line['method']:20s} {line['total_mb']:9.1f} MiB  x{line['saving_vs_full']:.2f}")
    rows = []
    nlu = _load("nlu")
    for data in dict.fromkeys(line["data"] for line in nlu):
        rows += compare("minilm", data, [line for line in nlu if line["data"] == data])
    rows += compare("smollm2", "e2e", _load("nlg"))
    payload = {"machine": machine(),  "rows": rows,
               "training_state": state, "process_before_training_mb": baselines}
    md = ("# Memory and checkpoint size: LoRA (and BitFit) vs full fine-tuning\n\n"
          "## Training state (weights + gradients + AdamW state, fp32, after one step)\n\n"
          + markdown_table(state, ["model", "method", "trainable_params", "weights_mb", "grads_mb", "optimizer_mb",
                                   "total_mb", "saving_vs_full"])
          + "\n`process_before_training_mb`: peak RSS of a fresh process that imports the trainer, loads the model "
          f"and reads the data, before any step: minilm {baselines['minilm']:.0f} MiB, smollm2 "
          f"{baselines['smollm2']:.0f} MiB.\n"
          + "\n## Whole training processes (peak resident memory) and saved files\n\n"
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

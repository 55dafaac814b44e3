"""Publish the best LoRA adapters trained by nlu.py and nlg.py under adapters/, PEFT layout, with a card each.

As the paper's authors released their adapters, this copies the best LoRA run per data set (highest
test accuracy on minilm; highest BLEU on smollm2 among adapters under 2 MB) to
``adapters/<model>/<data>/`` (adapter_config.json + adapter_model.safetensors), re-evaluates the copy
with ``lorakit eval`` exactly as the card tells a reader to, and writes the card (README.md: data,
training command, metrics, size) beside the files. The re-evaluation must reproduce the training run's
own figure; a mismatch is reported and stops the script.

Time: about 30 s per minilm adapter and 10 minutes for the E2E one (all 630 test MRs generated).

    python -m benchmarks.reproduce.publish [--only smollm2/e2e] [--eval-limit N]
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from pathlib import Path

from benchmarks.common import RESULTS
from benchmarks.reproduce.sweep import REPO, RUNS, main_metric

ADAPTERS = REPO / "adapters"
MAX_BYTES = 2 * 2**20  # "well under 2 MB": larger adapters (all-linear on smollm2) are not published
FILES = ("adapter_config.json", "adapter_model.safetensors")
DATA_NOTES = {
    "sst2": "SST-2 (Socher et al. 2013, split of Kim 2014): train 6,920 sentences; test 1,821",
    "trec": "TREC question type (Li and Roth 2002): train 5,452 minus a seeded 10% dev; test 500",
    "subj": "SUBJ (Pang and Lee 2004): seeded 80/10/10 split of 10,000 sentences; label 0 = subjective",
    "mr": "MR movie-review polarity (Pang and Lee 2005): seeded 80/10/10 split of 10,662 sentences",
    "e2e": "E2E NLG (Novikova et al. 2017, CC BY-SA 4.0): trained on devset.csv minus a seeded 10% of its "
           "MRs; scored on the first test MRs of testset_w_refs.csv with all references",
}


# The tables whose LoRA runs may be published: the 40-step tables and the searches at a real budget
# (nlg.py --name nlg_epoch / nlg_search / nlg_search_e3 ...), each results/<name>.json.
TABLES = (("nlu", "minilm"), ("nlg", "smollm2"))


def candidates() -> list[tuple[str, str, str, dict]]:
    """(model, data, run key, metrics) of every LoRA run of the NLU and NLG tables whose run folder is here.

    Every ``results/nlu*.json`` and ``results/nlg*.json`` is read; a line carried from an earlier machine
    (its run folder gone, see nlg.py's ``earlier_lines``) cannot be published and is skipped. The
    metrics get the run's training command (from the table) under ``"command"``.
    """
    out = []
    for prefix, model in TABLES:
        paths = sorted(RESULTS.glob(f"{prefix}*.json"))
        if not paths:
            raise SystemExit(f"no results/{prefix}*.json: run benchmarks/reproduce/{prefix}.py first")
        for path in paths:
            for line in json.loads(path.read_text()).get("table", []):
                if not line["method"].startswith("lora"):
                    continue
                for key, command in zip(line["runs"], line["commands"], strict=True):
                    if (RUNS / key / "metrics.json").is_file():
                        metrics = json.loads((RUNS / key / "metrics.json").read_text())
                        out.append((model, metrics["data"], key, {**metrics, "command": command}))
    return out


def best_runs() -> dict[tuple[str, str], tuple[str, dict]]:
    """(model, data) -> the best publishable run."""
    best: dict[tuple[str, str], tuple[str, dict]] = {}
    for model, data, key, metrics in candidates():
        if metrics["adapter_bytes"] > MAX_BYTES:
            continue
        if (model, data) not in best or main_metric(metrics) > main_metric(best[(model, data)][1]):
            best[(model, data)] = (key, metrics)
    return best


def eval_args(model: str, data: str, folder: Path, cfg: dict, eval_limit: int | None) -> list[str]:
    """The ``lorakit eval`` arguments that reproduce the training run's report on the copied adapter.

    ``eval_limit`` None scores every test MR (the training run must have scored them all too).
    """
    rel = folder.relative_to(REPO)
    # The base precision the run trained and reported in (its train_config.json), pinned: "auto" differs by machine.
    args = [model, data, "--adapter", str(rel), "--split", cfg["test_split"], "--base-dtype", cfg["base_dtype"]]
    if cfg["task"] == "classify":
        return args + ["--max-length", str(cfg["max_length"])]
    limit = ["--limit", str(eval_limit)] if eval_limit else []
    return args + [*limit, "--batch-size", str(cfg["eval_batch_size"]), "--max-new-tokens", str(cfg["max_new_tokens"])]


def card(model: str, data: str, key: str, metrics: dict, command: str, reproduced: dict) -> str:
    """The adapter's README.md."""
    cfg = metrics["config"]
    scores = "\n".join(f"| {k} | {v:.4f} |" for k, v in reproduced.items() if isinstance(v, float))
    targets = ", ".join(cfg["targets"])
    lines = [
        f"# {model} + LoRA on {data}",
        "",
        f"LoRA adapter for lorakit's embedded `{model}` model, in PEFT's layout "
        f"(`adapter_config.json` + `adapter_model.safetensors`, {metrics['adapter_bytes']:,} bytes).",
        "",
        f"- **Data**: {DATA_NOTES.get(data, data)}.",
        f"- **Adapter**: targets {targets}, rank {cfg['rank']}, alpha {cfg['alpha']:g}, dropout {cfg['dropout']:g}; "
        f"{metrics['lora_params']:,} LoRA parameters, {metrics['trainable_params']:,} trainable with the head "
        f"({metrics['trainable_percent']:.3f}% of {metrics['total_params']:,}).",
        f"- **Training**: {metrics['step']} steps of batch {cfg['batch_size']}, lr {cfg['lr']:g} ({cfg['decay']} decay, "
        f"{cfg['warmup_ratio']:.0%} warm-up), max length {cfg['max_length']}, seed {cfg['seed']}; "
        f"{metrics['train_seconds'] / 60:.1f} min on {cfg.get('threads') or 1} CPU thread(s) of a 2-core machine.",
        "",
        "Trained with (benchmarks/reproduce, run `" + key + "`):",
        "",
        "    " + metrics["command"],
        "",
        f"## Metrics on {cfg['test_split']}",
        "",
        "Reproduce from a fresh checkout (after `scripts/install.sh`):",
        "",
        "    .venv/bin/lorakit eval " + command,
        "",
        "| metric | value |",
        "|---|---|",
        scores,
        "",
    ]
    return "\n".join(lines)


INDEX_HEAD = """# Published adapters

LoRA adapters trained by lorakit's reproduction scripts (`benchmarks/reproduce/`) on the real data sets,
in PEFT's layout, one folder each with a card (`README.md`: data, training command, metrics). They are
written by `python -m benchmarks.reproduce.publish`, which re-evaluates every copy with the command its
card shows. From a fresh checkout, after `scripts/install.sh`:

    .venv/bin/lorakit eval minilm sst2 --adapter adapters/minilm/sst2 --split test --max-length 64 --base-dtype fp32
    .venv/bin/lorakit serve smollm2 --adapters adapters/smollm2      # then ask for model "e2e"

| adapter | base | targets | rank | score (test) | size | trained with |
|---|---|---|---|---|---|---|
"""


def write_index(published: list[tuple[str, str, str, dict]]) -> None:
    """adapters/README.md: one line per published adapter."""
    lines = []
    for model, data, key, metrics in published:
        cfg, test = metrics["config"], metrics["test"]
        figure = f"accuracy {100 * test['accuracy']:.2f}%" if "accuracy" in test else f"BLEU {test['bleu']:.2f}"
        lines.append(f"| [{model}/{data}]({model}/{data}/README.md) | {model} | {', '.join(cfg['targets'])} | "
                     f"{cfg['rank']} | {figure} | {metrics['adapter_bytes'] / 1e6:.2f} MB | `{key}` |")
    (ADAPTERS / "README.md").write_text(INDEX_HEAD + "\n".join(lines) + "\n", encoding="utf-8")


def publish(model: str, data: str, key: str, metrics: dict, eval_limit: int | None) -> None:
    """Copy, re-evaluate and write the card of one adapter."""
    folder = ADAPTERS / model / data
    folder.mkdir(parents=True, exist_ok=True)
    for name in FILES:
        shutil.copyfile(RUNS / key / "adapter" / name, folder / name)
    args = eval_args(model, data, folder, metrics["config"], eval_limit)
    out = RUNS / key / "publish_eval.json"
    print(f"$ lorakit eval {' '.join(args)}", flush=True)
    subprocess.run([sys.executable, "-m", "lorakit", "eval", *args, "--json", str(out), "--no-progress"],
                   check=True, cwd=REPO)
    reproduced = json.loads(out.read_text())["metrics"]
    trained = metrics["test"]
    for name, value in trained.items():
        if isinstance(value, float) and abs(reproduced.get(name, float("nan")) - value) > 1e-6:
            raise SystemExit(f"{model}/{data}: lorakit eval gives {name} {reproduced.get(name)} but the "
                             f"training run reported {value}")
    (folder / "README.md").write_text(card(model, data, key, metrics, " ".join(args), reproduced), encoding="utf-8")
    print(f"published {folder.relative_to(REPO)} ({key}: {main_metric(metrics):.2f})", flush=True)


def main() -> None:
    """Publish every best run."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--eval-limit", type=int, default=None,
                        help="test MRs of the E2E re-evaluation (default: all 630, as the card's command)")
    parser.add_argument("--only", default="", help="comma-separated model/data pairs to publish (default: all)")
    args = parser.parse_args()
    wanted = set(filter(None, args.only.split(",")))
    best = sorted(best_runs().items())
    for (model, data), (key, metrics) in best:
        if not wanted or f"{model}/{data}" in wanted:
            publish(model, data, key, metrics, args.eval_limit)
    write_index([(model, data, key, metrics) for (model, data), (key, metrics) in best
                 if (ADAPTERS / model / data / "README.md").is_file()])


if __name__ == "__main__":
    main()

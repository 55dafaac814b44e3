"""Are the generation defaults good ones? `lorakit train smollm2 DIR` as a new user runs it vs a search on DIR.

DIR is a prompt/completion JSONL folder that no lorakit recipe reads: data-to-text in another surface
form than the ``e2e`` recipe's (attributes as ``key: value`` lines under an instruction of its own),
a seeded ~40% of the E2E training MRs (about 1,700 (prompt, completion) rows, as a user's few thousand
would be) in ``train.jsonl`` and every test MR with all its references in ``test.jsonl``; lorakit holds
out its own dev split. The ``defaults`` row passes nothing but the pinned base precision and threads;
the search rows move the rate and the epochs around it, and the old defaults (lr 2e-4 at batch 32,
2 epochs) are a row too; they skip the base model's evaluation, which the defaults row reports once.
The issue's target: the defaults within 1 BLEU of the best searched row.

    python -m benchmarks.reproduce.defaults [--rows defaults,e2,...] [--threads 2]

Each row is one ``lorakit train`` process, cached under runs/reproduce/ (see sweep.py);
results/<name>.{json,md} are rewritten after each row.
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

from benchmarks.common import machine, markdown_table, provenance_line, write_results
from benchmarks.reproduce.nlg import METRICS
from benchmarks.reproduce.sweep import RUNS, Row, run_row, test_metrics
from lorakit.data import GenerationExample, load_dataset
from lorakit.data.recipes import E2E_PROMPT_PREFIX

FOLDER = RUNS / "defaults-data"
TRAIN_MR_FRACTION = 0.4
# name -> the CLI arguments of the searched knobs; "defaults" passes none. Each row's label and run folder
# come from the recipe lorakit resolves for it (lr, batch, epochs), so a change of default re-runs the
# defaults row instead of reading a run of the old ones. Around the defaults: one knob each way.
SEARCH: dict[str, tuple[str, ...]] = {
    "defaults": (),
    "e2": ("--epochs", "2"),
    "lr2e-3": ("--lr", "2e-3"),
    "lr2e-3-e2": ("--lr", "2e-3", "--epochs", "2"),
    "lr5e-4-e2": ("--lr", "5e-4", "--epochs", "2"),
    "old-defaults": ("--lr", "2e-4", "--batch-size", "32", "--epochs", "2"),  # before issue 22
    "e4": ("--epochs", "4"),  # last: the longest row
}
KNOBS = ("lr", "batch_size", "epochs")


def recipe(args: tuple[str, ...], folder: Path) -> dict[str, float]:
    """The searched knobs as ``lorakit train smollm2 FOLDER *args`` resolves them (defaults filled in)."""
    from lorakit.cli.main import build_parser
    from lorakit.cli.train import config_from_args

    cfg = config_from_args(build_parser().parse_args(["train", "smollm2", str(folder), *args]))
    resolved = cfg.resolve("generate", "smollm2", folder.name)
    return {k: getattr(resolved, k) for k in KNOBS}


def rate(lr: float) -> str:
    """``0.001`` -> ``1e-3``, as the CLI's help spells rates."""
    mantissa, exponent = f"{lr:.0e}".split("e")
    return f"{mantissa}e{int(exponent)}"


def setting(name: str, knobs: dict[str, float]) -> str:
    """A row's label: ``lr 1e-3, batch 8, 3 epochs`` (plus ``the defaults:`` / ``the old defaults:``)."""
    text = f"lr {rate(knobs['lr'])}, batch {knobs['batch_size']}, {knobs['epochs']:g} epochs"
    return {"defaults": f"the defaults: {text}", "old-defaults": f"the old defaults: {text}"}.get(name, text)

def prompt(mr: str) -> str:
    """``name[The Eagle], food[Italian]`` -> an instruction over ``key: value`` lines (not the e2e recipe's form)."""
    facts = [part.strip().rstrip("]").split("[", 1) for part in mr.split("],")]
    lines = "".join(f"- {key.strip()}: {value.strip()}\n" for key, value in facts)
    return f"Facts about a place to eat:\n{lines}Write one sentence a guide book could print about it."


def records(examples: list[GenerationExample]) -> list[dict]:
    """JSONL records of examples read through the e2e recipe, their prompts rewritten by :func:`prompt`."""
    return [{"prompt": prompt(e.prompt.removeprefix(E2E_PROMPT_PREFIX)), "completion": e.completion,
             "references": list(e.references)} for e in examples]


def write_folder(folder: Path = FOLDER, data_root: str | None = None, seed: int = 0) -> dict[str, int]:
    """Write ``folder/{train,test}.jsonl`` (see the module's docstring); returns the rows per file."""
    train = load_dataset("e2e", "train", data_root, seed=seed).examples
    mrs = sorted({e.prompt for e in train})
    kept = set(random.Random(seed).sample(mrs, round(TRAIN_MR_FRACTION * len(mrs))))
    # Training rows are (MR, reference) pairs; a user's file has no grouping, so references are left out.
    rows = {"train": [{k: v for k, v in r.items() if k != "references"}
                      for r in records([e for e in train if e.prompt in kept])],
            "test": records(load_dataset("e2e", "test", data_root).examples)}
    folder.mkdir(parents=True, exist_ok=True)
    for split, lines in rows.items():
        (folder / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines), encoding="utf-8")
    return {split: len(lines) for split, lines in rows.items()}


def search_rows(names: list[str], folder: Path, threads: int) -> list[Row]:
    """One ``lorakit train smollm2 FOLDER`` row per name; the precision and threads are pinned in all."""
    rows = []
    for name in names:
        knobs = recipe(SEARCH[name], folder)
        slug = f"lr{rate(knobs['lr'])}-b{knobs['batch_size']}-e{knobs['epochs']:g}"
        # Only the defaults row scores the base model first: the same number for every row, 2 minutes each.
        args = ("smollm2", str(folder), *SEARCH[name], *(() if name == "defaults" else ("--no-base-eval",)),
                "--base-dtype", "bf16", "--threads", str(threads))
        # The folder is the recipe; the defaults row (which also scores the base) is the one "as a user runs it".
        key = f"defaults-{'user-' if name == 'defaults' else ''}{slug}"
        rows.append(Row(key, args, {"setting": setting(name, knobs), "name": name, **knobs}))
    return rows


def check_recipe(row: Row, result: dict) -> None:
    """Refuse a cached run whose recorded recipe is not the one the row's command resolves to now."""
    ran = {k: result["config"][k] for k in KNOBS}
    if ran != {k: row.labels[k] for k in KNOBS}:
        raise SystemExit(f"{row.out} was trained with {ran}, not the row's {row.labels}: move it away and re-run")

def line(row: Row, result: dict) -> dict:
    """One table line: the setting, its schedule as run, test and base scores, time."""
    cfg, scores = result["config"], test_metrics(result)
    out = {"setting": row.labels["setting"], "lr": cfg["lr"], "batch_size": cfg["batch_size"],
           "epochs": cfg["epochs"], "steps": result["step"], **{m: scores.get(m) for m in METRICS},
           "train_minutes": result["train_seconds"] / 60, "command": row.command}
    if row.labels["name"] == "defaults":  # only this row scores the base (the others pass --no-base-eval)
        out["base_bleu"] = (result.get("base") or {}).get("bleu")
    return out


def markdown(info: dict, sizes: dict[str, int], table: list[dict], total: int) -> str:
    """The results page: provenance, the folder, the table, and the defaults' gap to the best row."""
    text = (f"# The generation defaults vs a search, on a prompt/completion folder no recipe reads\n\n"
            f"{provenance_line(info)}\n\n{len(table)}/{total} rows finished. Folder: {sizes['train']:,} train rows "
            f"(lorakit holds out 10% as dev), {sizes['test']:,} test prompts with all references (E2E MRs "
            f"rewritten as `key: value` facts; see benchmarks/reproduce/defaults.py). Greedy decoding. Each row's "
            f"run folder is named by the recipe lorakit resolved for it (lr, batch, epochs), checked against the "
            f"run's own train_config.json before it is read.\n\n"
            + markdown_table(table, ["setting", "lr", "batch_size", "epochs", "steps", *METRICS, "train_minutes"]))
    default = [t for t in table if t["setting"].startswith("the defaults:")]
    if default and default[0].get("base_bleu") is not None:
        text += f"\nThe base model without an adapter (scored by the defaults row): {default[0]['base_bleu']:.2f} BLEU.\n"
    if default and len(table) > 1:
        best = max(table, key=lambda t: t["bleu"])
        text += (f"\nDefaults: {default[0]['bleu']:.2f} BLEU; best row ({best['setting']}): {best['bleu']:.2f}; "
                 f"gap {best['bleu'] - default[0]['bleu']:.2f} (target: at most 1).\n")
    return text + "\nCommands:\n\n" + "".join(f"    {t['command']}\n" for t in table)


def main() -> None:
    """Write the folder, run (or read) every row, and write results/<name>.{json,md} after each."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", default=",".join(SEARCH), help=f"subset of {', '.join(SEARCH)} (in this order)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--timeout", type=float, default=None, help="seconds per row before it is left resumable")
    parser.add_argument("--name", default="defaults_unseen", help="results/<name>.{json,md}")
    args = parser.parse_args()
    names = args.rows.split(",")
    if unknown := [n for n in names if n not in SEARCH]:
        parser.error(f"unknown rows {unknown}; choose from {', '.join(SEARCH)}")
    sizes = write_folder()
    table: list[dict] = []
    for row in search_rows(names, FOLDER, args.threads):
        if (result := run_row(row, args.timeout)) is None:
            continue
        check_recipe(row, result)
        table.append(line(row, result))
        info = machine()
        for path in write_results(args.name, {"machine": info, "folder_rows": sizes, "table": table},
                                  markdown(info, sizes, table, len(names))):
            print("wrote", path)


if __name__ == "__main__":
    main()

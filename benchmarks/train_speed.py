"""Training speed and memory: lorakit LoRA (fp32 / bf16 / checkpointed / nf4) vs PEFT vs full fine-tuning.

Each measurement is a fresh Python process that loads the model, builds AdamW over the trainable
parameters, runs ``--warmup`` untimed steps and ``--steps`` timed steps on fixed-shape batches, and
reports tokens per second and its own peak memory the way ``lorakit train`` does: lorakit's
``PeakMemory`` over a ``load`` and a ``train`` phase (on Linux each phase's ``VmHWM``, a per-process
high-water mark), the peak being the larger. Model loading is part of the peak, as it is for a user.

Methods (all LoRA ones: rank 8, alpha 16, dropout 0, the same targets; minilm also trains its head):

- ``lorakit-fp32`` / ``lorakit-bf16``: ``lorakit.train``'s own path (``make_trainable`` + ``summed_loss``,
  i.e. the chunked causal-LM loss) with ``base_dtype`` fp32 / bf16;
  ``lorakit-bf16-ckpt`` / ``lorakit-nf4-ckpt`` / ``lorakit-int8-ckpt`` add ``checkpointing``.
- ``peft-fp32``: PEFT's default (fp32 model, the model's own loss); ``peft-bf16``: PEFT over the base
  loaded in bf16 (``torch_dtype=bfloat16``, the usual recipe); ``peft-bf16-ckpt`` adds transformers'
  gradient checkpointing; ``peft-autocast``: the fp32 model under ``torch.autocast(bf16)`` (kept as a
  second bf16 row; ``peft-autocast-ckpt`` with checkpointing); ``peft-qlora``: transformers +
  bitsandbytes nf4 (bf16 compute), ``prepare_model_for_kbit_training`` with gradient checkpointing,
  then PEFT (the QLoRA recipe).
- ``full-fp32``: full fine-tuning, fp32, the model's own loss.

PEFT and full fine-tuning run with ``use_cache=False`` (no KV cache is kept while training, as their
training recipes set). Repetitions run round-robin over the configurations (A B C A B C …) so that
load from other processes on a shared machine hits them alike; the report gives medians, and for
peak memory the min–max over the repetitions (memory ratios want ``--reps`` ≥ 3).

    python -m benchmarks.train_speed                       # writes benchmarks/results/train_speed.{json,md}
    python -m benchmarks.train_speed --models smollm2 --methods lorakit-bf16 peft-fp32 --reps 3 --steps 10
    python -m benchmarks.train_speed --configs smollm2/lorakit-bf16 --reps 1 --steps 1 --warmup 0 --shape smollm2=1x16

PEFT is imported here only, never by lorakit. ``benchmarks.train_scaling`` reuses :func:`worker`.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

from benchmarks.common import REPO, RESULTS, machine, provenance_line, spread, write_results
from benchmarks.llama_sizes import checkpoint, default_cache

METHODS = ("lorakit-fp32", "lorakit-bf16", "lorakit-bf16-ckpt", "lorakit-nf4-ckpt", "peft-fp32", "peft-bf16",
           "peft-autocast", "peft-bf16-ckpt", "peft-qlora", "full-fp32")
EXTRA_METHODS = ("lorakit-int8-ckpt", "lorakit-fp32-ckpt", "peft-autocast-ckpt")
# model -> (task, batch size, sequence length)
SHAPES = {"minilm": ("classify", 32, 64), "smollm2": ("generate", 8, 128)}
# lorakit target preset -> module names PEFT is given, per model family
PEFT_TARGETS = {("minilm", "qv"): ["query", "value"], ("minilm", "all-linear"): "all-linear",
                ("llama", "qv"): ["q_proj", "v_proj"], ("llama", "all-linear"): "all-linear"}
RANK, ALPHA, LR = 8, 16.0, 1e-4


def _method_parts(method: str) -> tuple[str, str | None, bool]:
    """("lorakit"|"peft"|"full", base dtype or variant, checkpointing)."""
    parts = method.split("-")
    return parts[0], parts[1] if len(parts) > 1 else None, parts[-1] == "ckpt"


def build_model(model_name: str, task: str, dtype, quantize_peft: bool = False, cache: Path | None = None):
    """An embedded model (by name) or a size of ``llama_sizes.LLAMA_SIZES``, loaded from disk as a user would."""
    import torch

    from lorakit.models import load_model, resolve_model_path

    path = resolve_model_path(model_name) if model_name in SHAPES else checkpoint(model_name, cache)
    if quantize_peft:
        from transformers import AutoModelForCausalLM, BitsAndBytesConfig

        q = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=torch.bfloat16)
        return AutoModelForCausalLM.from_pretrained(path, quantization_config=q, dtype=torch.bfloat16,
                                                    device_map="cpu")
    return load_model(path, task, num_labels=2 if task == "classify" else None, dtype=dtype).model


def worker(model_name: str, method: str, warmup: int, steps: int, threads: int, batch: int, length: int,
           targets: str = "qv", cache: Path | None = None) -> dict:
    """One configuration in this (fresh) process: returns tokens/s and peak memory (max over phases)."""
    import torch

    from lorakit.train.outputs import PeakMemory

    torch.set_num_threads(threads)
    memory = PeakMemory()
    memory.phase("load")
    kind, variant, ckpt = _method_parts(method)
    task = SHAPES[model_name][0] if model_name in SHAPES else "generate"
    torch.manual_seed(0)
    autocast = kind == "peft" and variant == "autocast"
    if kind == "lorakit":
        from lorakit.models.precision import load_dtype
        from lorakit.train.config import TrainConfig
        from lorakit.train.objectives import loss_terms, summed_loss
        from lorakit.train.runner import make_trainable

        cfg = TrainConfig(task=task, rank=RANK, alpha=ALPHA, dropout=0.0, targets=(targets,), base_dtype=variant,
                          checkpointing=ckpt)
        model = build_model(model_name, task, load_dtype(variant, torch.device("cpu")), cache=cache)
        make_trainable(model, cfg)
    else:
        dtype = torch.bfloat16 if variant == "bf16" else torch.float32  # peft-bf16: the base loaded in bf16
        model = build_model(model_name, task, dtype, quantize_peft=variant == "qlora", cache=cache)
        model.config.use_cache = False  # training keeps no KV cache (the PEFT / Trainer recipes set this)
        if kind == "peft":
            from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training

            family = "minilm" if task == "classify" else "llama"
            if variant == "qlora":
                model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=True,
                                                        gradient_checkpointing_kwargs={"use_reentrant": False})
            elif ckpt:
                model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
            config = LoraConfig(r=RANK, lora_alpha=ALPHA, lora_dropout=0.0, target_modules=PEFT_TARGETS[family, targets],
                                modules_to_save=["classifier"] if task == "classify" else None)
            model = get_peft_model(model, config)
        else:
            for p in model.parameters():
                p.requires_grad = True
            if ckpt:
                model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=LR)
    gen = torch.Generator().manual_seed(0)
    vocab = model.config.vocab_size
    ids = torch.randint(min(1000, vocab // 2), min(20000, vocab), (batch, length), generator=gen)
    mask = torch.ones_like(ids)
    labels = torch.randint(0, 2, (batch,), generator=gen) if task == "classify" else ids.clone()
    batch_dict = {"input_ids": ids, "attention_mask": mask, "labels": labels}
    model.train()
    memory.phase("train")

    def step() -> float:
        if kind == "lorakit":
            loss = summed_loss(task, model, batch_dict) / loss_terms(task, batch_dict)
        else:
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
                loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return float(loss)

    for _ in range(warmup):
        step()
    started = time.perf_counter()
    losses = [step() for _ in range(steps)]
    seconds = time.perf_counter() - started
    peak = memory.overall()
    return {
        "model": model_name, "method": method, "targets": targets, "batch": batch, "length": length,
        "tokens_per_s": batch * length * steps / seconds, "seconds_per_step": seconds / steps,
        "peak_memory_mb": peak, "peak_memory_phases_mb": memory.peaks, "trainable_params": sum(p.numel() for p in trainable),
        "total_params": sum(p.numel() for p in model.parameters()), "last_loss": losses[-1] if losses else None,
    }


def spawn(model: str, method: str, args: argparse.Namespace, batch: int, length: int,
          module: str = "benchmarks.train_speed") -> dict:
    """Run :func:`worker` in a fresh process (``python -m MODULE --worker ...``, its own peaks); its result."""
    cmd = [sys.executable, "-m", module, "--worker", model, method, str(batch), str(length), "--warmup",
           str(args.warmup), "--steps", str(args.steps), "--threads", str(args.threads), "--targets", args.targets,
           "--cache", str(args.cache)]
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "TOKENIZERS_PARALLELISM": "false"}
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=args.timeout, cwd=REPO)
    if done.returncode != 0:
        return {"model": model, "method": method, "error": done.stderr.strip().splitlines()[-1:] or ["?"]}
    return json.loads(done.stdout.strip().splitlines()[-1])


def summarise(runs: list[dict]) -> list[dict]:
    """Medians per (model, method) and the ratios the targets are stated in."""
    rows = []
    for model in dict.fromkeys(r["model"] for r in runs):
        med = {}
        for method in dict.fromkeys(r["method"] for r in runs if r["model"] == model):
            mine = [r for r in runs if r["model"] == model and r["method"] == method and "error" not in r]
            if not mine:
                rows.append({"model": model, "method": method, "error": next(
                    r["error"] for r in runs if r["model"] == model and r["method"] == method)})
                continue
            peaks = spread([r["peak_memory_mb"] for r in mine])
            med[method] = {
                "tokens_per_s": statistics.median(r["tokens_per_s"] for r in mine),
                "peak_memory_mb": peaks["median"], "peak_memory_mb_min": peaks["min"],
                "peak_memory_mb_max": peaks["max"],
                "trainable_params": mine[0]["trainable_params"], "reps": len(mine),
                "batch": mine[0]["batch"], "length": mine[0]["length"],
                "tokens_per_s_all": [round(r["tokens_per_s"], 1) for r in mine],
                "peak_memory_mb_all": [round(r["peak_memory_mb"]) for r in mine],
            }
        for method, m in med.items():
            row = {"model": model, "method": method, **m}
            for ref, key in (("peft-fp32", "speed_vs_peft_fp32"), ("peft-bf16", "speed_vs_peft_bf16")):
                if ref in med and method != ref:
                    row[key] = m["tokens_per_s"] / med[ref]["tokens_per_s"]
            for ref, key in (("peft-fp32", "memory_vs_peft_fp32"), ("full-fp32", "memory_vs_full")):
                if ref in med and method != ref:
                    row[key] = m["peak_memory_mb"] / med[ref]["peak_memory_mb"]
            rows.append(row)
    return rows


RATIOS = ("speed_vs_peft_fp32", "speed_vs_peft_bf16", "memory_vs_peft_fp32", "memory_vs_full")


def markdown(rows: list[dict], args: argparse.Namespace, info: dict) -> str:
    """The results as a markdown table with the setup (and where it was measured) above it."""
    few = " (fewer than 3: the memory ratios are not settled)" if args.reps < 3 else ""
    lines = [
        "# Training speed and memory: lorakit LoRA vs PEFT LoRA vs full fine-tuning", "",
        provenance_line(info), "",
        f"{args.threads} thread(s) per run; median of {args.reps} round-robin repetitions{few}, each a fresh "
        f"process: {args.warmup} warm-up + {args.steps} timed steps; AdamW; LoRA r={RANK}, alpha={ALPHA:g}, "
        f"dropout 0, targets {args.targets} (+ head for minilm); peak memory = the run's own peak_memory_mb "
        "(lorakit's PeakMemory: the larger of the load and train phases' peaks), median (min–max).", "",
        f"Command: `{info['command']}`", "",
        "| model | batch×len | method | trainable params | tokens/s | peak memory (MiB) | speed vs PEFT fp32 "
        "| speed vs PEFT bf16 | memory vs PEFT fp32 | memory vs full FT |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['model']} | | {r['method']} | failed: {' '.join(r['error'])[:120]} | | | | | | |")
            continue
        ratio = [f"{r[k]:.2f}×" if k in r else "" for k in RATIOS]
        peak = f"{r['peak_memory_mb']:.0f} ({r['peak_memory_mb_min']:.0f}–{r['peak_memory_mb_max']:.0f})"
        lines.append(f"| {r['model']} | {r['batch']}×{r['length']} | {r['method']} | {r['trainable_params']:,} "
                     f"| {r['tokens_per_s']:.0f} | {peak} | {' | '.join(ratio)} |")
    return "\n".join(lines) + "\n"


def _parse_shapes(specs: list[str]) -> dict[str, tuple[int, int]]:
    shapes = {m: (b, n) for m, (_, b, n) in SHAPES.items()}
    for spec in specs:
        name, _, shape = spec.partition("=")
        batch, _, length = shape.partition("x")
        if name not in SHAPES or not batch.isdigit() or not length.isdigit():
            raise SystemExit(f"error: --shape wants MODEL=BxL with MODEL in {', '.join(SHAPES)}, got {spec!r}")
        shapes[name] = (int(batch), int(length))
    return shapes


def common_options(parser: argparse.ArgumentParser) -> None:
    """Options shared with ``benchmarks.train_scaling``."""
    parser.add_argument("--worker", nargs=4, metavar=("MODEL", "METHOD", "BATCH", "LENGTH"), help=argparse.SUPPRESS)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--threads", type=int, default=2, help="torch threads per worker")
    parser.add_argument("--targets", default="qv", choices=("qv", "all-linear"))
    parser.add_argument("--timeout", type=int, default=3600, help="seconds per measurement before it counts as failed")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--name", default=None, help="stem of the result files")
    parser.add_argument("--cache", type=Path, default=default_cache(),
                        help="where the scaling sizes' checkpoints are saved once (default: $LORAKIT_BENCH_CACHE, "
                             "else ~/.cache/lorakit/bench)")


def run_worker_if_asked(args: argparse.Namespace) -> bool:
    """In a worker process: measure, print one JSON line, and say so."""
    if not args.worker:
        return False
    model, method, batch, length = args.worker
    print(json.dumps(worker(model, method, args.warmup, args.steps, args.threads, int(batch), int(length),
                            args.targets, args.cache)))
    return True


def main() -> int:
    """Run every configuration round-robin and write JSON + markdown."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    common_options(parser)
    parser.add_argument("--models", nargs="+", default=list(SHAPES), choices=list(SHAPES))
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS + EXTRA_METHODS))
    parser.add_argument("--configs", nargs="+", default=None, metavar="MODEL/METHOD",
                        help="explicit configurations instead of --models × --methods")
    parser.add_argument("--shape", action="append", default=[], metavar="MODEL=BxL",
                        help="override a model's batch×length, e.g. smollm2=4x64")
    args = parser.parse_args()
    if run_worker_if_asked(args):
        return 0
    shapes = _parse_shapes(args.shape)
    configs = [tuple(c.split("/", 1)) for c in args.configs] if args.configs else [
        (m, k) for m in args.models for k in args.methods if not (m == "minilm" and k == "peft-qlora")]
    for model, method in configs:
        if model not in SHAPES or method not in METHODS + EXTRA_METHODS:
            raise SystemExit(f"error: unknown configuration {model}/{method}")
    info = machine()
    runs = []
    for rep in range(args.reps):
        for model, method in configs:
            result = spawn(model, method, args, *shapes[model])
            runs.append({**result, "rep": rep})
            shown = f"failed: {result['error']}" if "error" in result else (
                f"{result['tokens_per_s']:8.1f} tokens/s {result['peak_memory_mb']:7.0f} MiB")
            print(f"rep {rep} {model:8s} {method:18s} {shown}", flush=True)
            save(runs, args, shapes, info)  # after every measurement: an interrupted run keeps what it has
    print(markdown(summarise(runs), args, info))
    return 0


def save(runs: list[dict], args: argparse.Namespace, shapes: dict[str, tuple[int, int]], info: dict) -> None:
    """``NAME.json`` (provenance, setup, medians, every run) and ``NAME.md`` (the table) under ``--out``."""
    rows = summarise(runs)
    setup = {k: v for k, v in vars(args).items() if k in ("reps", "warmup", "steps", "threads", "targets")}
    setup["shapes"] = {m: {"batch": b, "length": n} for m, (b, n) in shapes.items()}
    write_results(args.name or "train_speed", {"machine": info, "setup": setup, "summary": rows, "runs": runs},
                  markdown(rows, args, info), out=args.out)


if __name__ == "__main__":
    raise SystemExit(main())

"""TrainConfig: every option of a training run, typed, frozen and validated once.

The CLI (``lorakit train``) and config files (TOML or YAML) are views of this dataclass: each field is
one option (``max_steps`` ↔ ``--max-steps`` ↔ ``max_steps = 100`` / ``max-steps: 100``), its help text
lives next to it, and an unknown key or option is an error that names it.

Options whose best value depends on the task or the method (``lr``, ``epochs``, ``batch_size``,
``max_length``, ``test_split``) default to ``None`` and are resolved by :meth:`TrainConfig.resolve` once the task is
known; the table is :data:`DEFAULT_LR` (documented in ``lorakit train --help``).
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, get_type_hints

from lorakit.core import LoraSpec
from lorakit.core.variants import INITS
from lorakit.data.examples import TASKS as DATA_TASKS
from lorakit.errors import LorakitError
from lorakit.models.precision import BASE_DTYPES

# (method, task) -> peak learning rate. LoRA on a small sentence encoder wants a high rate (its head
# starts from scratch and B from zero); full fine-tuning the usual 2e-5 (Devlin et al.); BitFit 1e-3.
# LoRA generation: 1e-3 at batch 8, the best of the E2E search (benchmarks/results/nlg_search*.md: q,v r=8,
# one epoch: 1e-3 57.4 BLEU, 2e-3 57.2, 3e-3 56.3; the earlier 2e-4 at batch 32 gave a user 4x fewer updates).
DEFAULT_LR: dict[tuple[str, str], float] = {
    ("lora", "classify"): 2e-3, ("lora", "generate"): 1e-3,
    ("full", "classify"): 2e-5, ("full", "generate"): 2e-5,
    ("bitfit", "classify"): 2e-3, ("bitfit", "generate"): 5e-4,
}
# task -> tokens kept per example: SST-2 sentences fit in 64 word pieces; E2E prompt + reference in 192.
DEFAULT_MAX_LENGTH = {"classify": 64, "generate": 192}
# task -> examples per optimizer step: generation data sets are a few thousand pairs (E2E: 4.2k), where batch
# 8 gives 530 updates an epoch; the E2E search ran at batch 8. Classification keeps the usual 32.
DEFAULT_BATCH_SIZE = {"classify": 32, "generate": 8}
# task -> passes over the training split. Generation keeps improving past two epochs (E2E q,v r=8 at 1e-3:
# 57.4 / 58.2 / 59.0 BLEU after 1 / 2 / 3 epochs; the unseen folder of benchmarks/reproduce/defaults.py:
# 58.3 after 2, 59.8 after 3), and the best dev checkpoint is kept, so a longer run does not end worse.
# Classification converges well within two.
DEFAULT_EPOCHS = {"classify": 2.0, "generate": 3.0}
# task -> split of the final report: GLUE-style dev accuracy for classification, E2E test for generation.
DEFAULT_TEST_SPLIT = {"classify": "dev", "generate": "test"}
LORA_INITS = tuple(INITS)  # the registered inits (lorakit.core registers the built-in ones on import)
TASKS = ("auto", *DATA_TASKS)
DEVICES = ("auto", "cpu", "cuda")
DECAYS = ("linear", "cosine", "constant")


def _opt(default: Any, help: str, **kw: Any) -> Any:
    """A field with its documentation: the help text is the field's comment and the CLI's help."""
    return field(default=default, metadata={"help": help, **kw})


@dataclass(frozen=True)
class TrainConfig:
    """One training run (LoRA, or the full / BitFit baselines), as the CLI and config files spell it."""

    # -- what to train --------------------------------------------------------------------------
    model: str | None = _opt(None, "model name (minilm, smollm2) or a local Hugging Face folder", positional=True)
    data: str | None = _opt(None, "data set: a recipe (sst2, trec, subj, mr, e2e) or a .jsonl/.csv file", positional=True)
    task: str = _opt("auto", "classify or generate; auto takes the data set's task", choices=TASKS)
    data_root: str | None = _opt(None, "folder holding the shared data sets (default: $LORAKIT_DATA or ../shared/data)")
    # -- your own data: splits, bad rows, columns, packing, early stopping, trackers (lorakit.data.split_plan)
    eval_data: str | None = _opt(None, "file of the dev split (picks the best checkpoint); default: the folder's dev file, else --eval-fraction of the training rows held out")
    test_data: str | None = _opt(None, "file of the final report's split (default: the folder's test file for generation, else the dev split)")
    eval_fraction: float = _opt(0.1, "fraction of the training rows held out as dev (seeded, never trained on) when no dev file is given")
    eval_on_train_rows: bool = _opt(False, "UNSAFE: without a dev file, evaluate on the training rows themselves (the metrics then measure memorisation)")
    skip_bad_rows: bool = _opt(False, "skip malformed or empty rows of data files (counted and reported with file:line) instead of stopping at the first")
    text_column: str | None = _opt(None, "column / JSON key of the input text (classification; default: text)")
    label_column: str | None = _opt(None, "column / JSON key of the label (classification; default: label)")
    prompt_column: str | None = _opt(None, "column / JSON key of the prompt (generation; default: prompt)")
    completion_column: str | None = _opt(None, "column / JSON key of the completion (generation; default: completion)")
    packing: bool = _opt(False, "generation: pack several examples into each row of --max-length tokens (attention and loss stay per example)")
    early_stopping_patience: int | None = _opt(None, "stop when N evaluations in a row did not improve the best one (the best adapter is kept)")
    report_to: tuple[str, ...] = _opt(("none",), "experiment trackers: tensorboard, mlflow (both write under OUT), or none")
    # -- the adapter ----------------------------------------------------------------------------
    targets: tuple[str, ...] = _opt(("qv",), "modules to adapt: presets qv/attention/ffn/all-linear, suffixes, re:REGEX")
    rank: int = _opt(8, "LoRA rank r", aliases=("-r",))
    # A fixed 16 (LoraSpec's default), not 2·rank: as in the paper, alpha stays put while r is varied.
    alpha: float = _opt(16.0, "LoRA alpha (the update is scaled by alpha / r; a fixed number, not tied to --rank)")
    dropout: float = _opt(0.05, "dropout on the LoRA path")
    # LoRA variants and per-module controls (lorakit.core.variants; one block, see variant_options()).
    dora: bool = _opt(False, "DoRA: a trained magnitude per output row times the normalised W0 + s·B·A (Liu et al. 2024)")
    rslora: bool = _opt(False, "rsLoRA: scale the update by alpha / sqrt(r) instead of alpha / r")
    init: str = _opt("kaiming", "initialisation: kaiming or gaussian (B = 0); pissa or olora (A, B from W0's SVD / QR, "
                     "saved as an ordinary LoRA of rank 2r relative to the original model)", choices=LORA_INITS)
    lora_plus_ratio: float | None = _opt(None, "LoRA+: B's learning rate is this many times A's (e.g. 16)")
    layers: str | None = _opt(None, "adapt only these layer indices, e.g. 0-5 or 0,2,4-7")
    rank_pattern: tuple[str, ...] = _opt((), "per-module ranks PATTERN=R (module suffix or re:REGEX), e.g. q_proj=16")
    alpha_pattern: tuple[str, ...] = _opt((), "per-module alphas PATTERN=ALPHA, e.g. v_proj=32")
    full: bool = _opt(False, "baseline: full fine-tuning of every weight (no adapter)")
    bitfit: bool = _opt(False, "baseline: train only the biases (plus the classification head)")
    # -- optimisation ---------------------------------------------------------------------------
    lr: float | None = _opt(None, "peak learning rate (default: classify 2e-3 LoRA/BitFit, 2e-5 full; generate 1e-3 LoRA, 2e-5 full)")
    weight_decay: float = _opt(0.01, "AdamW weight decay")
    label_smoothing: float = _opt(0.0, "mix each target with a uniform one over the vocabulary / classes by this "
                                  "much (the paper's E2E runs: 0.1); dev and test losses stay plain cross-entropy")
    warmup_ratio: float = _opt(0.06, "fraction of the steps spent warming the rate up linearly")
    decay: str = _opt("linear", "decay after warm-up: linear, cosine or constant", choices=DECAYS)
    epochs: float | None = _opt(None, "passes over the training split, fractions allowed (default: classify 2, "
                                "generate 3)")
    max_steps: int | None = _opt(None, "stop after this many optimizer steps (caps --epochs)")
    batch_size: int | None = _opt(None, "examples per optimizer step, over all processes and accumulation steps "
                                  "(default: classify 32, generate 8)")
    grad_accum: int = _opt(1, "split each batch into this many micro-batches (same math, less memory)")
    max_grad_norm: float = _opt(1.0, "clip the gradient norm to this (0 turns clipping off)")
    max_length: int | None = _opt(None, "tokens kept per example (default: classify 64, generate 192)")
    seed: int = _opt(0, "seed of initialisation, data order and dropout")
    group_by_length: bool = _opt(True, "batch examples of similar length together (less padding; order stays seeded)")
    pad_multiple: int = _opt(16, "pad each batch's length up to a multiple of this many tokens (never past "
                             "max_length): a few batch shapes instead of one per step keep the allocator from "
                             "fragmenting (lower peak memory); 1: pad to the longest example only")
    max_bad_steps: int = _opt(5, "abort after this many non-finite losses in a row (each one is skipped)")
    # -- evaluation -----------------------------------------------------------------------------
    eval_every: int | None = _opt(None, "evaluate (and keep the best adapter) every N steps; 0: at the end only (default: 4 times per run)")
    eval_split: str = _opt("dev", "split used to pick the best checkpoint during training")
    test_split: str | None = _opt(None, "split of the final report (default: classify dev, generate test)")
    eval_limit: int | None = _opt(None, "evaluate on the first N examples only (for generation: N MRs)")
    eval_batch_size: int = _opt(32, "batch size for evaluation and generation (sequences decoded at once, beams included)")
    base_eval: bool = _opt(True, "also evaluate the base model before training (the 'before' in metrics.json)")
    num_beams: int = _opt(1, "beam width for generation (1: greedy; the paper's E2E figures: 10)")
    length_penalty: float = _opt(1.0, "beam search: a beam's log-probability is divided by length ** this "
                                 "(smaller values favour shorter outputs; the paper: 0.9); unused when --num-beams is 1")
    no_repeat_ngram_size: int = _opt(0, "never repeat an n-gram of this many tokens within one output (copying "
                                     "the prompt's stays allowed, as in the paper's decoder), greedy or beam "
                                     "(0: off; the paper: 4)")
    max_new_tokens: int = _opt(64, "generation length cap")
    # -- run ------------------------------------------------------------------------------------
    out: str | None = _opt(None, "output folder (default: runs/MODEL-DATA[-full|-bitfit])")
    resume: bool = _opt(False, "continue from OUT/checkpoint exactly where it stopped")
    checkpoint_every: int | None = _opt(None, "write a resumable checkpoint every N steps (default: at each evaluation)")
    log_every: int = _opt(10, "write a log.jsonl line every N steps")
    device: str = _opt("auto", "auto (cuda when available), cpu or cuda", choices=DEVICES)
    progress: bool = _opt(True, "show a progress bar")
    threads: int | None = _opt(None, "CPU threads for torch (default: torch's choice; 1 is faster on a busy machine)")
    # -- memory and speed -----------------------------------------------------------------------
    base_dtype: str = _opt("auto", "type of the frozen base weights: fp32, bf16, fp16, or int8/nf4 (quantized Linear "
                           "layers, bitsandbytes); auto: bf16 where the hardware multiplies bf16 natively, else "
                           "fp32. LoRA factors and AdamW state stay fp32. --full/--bitfit train in fp32",
                           choices=("auto", *BASE_DTYPES))
    checkpointing: bool = _opt(False, "activation checkpointing: recompute each transformer block in backward "
                               "(far less activation memory, about a third more compute; same gradients)")

    def __post_init__(self) -> None:
        for name in ("targets", "report_to", "rank_pattern", "alpha_pattern"):  # one format: as the CLI's lists
            value = getattr(self, name)
            if isinstance(value, str | list | tuple) and all(isinstance(v, str) for v in value):
                object.__setattr__(self, name, split_list((value,) if isinstance(value, str) else value))
        _check_types(self)
        for name, allowed in (("task", TASKS), ("device", DEVICES), ("decay", DECAYS)):
            if getattr(self, name) not in allowed:
                raise LorakitError(f"{name} must be one of {', '.join(allowed)}, got {getattr(self, name)!r}")
        positive = ["grad_accum", "eval_batch_size", "num_beams", "max_new_tokens",
                    "log_every", "max_bad_steps", "pad_multiple"]
        positive += [n for n in ("batch_size", "max_steps", "max_length", "eval_limit", "checkpoint_every", "threads")
                     if getattr(self, n) is not None]
        for name in positive:
            if getattr(self, name) < 1:
                raise LorakitError(f"{name} must be >= 1, got {getattr(self, name)!r}")
        if self.no_repeat_ngram_size < 0:
            raise LorakitError(f"no_repeat_ngram_size must be >= 0 (0: off), got {self.no_repeat_ngram_size}")
        if not math.isfinite(self.length_penalty):
            raise LorakitError(f"length_penalty must be a finite number, got {self.length_penalty!r}")
        if self.eval_every is not None and self.eval_every < 0:
            raise LorakitError(f"eval_every must be >= 0, got {self.eval_every}")
        if self.batch_size is not None and self.batch_size % self.grad_accum:
            raise LorakitError(f"batch_size {self.batch_size} is not divisible by grad_accum {self.grad_accum}")
        for name in [n for n in ("epochs", "lr") if getattr(self, n) is not None]:
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise LorakitError(f"{name} must be a finite number > 0, got {value!r}")
        if not 0.0 <= self.warmup_ratio < 1.0:
            raise LorakitError(f"warmup_ratio must be in [0.0, 1.0), got {self.warmup_ratio!r}")
        if not 0.0 <= self.label_smoothing < 1.0:
            raise LorakitError(f"label_smoothing must be in [0.0, 1.0), got {self.label_smoothing!r}")
        if self.weight_decay < 0 or self.max_grad_norm < 0:
            raise LorakitError("weight_decay and max_grad_norm must be >= 0")
        if self.full and self.bitfit:
            raise LorakitError("choose one of --full and --bitfit")
        if self.lora_plus_ratio is not None and not (math.isfinite(self.lora_plus_ratio) and self.lora_plus_ratio > 0):
            raise LorakitError(f"lora_plus_ratio must be a finite number > 0, got {self.lora_plus_ratio!r}")
        options = self.variant_options()  # parses --layers and the patterns: bad ones raise here, before any work
        self.lora_spec()  # rank, alpha, dropout, targets, init, patterns: LoraSpec validates them, once
        given = [k for k, v in options.items() if v not in (False, None, "kaiming", {})]
        if self.method != "lora" and (given or self.lora_plus_ratio is not None):
            raise LorakitError(f"--{self.method} trains no adapter: drop the LoRA option(s) "
                               f"{', '.join(given + (['lora_plus_ratio'] if self.lora_plus_ratio else []))}")
        _check_memory_options(self)
        _check_own_data_options(self)

    def variant_options(self) -> dict[str, Any]:
        """The ``LoraSpec`` keyword arguments of the variant block (dora, rslora, init, layers, patterns)."""
        layers = None if self.layers is None else parse_layers(self.layers)
        patterns = {}
        for name, cast in (("rank_pattern", int), ("alpha_pattern", float)):
            pairs = [item.rpartition("=") for item in getattr(self, name)]
            try:
                patterns[name] = {key: cast(value) for key, eq, value in pairs if key and eq}
            except ValueError:
                patterns[name] = {}
            if len(patterns[name]) != len(pairs) or any(v <= 0 for v in patterns[name].values()):
                raise LorakitError(f"{name} entries must be PATTERN=NUMBER > 0, got {list(getattr(self, name))!r}")
        return {"dora": self.dora, "rslora": self.rslora, "init": self.init, "layers": layers, **patterns}

    def lora_spec(self, modules_to_save: tuple[str, ...] = ()) -> LoraSpec:
        """The adapter this config trains (with ``modules_to_save``, e.g. a classification head)."""
        return LoraSpec(r=self.rank, alpha=self.alpha, dropout=self.dropout, targets=self.targets,
                        modules_to_save=modules_to_save, **self.variant_options())

    @property
    def method(self) -> str:
        """"lora", "full" or "bitfit"."""
        return "full" if self.full else "bitfit" if self.bitfit else "lora"

    def resolve(self, task: str, model_name: str, data_name: str) -> TrainConfig:
        """A copy with every task-dependent default filled in (``task`` is the data set's task)."""
        if self.task != "auto" and self.task != task:
            raise LorakitError(f"--task {self.task} does not fit the data set {data_name!r}, whose task is {task}")
        suffix = "" if self.method == "lora" else f"-{self.method}"
        out = self.out or str(Path("runs") / f"{_slug(model_name)}-{_slug(data_name)}{suffix}")
        return dataclasses.replace(
            self, task=task, out=out,
            lr=self.lr if self.lr is not None else DEFAULT_LR[(self.method, task)],
            epochs=self.epochs if self.epochs is not None else DEFAULT_EPOCHS[task],
            max_length=self.max_length or DEFAULT_MAX_LENGTH[task],
            batch_size=self.batch_size or _divisible(DEFAULT_BATCH_SIZE[task], self.grad_accum),
            test_split=self.test_split or DEFAULT_TEST_SPLIT[task],
        )

    def to_json(self) -> dict[str, Any]:
        """Plain JSON-able values (tuples become lists)."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any], source: str = "config") -> TrainConfig:
        """Build from a mapping whose keys are field names (``-`` or ``_``); unknown keys raise."""
        names = {f.name for f in dataclasses.fields(cls)}
        kwargs = {}
        for key, value in values.items():
            name = str(key).replace("-", "_")
            if name not in names:
                close = difflib.get_close_matches(name, sorted(names), n=1)
                hint = f" (did you mean {close[0]!r}?)" if close else ""
                raise LorakitError(f"{source}: unknown option {key!r}{hint}")
            kwargs[name] = value
        try:
            return cls(**kwargs)
        except ValueError as exc:
            raise LorakitError(f"{source}: {exc}") from None


def _divisible(batch: int, grad_accum: int) -> int:
    """The default ``batch`` rounded up to a multiple of ``grad_accum`` (so --grad-accum 3 alone still works)."""
    return math.ceil(batch / grad_accum) * grad_accum


def split_list(items: Iterable[str]) -> tuple[str, ...]:
    """Items given space- or comma-separated, flattened: ``["q,v", "k"]`` → ``("q", "v", "k")``.

    The one format of every list option (CLI and config files). A comma inside brackets, braces or
    parentheses belongs to its item (a fused slice ``c_attn[q,v]``, a regex quantifier ``{1,2}``).
    """
    out: list[str] = []
    for item in items:
        depth, start = 0, 0
        for i, char in enumerate(item):
            depth += char in "[{("
            depth -= char in "]})"
            if char == "," and depth <= 0:
                out.append(item[start:i])
                start = i + 1
        out.append(item[start:])
    return tuple(part.strip() for part in out if part.strip())


def parse_layers(text: str) -> tuple[int, ...]:
    """``"0-5"`` or ``"0,2,4-7"`` → the layer indices (LorakitError naming the text otherwise)."""
    try:
        return tuple(i for part in text.split(",") for i in _index_range(part))
    except ValueError:
        raise LorakitError(f"layers must look like 0-5 or 0,2,4-7, got {text!r}") from None


def _index_range(part: str) -> range:
    """``"4-7"`` → 4..7, ``"3"`` → 3 (ValueError otherwise)."""
    low, dash, high = part.strip().partition("-")
    first, last = int(low), int(high) if dash else int(low)
    if first < 0 or last < first:
        raise LorakitError(part)
    return range(first, last + 1)


def _check_memory_options(cfg: TrainConfig) -> None:
    """base_dtype is a known name, and only LoRA has a frozen base to put in it."""
    allowed = ("auto", *BASE_DTYPES)
    if cfg.base_dtype not in allowed:
        raise LorakitError(f"base_dtype must be one of {', '.join(allowed)}, got {cfg.base_dtype!r}")
    if cfg.method != "lora" and cfg.base_dtype not in ("auto", "fp32"):
        raise LorakitError(f"base_dtype {cfg.base_dtype} applies to LoRA's frozen base; --{cfg.method} trains "
                           f"every {'weight' if cfg.full else 'bias'} in fp32 (leave base_dtype at auto or fp32)")


TRACKERS = ("tensorboard", "mlflow", "none")


def _check_own_data_options(cfg: TrainConfig) -> None:
    """Validate the own-data block: fraction, patience, trackers."""
    if not 0.0 < cfg.eval_fraction < 1.0:
        raise LorakitError(f"eval_fraction must be in (0, 1), got {cfg.eval_fraction!r}")
    if cfg.early_stopping_patience is not None and cfg.early_stopping_patience < 1:
        raise LorakitError(f"early_stopping_patience must be >= 1, got {cfg.early_stopping_patience}")
    if cfg.early_stopping_patience is not None and cfg.eval_every == 0:
        raise LorakitError("early_stopping_patience needs evaluations during training (eval_every > 0)")
    unknown = [t for t in cfg.report_to if t not in TRACKERS]
    if unknown or not cfg.report_to or ("none" in cfg.report_to and len(cfg.report_to) > 1):
        raise LorakitError(f"report_to must be one or more of tensorboard, mlflow, or just none; got {list(cfg.report_to)}")


def _slug(name: str) -> str:
    stem = Path(name).name or name
    return "".join(c if c.isalnum() or c in "._" else "_" for c in stem.removesuffix(".jsonl")) or "run"


def field_types() -> dict[str, Any]:
    """Field name -> its resolved type annotation."""
    return get_type_hints(TrainConfig)


def _check_types(cfg: TrainConfig) -> None:
    """Reject values of the wrong type (a config file's ``rank = "8"``) with the field's name."""
    for name, kind in field_types().items():
        value = getattr(cfg, name)
        optional = type(None) in getattr(kind, "__args__", ())
        base = kind if getattr(kind, "__origin__", None) is tuple else next(
            (a for a in getattr(kind, "__args__", (kind,)) if a is not type(None)), kind)
        if value is None and optional:
            continue
        if base is float and isinstance(value, int) and not isinstance(value, bool):
            object.__setattr__(cfg, name, float(value))  # TOML's 2 for 2.0: the same number
            continue
        if base is int and isinstance(value, bool):
            ok = False
        elif getattr(base, "__origin__", None) is tuple:
            ok = isinstance(value, tuple) and all(isinstance(v, str) for v in value)
        else:
            ok = isinstance(value, base)
        if not ok:
            want = "a list of strings" if getattr(base, "__origin__", None) is tuple else base.__name__
            raise LorakitError(f"{name} must be {want}{' or null' if optional else ''}, got {value!r}")


def read_config_file(path: str | Path) -> dict[str, Any]:
    """Read a TOML (``.toml``) or YAML (``.yaml``/``.yml``) file into a flat mapping of options."""
    path = Path(path)
    if not path.is_file():
        raise LorakitError(f"config file not found: {path}")
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".toml":
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise LorakitError(f"{path}: not valid TOML ({exc})") from None
    elif path.suffix in (".yaml", ".yml"):
        import yaml  # optional dependency (lorakit[train])

        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise LorakitError(f"{path}: not valid YAML ({str(exc).splitlines()[0]})") from None
        data = {} if data is None else data
    else:
        raise LorakitError(f"{path}: config files must end in .toml, .yaml or .yml")
    if not isinstance(data, dict):
        raise LorakitError(f"{path}: expected a table of options, got {type(data).__name__}")
    nested = [k for k, v in data.items() if isinstance(v, dict)]
    if nested:
        raise LorakitError(f"{path}: unknown option {nested[0]!r} (options are flat keys, not tables)")
    # Lists from files become the tuples the dataclass holds.
    return {k: tuple(v) if isinstance(v, list) else v for k, v in data.items()}


def load_config(path: str | Path, overrides: Mapping[str, Any] | None = None) -> TrainConfig:
    """A config file's options, then ``overrides`` (e.g. the options given on the command line)."""
    values = {str(k).replace("-", "_"): v for k, v in read_config_file(path).items()}
    values.update({k.replace("-", "_"): v for k, v in (overrides or {}).items()})
    return TrainConfig.from_mapping(values, source=str(path))

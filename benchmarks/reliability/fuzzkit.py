"""Building blocks of the reliability fuzz, shared by the tests and ``benchmarks/reliability_fuzz.py``.

* :func:`safetensors_bytes` writes a safetensors file by hand (8-byte little-endian header length,
  JSON header, data), so a case can declare overlapping offsets, huge shapes or a lying length.
* :class:`Harness` holds tiny base models with a valid adapter each, writes a case's two files and
  runs the whole load path on it: ``read_adapter`` then ``load_adapter`` onto the model.
* The hypothesis strategies build cases: mutated configs, mutated tensors, hand-made headers and
  byte-level damage (truncation, bit flips, a wrong header length).

What a case may do (the contract the fuzz asserts): load, or raise ``LorakitError`` with a
non-empty message. A refused load leaves the model exactly as it was (no LoRA layer, same weights);
an accepted one holds only finite values and unloads back to the same weights. No case may take
longer than the per-case deadline.
"""

from __future__ import annotations

import json
import math
import signal
import struct
import tempfile
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from hypothesis import strategies as st
from safetensors.torch import save as safetensors_save
from torch import nn

import lorakit
from lorakit.core import lora_layers
from lorakit.errors import LorakitError
from lorakit.io import read_adapter

CONFIG_NAME = "adapter_config.json"
WEIGHTS_NAME = "adapter_model.safetensors"
# The error lorakit promises for bad input (DESIGN principle 8; the CLI prints it as one line);
# anything else, a library's ValueError included, is a crash.
ALLOWED_ERRORS: tuple[type[BaseException], ...] = (LorakitError,)
# safetensors dtype names and their sizes in bytes.
DTYPE_SIZES = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1,
               "BOOL": 1, "F8_E4M3": 1, "F8_E4M3FNUZ": 1, "F8_E5M2": 1, "F8_E5M2FNUZ": 1, "C64": 8,
               "U64": 8, "U32": 4, "U16": 2}
TORCH_DTYPES = [torch.float64, torch.float32, torch.float16, torch.bfloat16, torch.int64, torch.int32,
                torch.int16, torch.int8, torch.uint8, torch.bool, torch.float8_e4m3fn, torch.float8_e5m2,
                torch.complex64]


class Hang(BaseException):  # noqa: N818 - not an error lorakit raises; the fuzz's own verdict
    """A case ran past its deadline (raised from a SIGALRM handler)."""


class Crash(AssertionError):
    """A case broke the contract: an untyped exception, an empty message or a damaged model."""


def rss_mb() -> float:
    """This process's resident memory now (not the peak), in MiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


@contextmanager
def deadline(seconds: float) -> Iterator[None]:
    """Raise :class:`Hang` in the main thread if the block runs longer than ``seconds``."""

    def on_alarm(signum: int, frame: Any) -> None:
        raise Hang(f"case ran longer than {seconds} s")

    previous = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def safetensors_bytes(header: Any, data: bytes = b"", header_len: int | None = None) -> bytes:
    """A safetensors file by hand: ``u64 little-endian header length`` + JSON ``header`` + ``data``.

    ``header_len`` overrides the declared length (clamped to u64), to make it lie.
    """
    raw = json.dumps(header).encode() if not isinstance(header, bytes) else header
    declared = len(raw) if header_len is None else min(max(header_len, 0), 2**64 - 1)
    return struct.pack("<Q", declared) + raw + data


def entries_for(tensors: dict[str, tuple[str, list[int]]]) -> tuple[dict[str, Any], int]:
    """A well-formed header for ``name -> (dtype, shape)`` with contiguous offsets; and the data size."""
    header, offset = {}, 0
    for name, (dtype, shape) in tensors.items():
        size = DTYPE_SIZES[dtype] * math.prod(shape)
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + size]}
        offset += size
    return header, offset


@dataclass
class BaseCase:
    """One tiny model with a valid adapter for it, as files and as parsed values."""

    name: str
    model: nn.Module
    snapshot: dict[str, torch.Tensor]
    config: dict[str, Any]
    tensors: dict[str, torch.Tensor]
    weights: bytes


@dataclass(frozen=True)
class Outcome:
    """What one case did: ``"ok"`` or ``"refused"`` (with the error type and first line of its message)."""

    status: str
    error: str = ""
    message: str = ""


def _snapshot(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _same(model: nn.Module, snapshot: dict[str, torch.Tensor], provided: set[str] = frozenset()) -> str | None:
    """None if ``model``'s state dict equals ``snapshot`` exactly (but for ``provided`` keys), else what differs."""
    now = model.state_dict()
    if list(now) != list(snapshot):
        return f"state-dict keys changed: {sorted(set(now) ^ set(snapshot))[:4]}"
    for k, v in now.items():
        if k not in provided and (v.dtype != snapshot[k].dtype or not torch.equal(v, snapshot[k])):
            return f"weight {k} changed"
    return None


def provided_weights(adapter_keys: Any) -> set[str]:
    """Model state-dict keys an adapter file sets on purpose: trained biases and ``modules_to_save``."""
    prefix = "base_model.model."
    return {k[len(prefix):].replace(".base_layer.", ".") for k in adapter_keys if k.startswith(prefix)}


def default_factories() -> dict[str, tuple[Callable[[], nn.Module], lorakit.LoraSpec, dict[str, Any]]]:
    """Three tiny bases covering the key kinds: Llama q/v, GPT-2 fused ``c_attn[q,v]`` slices (the
    ``"lorakit"`` extras), BERT with a trained classifier head and LoRA-layer biases."""
    from benchmarks.tiny_models import tiny_bert, tiny_gpt2, tiny_llama

    return {
        "llama": (tiny_llama, lorakit.LoraSpec(r=4, targets=("qv",)), {"task_type": "CAUSAL_LM"}),
        "gpt2": (tiny_gpt2, lorakit.LoraSpec(r=2, targets=("c_attn[q,v]",)), {"task_type": "CAUSAL_LM"}),
        "bert": (lambda: tiny_bert(num_labels=2),
                 lorakit.LoraSpec(r=4, targets=("query", "value"), bias="lora_only", modules_to_save=("classifier",)),
                 {"task_type": "SEQ_CLS"}),
    }


class Harness:
    """Writes each case into one folder and runs the full load path on a tiny model."""

    def __init__(self, factories: dict[str, tuple[Callable[[], nn.Module], lorakit.LoraSpec, dict[str, Any]]],
                 workdir: str | Path | None = None, case_seconds: float = 10.0) -> None:
        """``factories``: name -> (model factory, spec to train, keyword args for ``save_adapter``)."""
        self._tmp = None if workdir is not None else tempfile.TemporaryDirectory(prefix="lorakit-fuzz-")
        self.root = Path(workdir if workdir is not None else self._tmp.name)
        self.folder = self.root / "case"
        self.folder.mkdir(parents=True, exist_ok=True)
        self.case_seconds = case_seconds
        self.bases: dict[str, BaseCase] = {}
        for name, (factory, spec, save_kwargs) in factories.items():
            trained = factory()
            lorakit.inject(trained, spec)
            gen = torch.Generator().manual_seed(1)
            with torch.no_grad():  # non-zero B, so the adapter really changes the model
                for layer in lora_layers(trained).values():
                    layer.lora_B.copy_(torch.randn(layer.lora_B.shape, generator=gen) * 0.1)
            saved = lorakit.save_adapter(trained, self.root / f"base-{name}", **save_kwargs)
            config = json.loads((saved / CONFIG_NAME).read_text())
            weights = (saved / WEIGHTS_NAME).read_bytes()
            model = factory()
            self.bases[name] = BaseCase(name, model, _snapshot(model), config, read_adapter(saved).tensors, weights)

    def close(self) -> None:
        """Remove the work folder (when the harness made it)."""
        if self._tmp is not None:
            self._tmp.cleanup()

    def write(self, config: bytes, weights: bytes) -> Path:
        """Put one case's two files in place and return the folder."""
        (self.folder / CONFIG_NAME).write_bytes(config)
        (self.folder / WEIGHTS_NAME).write_bytes(weights)
        return self.folder

    def run(self, base: str, config: bytes, weights: bytes) -> Outcome:
        """Run one case; raise :class:`Crash` or :class:`Hang` when it breaks the contract."""
        case = self.bases[base]
        folder = self.write(config, weights)
        try:
            with deadline(self.case_seconds), warnings.catch_warnings():
                warnings.simplefilter("ignore")  # unknown config keys warn, by design
                adapter = read_adapter(folder)
                lorakit.load_adapter(case.model, adapter)
        except ALLOWED_ERRORS as exc:
            message = str(exc).strip()
            if not message:
                raise Crash(f"{type(exc).__name__} with an empty message") from exc
            damage = ("LoRA layers left in the model" if lora_layers(case.model) else None) \
                or _same(case.model, case.snapshot)
            if damage:
                self._restore(case)
                raise Crash(f"refused load ({type(exc).__name__}: {message[:120]}) but {damage}") from exc
            first = message.splitlines()[0].replace(str(folder), "CASE")
            return Outcome("refused", type(exc).__name__, first[:200])
        except (Hang, Crash):
            self._restore(case)
            raise
        except Exception as exc:
            self._restore(case)
            raise Crash(f"untyped {type(exc).__name__}: {str(exc)[:200]}") from exc
        bad = [p for p, m in lora_layers(case.model).items()
               if not (torch.isfinite(m.lora_A).all() and torch.isfinite(m.lora_B).all())]
        lorakit.unload(case.model, merge_first=False)
        damage = _same(case.model, case.snapshot, provided_weights(adapter.tensors))
        self._restore(case)  # the next case starts from the pristine base (saved heads were loaded)
        if bad or damage:
            raise Crash(f"accepted load but {'non-finite factors in ' + bad[0] if bad else damage}")
        return Outcome("ok")

    def run_bank(self, base: str, config: bytes, weights: bytes) -> Outcome:
        """The server's load path on one case: ``AdapterBank.load`` (its own validation, ``serve.prepare``).

        Same contract: loaded (then unloaded again) or ``LorakitError`` with a message, and a
        refused adapter never becomes resident. The banks (one per base, on copies) are made on first use.
        """
        import copy

        from lorakit.serve.bank import AdapterBank

        if not hasattr(self, "_banks"):
            self._banks = {n: AdapterBank(copy.deepcopy(b.model), max_loaded=2) for n, b in self.bases.items()}
        bank = self._banks[base]
        folder = self.write(config, weights)
        try:
            with deadline(self.case_seconds), warnings.catch_warnings():
                warnings.simplefilter("ignore")
                bank.load("case", folder)
        except ALLOWED_ERRORS as exc:
            if not str(exc).strip():
                raise Crash(f"{type(exc).__name__} with an empty message") from exc
            if "case" in bank:
                raise Crash("refused adapter left resident in the bank") from exc
            return Outcome("refused", type(exc).__name__, str(exc).strip().splitlines()[0][:200])
        except (Hang, Crash):
            raise
        except Exception as exc:
            if "case" in bank:
                bank.unload("case")
            raise Crash(f"untyped {type(exc).__name__}: {str(exc)[:200]}") from exc
        bank.unload("case")
        return Outcome("ok")

    @staticmethod
    def _restore(case: BaseCase) -> None:
        if lora_layers(case.model):
            lorakit.unload(case.model, merge_first=False)
        case.model.load_state_dict(case.snapshot)


# ---------------------------------------------------------------------------------------------------
# Strategies
# ---------------------------------------------------------------------------------------------------

_floats = st.floats(allow_nan=True, allow_infinity=True)
_ints = st.one_of(st.integers(-3, 70), st.sampled_from([2**31, 2**53 + 1, 2**63, 2**64, 10**12, 10**100]))
json_values = st.recursive(
    st.one_of(st.none(), st.booleans(), _ints, _floats, st.text(max_size=12)),
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=4)),
    max_leaves=12,
)

_PATTERNS = ["((", "[", "re:((", "", ".*", "q_proj", "query", "c_attn", "self_attn", "lm_head", "classifier",
             "embed_tokens", "wte", "(.*\\.)?q_proj", "layers\\.0\\..*", "re:.*\\.q_proj", "c_attn[q,v]",
             "c_attn[x]", "c_attn[0,9/3]", "c_attn[0/0]", "q_proj[q]", "attention.self.query", "out_proj"]
_pattern = st.one_of(st.sampled_from(_PATTERNS), st.text(max_size=10))
FIELD_VALUES: dict[str, st.SearchStrategy] = {
    "r": st.one_of(_ints, st.sampled_from([True, 4.0, "4", None, 1e308])),
    "lora_alpha": st.one_of(_floats, _ints, st.sampled_from([True, "8", None])),
    "lora_dropout": st.one_of(_floats, st.sampled_from([True, -0.1, 1.0, 0.5, "0.1"])),
    "target_modules": st.one_of(_pattern, st.lists(_pattern, max_size=3), json_values),
    "layers_to_transform": st.one_of(_ints, st.lists(st.one_of(_ints, st.sampled_from([True, 1.5, "0"])),
                                                     max_size=3), json_values),
    "rank_pattern": st.one_of(st.dictionaries(_pattern, st.one_of(_ints, _floats), max_size=3), json_values),
    "alpha_pattern": st.one_of(st.dictionaries(_pattern, st.one_of(_ints, _floats), max_size=3), json_values),
    "use_rslora": st.one_of(st.booleans(), json_values),
    "bias": st.one_of(st.sampled_from(["none", "all", "lora_only", "x"]), json_values),
    "modules_to_save": st.one_of(st.lists(_pattern, max_size=2), json_values),
    "fan_in_fan_out": st.one_of(st.booleans(), json_values),
    "peft_type": st.one_of(st.sampled_from(["LORA", "IA3", "lora"]), json_values),
    "use_dora": st.one_of(st.booleans(), json_values),
    "lora_bias": st.one_of(st.booleans(), json_values),
    "layer_replication": json_values,
    "target_parameters": json_values,
    "task_type": json_values,
    "base_model_name_or_path": json_values,
    "layers_pattern": json_values,
}


@st.composite
def lorakit_extras(draw: st.DrawFn, current: dict[str, Any]) -> Any:
    """A mutated ``"lorakit"`` object: format versions, and slices with wrong types or values."""
    choice = draw(st.integers(0, 4))
    if choice == 0:
        return draw(json_values)
    extras = dict(current) if isinstance(current, dict) else {}
    if choice == 1:
        extras["format_version"] = draw(st.one_of(_ints, _floats, json_values))
        return extras
    slices = extras.get("slices")
    if choice == 2 or not isinstance(slices, dict) or not slices:
        extras["slices"] = draw(st.one_of(json_values, st.dictionaries(_pattern, json_values, max_size=2)))
        return extras
    path = draw(st.sampled_from(sorted(slices)))
    entry = dict(slices[path]) if isinstance(slices[path], dict) else {}
    field_name = draw(st.sampled_from(["n", "selected", "r", "alpha", "extra"]))
    if draw(st.booleans()):
        entry.pop(field_name, None)
    else:
        entry[field_name] = draw(st.one_of(_ints, _floats, st.lists(_ints, max_size=4), json_values))
    extras["slices"] = {**slices, path: entry}
    return extras


@st.composite
def mutated_config(draw: st.DrawFn, config: dict[str, Any]) -> Any:
    """A config object near ``config``: fields set to wrong types or edge values, dropped or added."""
    if draw(st.integers(0, 19)) == 0:
        return draw(json_values)  # not even an object, most of the time
    out = dict(config)
    for _ in range(draw(st.integers(1, 3))):
        op = draw(st.integers(0, 9))
        if op <= 5:
            name = draw(st.sampled_from(sorted(FIELD_VALUES)))
            out[name] = draw(FIELD_VALUES[name])
        elif op == 6 and out:
            out.pop(draw(st.sampled_from(sorted(out))))
        elif op == 7:
            out[draw(st.text(min_size=1, max_size=12))] = draw(json_values)  # unknown key
        else:
            out["lorakit"] = draw(lorakit_extras(out.get("lorakit", {})))
    return out


@st.composite
def config_bytes(draw: st.DrawFn, config: dict[str, Any], mutate: bool = True) -> bytes:
    """The config file's bytes: valid or mutated JSON, sometimes truncated, not UTF-8 or deeply nested."""
    value = draw(mutated_config(config)) if mutate else config
    text = json.dumps(value).encode()  # NaN/Infinity are written as Python's json reads them
    damage = draw(st.integers(0, 15)) if mutate else 99
    if damage == 0:
        return text[: draw(st.integers(0, max(len(text) - 1, 0)))]
    if damage == 1:
        return b"\xff\xfe" + text
    if damage == 2:
        depth = draw(st.sampled_from([10, 1_000, 100_000]))
        return b"[" * depth + b"]" * draw(st.sampled_from([0, depth]))
    if damage == 3:
        return draw(st.binary(max_size=64))
    return text


def _tensor_mutation(draw: st.DrawFn, tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    out = dict(tensors)
    for _ in range(draw(st.integers(1, 2))):
        key = draw(st.sampled_from(sorted(out))) if out else None
        op = draw(st.integers(0, 8))
        if key is None or op == 0:
            out[draw(st.sampled_from(["base_model.model.extra.lora_A.weight", "x", ""]))] = torch.zeros(2, 2)
        elif op == 1:
            del out[key]
        elif op == 2:  # another dtype, as a whole file (fp16/bf16/fp64 are fine; ints and bool are not)
            dtype = draw(st.sampled_from(TORCH_DTYPES))
            out = {k: v.to(dtype) for k, v in out.items()}
        elif op == 3:
            out[key] = out[key].to(draw(st.sampled_from(TORCH_DTYPES)))
        elif op == 4:  # NaN / Inf / huge values
            t = out[key].float().clone()
            flat = t.view(-1)
            if flat.numel():
                flat[draw(st.integers(0, flat.numel() - 1))] = draw(st.sampled_from(
                    [float("nan"), float("inf"), -float("inf"), 3e38, 1e-45]))
            out[key] = t.to(draw(st.sampled_from([torch.float32, torch.float16, torch.bfloat16])))
        elif op == 5:  # other shapes: transposed, empty, scalar, extra dimension, one row more
            t = out[key] if out[key].ndim else out[key].reshape(1)
            shapes = [t.reshape(-1), t.T.contiguous() if t.ndim == 2 else t, torch.zeros(0, *t.shape[1:]),
                      torch.tensor(1.0), t.unsqueeze(-1), torch.zeros(t.shape[0] + 1, *t.shape[1:])]
            out[key] = draw(st.sampled_from(shapes))
        elif op == 6:  # a factor with another rank (rank limit / rank mismatch)
            t = out[key] if out[key].ndim else out[key].reshape(1)
            r = draw(st.sampled_from([1, 2, 8, 64]))
            shape = (r, *t.shape[1:]) if key.endswith(("lora_A.weight", "lora_embedding_A")) else (t.shape[0], r)
            out[key] = torch.zeros(shape)
        elif op == 7:
            out = {}
        else:
            out[key] = torch.zeros_like(out[key])
    return out


@st.composite
def handmade_weights(draw: st.DrawFn, tensors: dict[str, torch.Tensor]) -> bytes:
    """A hand-made header: wrong dtypes, huge or negative shapes, overlapping or out-of-range offsets."""
    names = draw(st.lists(st.one_of(st.sampled_from(sorted(tensors)), st.text(max_size=10)), max_size=4,
                          unique=True))
    specs = {n: (draw(st.sampled_from(sorted(DTYPE_SIZES))),
                 list(tensors[n].shape) if n in tensors and draw(st.booleans())
                 else draw(st.lists(st.integers(0, 64), max_size=3))) for n in names}
    header, size = entries_for(specs)
    for name in names:
        op = draw(st.integers(0, 9))
        entry = header[name]
        if op == 0:
            entry["dtype"] = draw(st.one_of(st.text(max_size=6), json_values))
        elif op == 1:
            entry["shape"] = draw(st.one_of(
                st.lists(st.sampled_from([-1, 0, 2**31, 2**40, 2**63, 2**64 - 1]), min_size=1, max_size=3),
                json_values))
        elif op == 2:  # overlap the previous tensor, or reuse offsets
            start = draw(st.integers(0, max(size - 1, 0)))
            entry["data_offsets"] = [start, start + draw(st.integers(0, size))]
        elif op == 3:
            entry["data_offsets"] = draw(st.one_of(
                st.lists(st.one_of(_ints, st.integers(-5, size + 5)), max_size=3), json_values))
        elif op == 4:
            del entry[draw(st.sampled_from(sorted(entry)))]
        elif op == 5:
            header[name] = draw(json_values)
    if draw(st.booleans()):
        header["__metadata__"] = draw(st.one_of(st.just({"format": "pt"}), json_values))
    fill = draw(st.sampled_from([b"\x00", b"\xff", b"\x00\x00\xc0\x7f", b"\x00\x00\x80\x7f", b"\x3c\x00"]))
    extra = draw(st.integers(-8, 8))
    data = (fill * (size // len(fill) + 2))[: max(size + extra, 0)]
    lie = draw(st.one_of(st.none(), st.integers(-16, 16), st.sampled_from([2**32, 2**63, 2**64 - 1, 10**8])))
    raw = json.dumps(header).encode()
    declared = None if lie is None else (len(raw) + lie if abs(lie) <= 16 else lie)
    return safetensors_bytes(raw, data, declared)


@st.composite
def weights_bytes(draw: st.DrawFn, base: BaseCase, mutate: bool = True) -> bytes:
    """The weights file's bytes: valid, tensor-level mutations, hand-made headers or byte damage."""
    if not mutate:
        return base.weights
    kind = draw(st.integers(0, 5))
    if kind <= 1:
        return safetensors_save(_tensor_mutation(draw, base.tensors), metadata={"format": "pt"})
    if kind <= 3:
        return draw(handmade_weights(base.tensors))
    data = base.weights
    if kind == 4:
        return data[: draw(st.integers(0, len(data) - 1))]
    pos = draw(st.integers(0, len(data) - 1))
    if draw(st.booleans()):  # rewrite the declared header length
        (length,) = struct.unpack("<Q", data[:8])
        return struct.pack("<Q", max(length + draw(st.integers(-64, 64)), 0)) + data[8:]
    return data[:pos] + bytes([data[pos] ^ draw(st.integers(1, 255))]) + data[pos + 1:]


@st.composite
def cases(draw: st.DrawFn, harness: Harness) -> tuple[str, bytes, bytes]:
    """(base name, config bytes, weights bytes): one side damaged, sometimes both."""
    base = harness.bases[draw(st.sampled_from(sorted(harness.bases)))]
    which = draw(st.sampled_from(["config", "weights", "weights", "both"]))
    config = draw(config_bytes(base.config, mutate=which != "weights"))
    weights = draw(weights_bytes(base, mutate=which != "config"))
    return base.name, config, weights

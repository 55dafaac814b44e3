"""Promise 1: no code runs on load.

Every path that reads an adapter, a model folder, a training checkpoint or a config refuses pickle and
a folder's own Python. Each test plants a payload that would create a canary file if it ever ran
(a pickle whose ``__reduce__`` opens the canary for writing, a ``modeling_*.py`` that writes it, a YAML
``!!python`` tag) and checks that the canary never appears. A static scan keeps unsafe calls out of
``src/lorakit``.
"""

from __future__ import annotations

import ast
import json
import pickle
import re
import warnings
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

import lorakit
from lorakit.core import lora_layers
from lorakit.io import PICKLE_SUFFIXES, read_adapter
from tests.conftest import save_tiny_folder, tiny_llama

SRC = Path(__file__).resolve().parents[2] / "src" / "lorakit"


class Canary:
    """A pickle payload: unpickling it opens ``path`` for writing (creating the file)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple[Callable[..., object], tuple[str, str]]:
        return (open, (str(self.path), "w"))


def plant(path: Path, canary: Path) -> None:
    """Write a code-running pickle (plain pickle bytes, as torch.save's legacy format would hold)."""
    path.write_bytes(pickle.dumps(Canary(canary)))


def _sanity_check_the_payload_works(tmp_path: Path) -> None:
    canary = tmp_path / "sanity"
    plant(tmp_path / "p.pkl", canary)
    pickle.loads((tmp_path / "p.pkl").read_bytes())  # noqa: S301 - proves the payload is live
    assert canary.exists()
    canary.unlink()


@pytest.fixture
def canary(tmp_path: Path) -> Path:
    _sanity_check_the_payload_works(tmp_path)
    return tmp_path / "CANARY"


@pytest.fixture
def adapter_dir(tmp_path: Path) -> Path:
    model = tiny_llama()
    lorakit.inject(model, lorakit.LoraSpec(r=4, targets=("qv",)))
    return lorakit.save_adapter(model, tmp_path / "adapter", task_type="CAUSAL_LM")


# --- adapters ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("suffix", PICKLE_SUFFIXES)
def test_pickle_only_adapter_is_refused(adapter_dir: Path, canary: Path, suffix: str) -> None:
    (adapter_dir / "adapter_model.safetensors").unlink()
    plant(adapter_dir / f"adapter_model{suffix}", canary)
    with pytest.raises(ValueError, match="never unpickles"):
        read_adapter(adapter_dir)
    model = tiny_llama()
    with pytest.raises(ValueError, match="never unpickles"):
        lorakit.load_adapter(model, adapter_dir)
    assert not lora_layers(model)
    assert not canary.exists()


def test_pickle_next_to_safetensors_is_ignored(adapter_dir: Path, canary: Path) -> None:
    for suffix in PICKLE_SUFFIXES:
        plant(adapter_dir / f"adapter_model{suffix}", canary)
    plant(adapter_dir / "training_args.bin", canary)
    lorakit.load_adapter(tiny_llama(), adapter_dir)  # the safetensors file is the adapter
    assert not canary.exists()


@pytest.mark.parametrize("disguise", ["pickle", "torch.save zip"])
def test_pickle_disguised_as_safetensors_is_refused(adapter_dir: Path, canary: Path, disguise: str) -> None:
    target = adapter_dir / "adapter_model.safetensors"
    if disguise == "pickle":
        plant(target, canary)
    else:
        torch.save({"x": Canary(canary)}, target)
    with pytest.raises(ValueError, match="not a readable safetensors file"):
        read_adapter(adapter_dir)
    assert not canary.exists()


def test_cli_inspect_refuses_a_pickle_adapter(adapter_dir: Path, canary: Path, tmp_path: Path, capsys) -> None:
    from lorakit.cli.main import main

    model_dir = save_tiny_folder(tiny_llama(), tmp_path / "model")
    (adapter_dir / "adapter_model.safetensors").unlink()
    plant(adapter_dir / "adapter_model.bin", canary)
    capsys.readouterr()  # drop what saving the model printed
    assert main(["inspect", str(model_dir), "--adapter", str(adapter_dir)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "never unpickles" in err and len(err.strip().splitlines()) == 1
    assert not canary.exists()


# --- model folders ----------------------------------------------------------------------------------

def test_model_folder_with_pickle_weights_only_is_refused(tmp_path: Path, canary: Path) -> None:
    from lorakit.models import load_model

    folder = save_tiny_folder(tiny_llama(), tmp_path / "model")
    (folder / "model.safetensors").unlink()
    plant(folder / "pytorch_model.bin", canary)
    with pytest.raises(ValueError, match="safetensors only"):
        load_model(str(folder))
    assert not canary.exists()


def test_model_folder_pickles_beside_safetensors_are_never_read(tmp_path: Path, canary: Path) -> None:
    from lorakit.models import load_model

    folder = save_tiny_folder(tiny_llama(), tmp_path / "model")
    for name in ("pytorch_model.bin", "training_args.bin", "optimizer.pt", "rng_state.pth", "model.ckpt"):
        plant(folder / name, canary)
    load_model(str(folder))
    assert not canary.exists()


def test_model_folder_custom_code_never_runs(tmp_path: Path, canary: Path) -> None:
    from lorakit.models import load_model

    folder = save_tiny_folder(tiny_llama(), tmp_path / "model")
    code = (f"open({str(canary)!r}, 'w').write('ran')\n"
            "from transformers import LlamaConfig, LlamaForCausalLM\n"
            "class EvilConfig(LlamaConfig):\n    model_type = 'evil'\n"
            "class EvilModel(LlamaForCausalLM):\n    config_class = EvilConfig\n")
    for name in ("configuration_evil.py", "modeling_evil.py", "tokenization_evil.py"):
        (folder / name).write_text(code)
    config = json.loads((folder / "config.json").read_text())
    auto_map = {"AutoConfig": "configuration_evil.EvilConfig", "AutoModel": "modeling_evil.EvilModel",
                "AutoModelForCausalLM": "modeling_evil.EvilModel"}
    for model_type in ("llama", "evil"):  # a known type (local class wins) and an unknown one (refused)
        (folder / "config.json").write_text(json.dumps({**config, "model_type": model_type, "auto_map": auto_map}))
        try:
            load_model(str(folder))
        except ValueError as exc:
            assert model_type == "evil" and "custom code" in str(exc)
        assert not canary.exists(), model_type


# --- training checkpoints and config files -----------------------------------------------------------

def _checkpoint(tmp_path: Path) -> tuple[Path, torch.nn.Module, torch.optim.Optimizer]:
    from lorakit.train.checkpoint import TrainState, save_checkpoint

    model = tiny_llama()
    lorakit.inject(model, lorakit.LoraSpec(r=2, targets=("qv",)))
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    folder = save_checkpoint(tmp_path / "run" / "checkpoint", model, optimizer, TrainState(step=3))
    return folder, model, optimizer


def test_checkpoint_pickles_are_never_read(tmp_path: Path, canary: Path) -> None:
    from lorakit.train.checkpoint import find_checkpoint, load_checkpoint

    folder, model, optimizer = _checkpoint(tmp_path)
    for name in ("optimizer.pt", "scheduler.pt", "rng_state.pth", "trainer_state.bin", "training_args.bin",
                 "pytorch_model.bin"):
        plant(folder / name, canary)
    plant(folder.parent / ".checkpoint.old-1", canary)  # a file where an old checkpoint folder would be
    assert find_checkpoint(folder.parent) == folder
    assert load_checkpoint(folder, model, optimizer).step == 3
    assert not canary.exists()


@pytest.mark.parametrize("which", ["trainable.safetensors", "optimizer.safetensors"])
def test_checkpoint_tensors_replaced_by_a_pickle_are_refused(tmp_path: Path, canary: Path, which: str) -> None:
    from lorakit.train.checkpoint import load_checkpoint

    folder, model, optimizer = _checkpoint(tmp_path)
    plant(folder / which, canary)
    with pytest.raises(ValueError, match="damaged checkpoint file"):
        load_checkpoint(folder, model, optimizer)
    assert not canary.exists()


def test_yaml_config_python_tags_are_refused(tmp_path: Path, canary: Path) -> None:
    from lorakit.train.config import load_config

    path = tmp_path / "run.yaml"
    path.write_text(f"model: x\nrank: !!python/object/apply:os.system ['touch {canary}']\n")
    with pytest.raises(ValueError, match="not valid YAML"):
        load_config(path)
    path.write_text(f"model: !!python/object/new:builtins.open ['{canary}', 'w']\n")
    with pytest.raises(ValueError, match="not valid YAML"):
        load_config(path)
    assert not canary.exists()


# --- static scan of src/lorakit ------------------------------------------------------------------------

def _calls(tree: ast.AST) -> list[tuple[str, ast.Call]]:
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            out.append((ast.unparse(node.func), node))
    return out


def _kw(call: ast.Call, name: str) -> object:
    for kw in call.keywords:
        if kw.arg == name:
            return kw.value.value if isinstance(kw.value, ast.Constant) else ast.unparse(kw.value)
    return None


def unsafe_calls(source: str) -> list[str]:
    """Calls in ``source`` that could run code from a file (the rules of promise 1)."""
    problems = []
    tree = ast.parse(source)
    for name, call in _calls(tree):
        leaf = name.rsplit(".", 1)[-1]
        where = f"line {call.lineno}: {ast.unparse(call)[:80]}"
        if name == "torch.load" and _kw(call, "weights_only") is not True:
            problems.append(f"torch.load without weights_only=True, {where}")
        if name.startswith(("pickle.", "cPickle.", "dill.", "cloudpickle.", "joblib.", "shelve.", "marshal.")) \
                and leaf in ("load", "loads", "Unpickler", "open"):
            problems.append(f"unpickling, {where}")
        if name in ("yaml.load", "yaml.unsafe_load", "yaml.full_load", "yaml.load_all", "yaml.unsafe_load_all"):
            problems.append(f"yaml loader that builds objects, {where}")
        if name in ("eval", "exec", "compile", "__import__"):
            problems.append(f"{name}() builtin, {where}")
        if _kw(call, "trust_remote_code") not in (None, False):
            problems.append(f"trust_remote_code enabled, {where}")
        if _kw(call, "weights_only") is False:
            problems.append(f"weights_only=False, {where}")
        if leaf == "load" and name.startswith(("np.", "numpy.")) and _kw(call, "allow_pickle") not in (None, False):
            problems.append(f"numpy load with allow_pickle, {where}")
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module in ("pickle", "dill", "cloudpickle", "marshal", "torch") \
                and any(a.name in ("load", "loads", "Unpickler") for a in node.names):
            problems.append(f"from {node.module} import {', '.join(a.name for a in node.names)}, line {node.lineno}")
    return problems


def test_scan_finds_what_it_must() -> None:
    bad = ("import torch, pickle, yaml\ntorch.load(f)\ntorch.load(f, weights_only=False)\npickle.loads(b)\n"
           "yaml.load(t)\nm.from_pretrained(p, trust_remote_code=True)\neval('1')\nfrom pickle import loads\n"
           "from torch import load\n")
    # torch.load(f, weights_only=False) counts twice (no weights_only=True, and weights_only=False).
    assert len(unsafe_calls(bad)) == 9
    good = "import torch, yaml\ntorch.load(f, weights_only=True)\nyaml.safe_load(t)\nm.eval()\nre.compile('x')\n"
    assert unsafe_calls(good) == []


def test_no_unsafe_loading_in_src() -> None:
    problems = []
    files = sorted(SRC.rglob("*.py"))
    assert len(files) > 30
    for path in files:
        text = path.read_text(encoding="utf-8")
        problems += [f"{path.relative_to(SRC)}: {p}" for p in unsafe_calls(text)]
        # Belt and braces for code the AST rules might miss (getattr tricks, aliases).
        for pattern in (r"torch\.load\((?![^)]*weights_only=True)", r"\bpickle\.loads?\(", r"\bUnpickler\("):
            for m in re.finditer(pattern, text):
                problems.append(f"{path.relative_to(SRC)}: text match {m.group(0)!r}")
    assert problems == []


def test_warnings_from_loading_are_not_swallowed_into_unsafe_fallbacks(adapter_dir: Path) -> None:
    """read_adapter has no fallback path: with the safetensors file broken there is nothing else it tries."""
    (adapter_dir / "adapter_model.safetensors").write_bytes(b"\x00" * 16)
    plant(adapter_dir / "adapter_model.bin", adapter_dir / "CANARY")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(ValueError, match="not a readable safetensors file"):
            read_adapter(adapter_dir)
    assert not (adapter_dir / "CANARY").exists()

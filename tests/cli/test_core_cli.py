"""`lorakit inspect` and `lorakit merge` on tiny local folders, and bad input at the CLI."""

from __future__ import annotations

import json
import pickle
import subprocess
import sys

import pytest
import torch

import lorakit
from lorakit.cli.main import main
from lorakit.core import lora_layers
from tests.conftest import tiny_llama


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "lorakit", *args], capture_output=True, text=True, timeout=120)


@pytest.fixture
def llama_adapter(tmp_path, tiny_llama_dir):
    model = tiny_llama()
    lorakit.inject(model, lorakit.LoraSpec(r=4, targets=("qv",)))
    for layer in lora_layers(model).values():
        torch.nn.init.normal_(layer.lora_B, std=0.2)
    return lorakit.save_adapter(model, tmp_path / "adapter", task_type="CAUSAL_LM")


def test_inspect_dry_run_json(tiny_llama_dir, capsys):
    assert main(["inspect", str(tiny_llama_dir), "--targets", "qv", "--rank", "8", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    # q: 32 -> 32, v: 32 -> 16, two layers: 2·8·(64 + 48)
    assert out["modules"] == 4 and out["lora_params"] == 2 * 8 * (64 + 48)


def test_inspect_adapter(tiny_llama_dir, llama_adapter, capsys):
    assert main(["inspect", str(tiny_llama_dir), "--adapter", str(llama_adapter), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["modules"] == 4 and out["r"] == 4 and {r["rank"] for r in out["rows"]} == {4}


def test_merge_writes_a_plain_transformers_folder(tiny_llama_dir, llama_adapter, tmp_path, capsys):
    from transformers import AutoModelForCausalLM

    out = tmp_path / "merged"
    assert main(["merge", str(tiny_llama_dir), "--adapter", str(llama_adapter), "--out", str(out)]) == 0
    text = capsys.readouterr().out
    diff = float(text.split("probe input: ")[1].split()[0])
    assert diff < 1e-4
    assert (out / "model.safetensors").is_file() and not (out / "adapter_config.json").exists()
    ids = torch.tensor([[5, 6, 7, 8, 9]])
    ref = tiny_llama()
    lorakit.load_adapter(ref, llama_adapter)
    merged = AutoModelForCausalLM.from_pretrained(out).eval()
    torch.testing.assert_close(merged(input_ids=ids).logits, ref(input_ids=ids).logits, rtol=1e-5, atol=1e-5)


def _bad_pickle(folder):
    (folder / "adapter_model.safetensors").unlink()
    (folder / "adapter_model.bin").write_bytes(pickle.dumps({"x": 1}))


def _truncate(folder):
    data = (folder / "adapter_model.safetensors").read_bytes()
    (folder / "adapter_model.safetensors").write_bytes(data[:40])


def _wrong_rank(folder):
    cfg = json.loads((folder / "adapter_config.json").read_text())
    cfg["r"] = 16
    (folder / "adapter_config.json").write_text(json.dumps(cfg))


def _other_model(folder):
    cfg = json.loads((folder / "adapter_config.json").read_text())
    cfg["target_modules"] = ["query", "value"]
    (folder / "adapter_config.json").write_text(json.dumps(cfg))


@pytest.mark.parametrize(
    ("spoil", "message"),
    [(_bad_pickle, "never unpickles"), (_truncate, "not a readable safetensors"),
     (_wrong_rank, "shape mismatch"), (_other_model, "'query' matches no module")],
)
def test_bad_adapters_give_one_line_errors(tiny_llama_dir, llama_adapter, spoil, message):
    spoil(llama_adapter)
    res = run_cli("inspect", str(tiny_llama_dir), "--adapter", str(llama_adapter))
    assert res.returncode != 0
    assert "Traceback" not in res.stderr
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and message in lines[0], res.stderr


def test_pattern_matching_nothing(tiny_llama_dir):
    res = run_cli("inspect", str(tiny_llama_dir), "--targets", "nothing_here")
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert res.stderr.strip() == (
        "error: target 'nothing_here' matches no module; presets: qv, attention, ffn, all-linear; "
        "a suffix like 'q_proj' or a regex like 're:.*attn.*' (see `lorakit inspect MODEL`)"
    )


def test_help_works_for_every_command():
    res = run_cli("--help")
    assert res.returncode == 0 and "inspect" in res.stdout
    for command in ("inspect", "merge"):
        res = run_cli(command, "--help")
        assert res.returncode == 0 and "usage: lorakit " + command in res.stdout


@pytest.mark.slow
@pytest.mark.parametrize(
    ("model", "targets", "modules", "params"),
    [("minilm", "qv", 12, 73_728), ("smollm2", "qv", 60, 460_800), ("smollm2", "all-linear", 210, 2_442_240)],
)
def test_inspect_real_models(model, targets, modules, params, capsys):
    assert main(["inspect", model, "--targets", targets, "--rank", "8", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["modules"] == modules and out["lora_params"] == params
    assert not any(r["module"].endswith("lm_head") for r in out["rows"])


def test_merge_accepts_a_peft_written_adapter(tiny_llama_dir, tmp_path, capsys):
    peft = pytest.importorskip("peft")
    from transformers import AutoModelForCausalLM

    pm = peft.get_peft_model(tiny_llama(), peft.LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "down_proj"]))
    with torch.no_grad():
        for name, p in pm.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.2)
    pm.save_pretrained(tmp_path / "peft-adapter")
    ids = torch.tensor([[5, 6, 7, 8, 9]])
    expected = pm.eval()(input_ids=ids).logits
    out = tmp_path / "merged"
    assert main(["merge", str(tiny_llama_dir), "--adapter", str(tmp_path / "peft-adapter"), "--out", str(out)]) == 0
    merged = AutoModelForCausalLM.from_pretrained(out).eval()
    torch.testing.assert_close(merged(input_ids=ids).logits, expected, rtol=1e-5, atol=1e-5)

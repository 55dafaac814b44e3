"""The adapters published under adapters/: valid PEFT folders with a card, and they reproduce their card.

The fast tests check every folder (files, size, config, card); the slow ones re-run each card's
``lorakit eval`` command on the real minilm and serve the E2E adapter from ``adapters/smollm2`` the way
the README shows, comparing the server's greedy text with the adapter loaded straight into the model.
"""

from __future__ import annotations

import copy
import json
import re
import shlex
from pathlib import Path

import pytest

from lorakit.io import read_adapter

REPO = Path(__file__).resolve().parents[2]
ADAPTERS = REPO / "adapters"
PUBLISHED = sorted(p.parent for p in ADAPTERS.glob("*/*/adapter_config.json"))
EXPECTED = {("minilm", "sst2"), ("minilm", "trec"), ("minilm", "subj"), ("smollm2", "e2e")}


def _card(folder: Path) -> tuple[list[str], dict[str, float]]:
    """The card's ``lorakit eval`` arguments and its metrics table."""
    text = (folder / "README.md").read_text(encoding="utf-8")
    command = re.search(r"^ {4}\.venv/bin/lorakit eval (.+)$", text, re.M)
    assert command, f"{folder}: the card shows no lorakit eval command"
    metrics = {k: float(v) for k, v in re.findall(r"^\| (\w+) \| ([0-9.]+) \|$", text, re.M)}
    return shlex.split(command.group(1)), metrics


def test_every_expected_adapter_is_published() -> None:
    assert {(p.parent.name, p.name) for p in PUBLISHED} >= EXPECTED


@pytest.mark.parametrize("folder", PUBLISHED, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_published_adapter_is_a_small_valid_peft_folder_with_a_card(folder: Path) -> None:
    adapter = read_adapter(folder)  # PEFT layout, safetensors, config validated
    size = (folder / "adapter_model.safetensors").stat().st_size
    assert size < 2 * 2**20
    assert adapter.config.r >= 1 and adapter.tensors
    args, metrics = _card(folder)
    assert args[:2] == [folder.parent.name, folder.name] and args[args.index("--adapter") + 1] == str(
        folder.relative_to(REPO))
    assert metrics and all(v > 0 for v in metrics.values())
    config = json.loads((folder / "adapter_config.json").read_text())
    assert config["peft_type"] == "LORA" and config["task_type"] in ("SEQ_CLS", "CAUSAL_LM")


@pytest.mark.slow
@pytest.mark.parametrize("folder", [p for p in PUBLISHED if p.parent.name == "minilm"], ids=lambda p: p.name)
def test_minilm_card_is_reproduced_by_its_eval_command(folder: Path, tmp_path, monkeypatch) -> None:
    from lorakit.cli.main import main

    args, metrics = _card(folder)
    monkeypatch.chdir(REPO)
    out = tmp_path / "eval.json"
    assert main(["eval", *args, "--json", str(out), "--no-progress"]) == 0
    measured = json.loads(out.read_text())["metrics"]
    for name, value in metrics.items():
        assert measured[name] == pytest.approx(value, abs=5e-5), name  # the card rounds to 4 decimals


@pytest.mark.slow
def test_smollm2_adapters_folder_serves_the_e2e_adapter_like_the_adapter_loaded_directly() -> None:
    from lorakit.data.batches import encode_prompt
    from lorakit.io import load_adapter
    from lorakit.models import load_model
    from lorakit.serve import LoraServer, SamplingParams
    from lorakit.train.evaluate import generate_texts

    loaded = load_model("smollm2")
    reference = copy.deepcopy(loaded.model)
    load_adapter(reference, ADAPTERS / "smollm2" / "e2e")
    mr = "Describe this restaurant in one sentence: name[The Eagle], eatType[pub], food[Italian], area[riverside]"
    ids = encode_prompt(loaded.tokenizer, mr, True)
    expected = generate_texts(reference.eval(), loaded.tokenizer, [ids], max_new_tokens=32)[0]

    server = LoraServer(loaded.model, loaded.tokenizer, name="smollm2", adapters_dir=ADAPTERS / "smollm2")
    try:
        assert "e2e" in server.available()
        tuned, base = server.generate_ids([ids, ids], ["e2e", None], SamplingParams(max_tokens=32))
    finally:
        server.close()
    assert tuned.text.strip() == expected.strip()
    assert tuned.text != base.text and "The Eagle" in tuned.text

"""TrainConfig and config files: TOML and YAML parse, unknown keys and bad values are named errors."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from lorakit.train.config import DEFAULT_LR, TrainConfig, load_config


def test_every_field_is_documented() -> None:
    for f in dataclasses.fields(TrainConfig):
        assert f.metadata.get("help"), f"{f.name} has no help text"


def test_toml_and_yaml_give_the_same_config(tmp_path: Path) -> None:
    toml = tmp_path / "run.toml"
    toml.write_text('model = "minilm"\ndata = "sst2"\ntargets = ["query", "value"]\nrank = 4\n'
                    'max-steps = 10\nlr = 1e-3\nalpha = 8\n')
    yaml = tmp_path / "run.yaml"
    yaml.write_text("model: minilm\ndata: sst2\ntargets: [query, value]\nrank: 4\nmax_steps: 10\n"
                    "lr: 0.001\nalpha: 8\n")
    a, b = load_config(toml), load_config(yaml)
    assert a == b
    assert a.targets == ("query", "value") and a.max_steps == 10 and a.alpha == 8.0


def test_overrides_win_over_the_file(tmp_path: Path) -> None:
    path = tmp_path / "run.yml"
    path.write_text("rank: 4\nseed: 1\n")
    assert load_config(path, {"seed": 7}).seed == 7
    assert load_config(path, {"seed": 7}).rank == 4


@pytest.mark.parametrize(("text", "match"), [
    ("rnak = 4\n", "unknown option 'rnak'.*did you mean 'rank'"),
    ('rank = "8"\n', "rank must be int"),
    ("rank = 0\n", "rank r must be a positive integer"),
    ("dropout = 1.5\n", "dropout must be in"),
    ("label_smoothing = 1.0\n", r"label_smoothing must be in \[0.0, 1.0\)"),
    ('task = "regress"\n', "task must be one of"),
    ("full = true\nbitfit = true\n", "one of --full and --bitfit"),
    ("batch_size = 10\ngrad_accum = 3\n", "not divisible"),
    ("[train]\nrank = 4\n", "unknown option 'train'"),
    ("rank = \n", "not valid TOML"),
])
def test_bad_files_raise_naming_the_problem(tmp_path: Path, text: str, match: str) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(ValueError, match=match):
        load_config(path)


def test_unsupported_suffix_and_missing_file(tmp_path: Path) -> None:
    (tmp_path / "run.json").write_text("{}")
    with pytest.raises(ValueError, match=r"\.toml, \.yaml or \.yml"):
        load_config(tmp_path / "run.json")
    with pytest.raises(ValueError, match="not found"):
        load_config(tmp_path / "absent.toml")


def test_resolve_fills_task_defaults() -> None:
    cfg = TrainConfig(model="minilm", data="sst2").resolve("classify", "minilm", "sst2")
    assert cfg.lr == DEFAULT_LR[("lora", "classify")] and cfg.max_length == 64 and cfg.test_split == "dev"
    assert cfg.out == "runs/minilm-sst2"
    full = TrainConfig(full=True, lr=None).resolve("generate", "smollm2", "e2e")
    assert full.lr == DEFAULT_LR[("full", "generate")] and full.out == "runs/smollm2-e2e-full"
    with pytest.raises(ValueError, match="task is classify"):
        TrainConfig(task="generate").resolve("classify", "minilm", "sst2")


def test_batch_size_defaults_by_task_and_fits_grad_accum() -> None:
    # Generation: batch 8 at lr 1e-3, the setting the E2E search found best; classification keeps 32.
    gen = TrainConfig().resolve("generate", "smollm2", "e2e")
    assert (gen.batch_size, gen.lr) == (8, 1e-3)
    assert TrainConfig().resolve("classify", "minilm", "sst2").batch_size == 32
    assert TrainConfig(grad_accum=3).resolve("generate", "smollm2", "e2e").batch_size == 9  # rounded up
    assert TrainConfig(batch_size=12).resolve("generate", "smollm2", "e2e").batch_size == 12  # given: kept
    with pytest.raises(ValueError, match="not divisible"):
        TrainConfig(batch_size=10, grad_accum=3)


def test_list_options_take_commas_as_the_cli_does(tmp_path: Path) -> None:
    path = tmp_path / "run.toml"
    path.write_text('targets = "query,value"\nreport_to = ["tensorboard", "mlflow"]\nrank_pattern = "query=4,value=2"\n')
    cfg = load_config(path)
    assert cfg.targets == ("query", "value") and cfg.report_to == ("tensorboard", "mlflow")
    assert cfg.variant_options()["rank_pattern"] == {"query": 4, "value": 2}
    assert TrainConfig(targets=("c_attn[q,v]",)).targets == ("c_attn[q,v]",)  # a fused slice keeps its comma

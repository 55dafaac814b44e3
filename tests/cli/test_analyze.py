"""`lorakit analyze subspace|spectrum|amplification` and `lorakit combine` on adapters written directly."""

from __future__ import annotations

import json
import warnings

import pytest
import torch

from lorakit.analysis import amplification, phi_grid
from lorakit.cli import analyze as analyze_cli
from lorakit.cli.main import main
from lorakit.io import AdapterConfig, read_adapter, write_adapter
from lorakit.io.keys import peft_key

D = 16
MODULES = [f"bert.encoder.layer.{i}.attention.self.{m}" for i in range(2) for m in ("query", "value")]


def _write(folder, r, seed, modules=MODULES, alpha=None, extra=None, **cfg):
    """An adapter with random A and B of rank r on ``modules`` (d = 16), written in PEFT's layout."""
    g = torch.Generator().manual_seed(seed)
    tensors = {}
    for path in modules:
        tensors[peft_key(path, "lora_A")] = torch.randn(r, D, generator=g)
        tensors[peft_key(path, "lora_B")] = torch.randn(D, r, generator=g)
    tensors.update(extra or {})
    config = AdapterConfig(r=r, lora_alpha=alpha or 2 * r, target_modules=["query", "value"], **cfg)
    return write_adapter(folder, config, tensors)


def _delta(folder, path):
    return read_adapter(folder).factors()[path].delta_weight().double()


def test_subspace_table_json_and_plot(tmp_path, capsys):
    a, b = _write(tmp_path / "a", 4, seed=0), _write(tmp_path / "b", 8, seed=1)
    code = main(["analyze", "subspace", str(a), str(b), "--json", str(tmp_path / "phi.json"),
                 "--plot", str(tmp_path / "phi.png")])
    assert code == 0
    out = capsys.readouterr().out
    assert MODULES[0] in out and "chance" in out and "φ(1, j), j = 1..8" in out
    data = json.loads((tmp_path / "phi.json").read_text())
    record = data["modules"][MODULES[0]]
    assert (record["d"], record["r1"], record["r2"]) == (D, 4, 8)
    expected = phi_grid(read_adapter(a).factors()[MODULES[0]].A, read_adapter(b).factors()[MODULES[0]].A)
    assert torch.allclose(torch.tensor(record["phi"], dtype=torch.float64), expected)
    assert record["chance_first_row"][-1] == pytest.approx(8 / D)
    assert (tmp_path / "phi.png").read_bytes()[:4] == b"\x89PNG"


def test_subspace_json_to_stdout_selects_modules_and_notes_unshared_ones(tmp_path, capsys):
    a = _write(tmp_path / "a", 4, seed=0)
    b = _write(tmp_path / "b", 4, seed=1, modules=MODULES[:3])
    assert main(["analyze", "subspace", str(a), str(b), "--matrix", "B", "--modules", r"\.query$", "--json"]) == 0
    captured = capsys.readouterr()
    data = json.loads(captured.out)  # stdout holds the JSON alone
    assert data["matrix"] == "B" and sorted(data["modules"]) == [MODULES[0], MODULES[2]]
    assert main(["analyze", "subspace", str(a), str(b), "--json"]) == 0
    assert "adapted by adapter 1 only" in capsys.readouterr().err


def test_spectrum_table_json_and_plot(tmp_path, capsys):
    a = _write(tmp_path / "a", 4, seed=0)
    assert main(["analyze", "spectrum", str(a), "--json", str(tmp_path / "s.json"),
                 "--plot", str(tmp_path / "s.png"), "--threshold", "0.8"]) == 0
    assert "eff. rank" in capsys.readouterr().out
    data = json.loads((tmp_path / "s.json").read_text())["modules"][MODULES[1]]
    expected = torch.linalg.svdvals(_delta(a, MODULES[1]))[:4]
    assert torch.allclose(torch.tensor(data["singular_values"], dtype=torch.float64), expected, rtol=1e-5)
    assert data["threshold"] == 0.8 and (tmp_path / "s.png").stat().st_size > 10_000


def test_amplification_strips_a_prefix_the_base_model_lacks(tmp_path, capsys, monkeypatch):
    # A bare encoder (no "bert." in its paths), as AutoModel gives for a PEFT classification adapter.
    layer = torch.nn.Module()
    layer.attention = torch.nn.Module()
    layer.attention.self = torch.nn.Module()
    layer.attention.self.query = torch.nn.Linear(D, D)
    layer.attention.self.value = torch.nn.Linear(D, D)
    model = torch.nn.Module()
    model.encoder = torch.nn.Module()
    model.encoder.layer = torch.nn.ModuleList([layer, layer])
    monkeypatch.setattr(analyze_cli, "load_base_model", lambda name, adapter: model)
    a = _write(tmp_path / "a", 2, seed=3)
    assert main(["analyze", "amplification", "tiny", str(a), "--json", str(tmp_path / "amp.json")]) == 0
    out = capsys.readouterr().out
    assert "note: bert.encoder.layer.0.attention.self.query: not in the model; used encoder.layer.0" in out
    got = json.loads((tmp_path / "amp.json").read_text())["modules"][MODULES[1]]
    want = amplification(layer.attention.self.value.weight, _delta(a, MODULES[1]), rank=2)
    assert got["amplification"] == pytest.approx(want.amplification, rel=1e-5)
    assert got["projection_weight"] == pytest.approx(want.projection_weight, rel=1e-6)
    monkeypatch.setattr(analyze_cli, "load_base_model", lambda name, adapter: torch.nn.Linear(2, 2))
    assert main(["analyze", "amplification", "tiny", str(a)]) == 2
    assert "has no module" in capsys.readouterr().err


def test_combine_svd_at_full_rank_and_concat_are_exact(tmp_path, capsys):
    a = _write(tmp_path / "a", 2, seed=0)
    b = _write(tmp_path / "b", 3, seed=1, modules=MODULES[:2], alpha=3)  # scaling 1 vs a's 2
    want = {p: 0.7 * _delta(a, p) + (0.3 * _delta(b, p) if p in MODULES[:2] else 0) for p in MODULES}
    assert main(["combine", f"{a}:0.7", f"{b}:0.3", "--rank", "5", "--out", str(tmp_path / "svd")]) == 0
    assert main(["combine", f"{a}:0.7", f"{b}:0.3", "--method", "concat", "--out", str(tmp_path / "cat")]) == 0
    assert "does not adapt 2 module(s)" in capsys.readouterr().out
    for name, ranks in (("svd", dict.fromkeys(MODULES, 5)), ("cat", {p: 5 if p in MODULES[:2] else 2 for p in MODULES})):
        combined = read_adapter(tmp_path / name)
        factors = combined.factors()
        assert {p: f.rank for p, f in factors.items()} == ranks
        assert all(f.scaling == 1.0 for f in factors.values())
        for p in MODULES:
            torch.testing.assert_close(factors[p].delta_weight().double(), want[p], atol=1e-5, rtol=1e-5)
    cfg = read_adapter(tmp_path / "cat").config
    assert cfg.r == 5 and cfg.lora_alpha == 5 and set(cfg.rank_pattern.values()) == {2}


def test_combined_adapter_loads_in_peft_with_its_rank_pattern(tmp_path):
    peft = pytest.importorskip("peft")
    from tests.conftest import tiny_bert

    hidden = 32
    paths = [f"encoder.layer.{i}.attention.self.{m}" for i in range(2) for m in ("query", "value")]
    g = torch.Generator().manual_seed(0)

    def write(folder, r, modules):
        tensors = {}
        for p in modules:
            tensors[peft_key(p, "lora_A")] = torch.randn(r, hidden, generator=g)
            tensors[peft_key(p, "lora_B")] = torch.randn(hidden, r, generator=g) * 0.1
        return write_adapter(folder, AdapterConfig(r=r, lora_alpha=r, target_modules=["query", "value"]), tensors)

    a, b = write(tmp_path / "a", 2, paths), write(tmp_path / "b", 4, paths[:1])
    assert main(["combine", f"{a}:0.5", f"{b}:2", "--method", "concat", "--out", str(tmp_path / "c")]) == 0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pm = peft.PeftModel.from_pretrained(tiny_bert(), tmp_path / "c")
    base = tiny_bert()
    for p in paths:
        module = pm.base_model.model.get_submodule(p)
        want = 0.5 * _delta(a, p) + (2 * _delta(b, p) if p == paths[0] else 0)
        torch.testing.assert_close(module.get_delta_weight("default").double(), want, atol=1e-5, rtol=1e-5)
        assert torch.equal(module.base_layer.weight, base.get_submodule(p).weight)


def test_combine_full_weight_tensors_and_bad_input(tmp_path, capsys):
    head = "base_model.model.classifier.weight"
    a = _write(tmp_path / "a", 2, seed=0, extra={head: torch.zeros(2, D)}, modules_to_save=["classifier"])
    b = _write(tmp_path / "b", 2, seed=1, extra={head: torch.ones(2, D)}, modules_to_save=["classifier"])
    out = str(tmp_path / "c")
    assert main(["combine", str(a), str(b), "--rank", "2", "--out", out]) == 2
    assert "--saved-from" in capsys.readouterr().err
    assert main(["combine", str(a), str(b), "--rank", "2", "--out", out, "--saved-from", "2"]) == 0
    assert torch.equal(read_adapter(out).tensors[head], torch.ones(2, D))
    assert read_adapter(out).config.modules_to_save == ["classifier"]
    capsys.readouterr()
    for args, message in (
        ([str(a), "--rank", "2", "--out", str(a)], "is one of the input adapters"),
        ([str(a), "--out", str(tmp_path / "d")], "needs --rank"),
        ([str(a), "--method", "concat", "--rank", "2", "--out", str(tmp_path / "d")], "svd only"),
        ([f"{a}:heavy", "--rank", "2", "--out", str(tmp_path / "d")], "bad adapter weight"),
        ([str(a), "--rank", "2", "--out", out], "not empty"),
    ):
        assert main(["combine", *args]) == 2
        assert message in capsys.readouterr().err


def test_subspace_plot_labels_name_the_runs_not_their_adapter_folders(tmp_path, monkeypatch, capsys):
    from lorakit.analysis import plots

    a = _write(tmp_path / "run-r4" / "adapter", 4, seed=0)
    b = _write(tmp_path / "run-r8" / "adapter", 8, seed=1)
    seen = []
    real = plots.plot_subspace

    def spy(*args, **kwargs):
        seen.append((kwargs["labels"], kwargs["title"]))
        return real(*args, **kwargs)

    monkeypatch.setattr(plots, "plot_subspace", spy)
    for extra in ([], ["--labels", "r=4,r=8"]):
        assert main(["analyze", "subspace", str(a), str(b), "--plot", str(tmp_path / "phi.png"), *extra]) == 0
    assert seen[0][0] == ("run-r4", "run-r8") and seen[1][0] == ("r=4", "r=8") and "r=4 vs r=8" in seen[1][1]
    assert main(["analyze", "subspace", str(a), str(b), "--plot", str(tmp_path / "x.png"), "--labels", "one"]) == 2
    assert "--labels must be two names" in capsys.readouterr().err

"""lorakit train-many: each job equals its solo `lorakit train` run; faults stay inside their job."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from lorakit.cli.main import main
from lorakit.train.config import TrainConfig
from lorakit.train.many import train_many
from lorakit.train.many.jobs import jobs_from_mapping
from lorakit.train.runner import run_training

COMMON = dict(batch_size=8, max_length=16, progress=False, threads=1, lr=5e-3, max_steps=4, base_eval=False,
              eval_limit=4, max_new_tokens=4, device="cpu", base_dtype="fp32")


def _adapter(folder: Path) -> dict[str, torch.Tensor]:
    return load_file(str(folder / "adapter" / "adapter_model.safetensors"))


def _assert_parity(model: Path, jobs: dict[str, dict], root: Path, max_rows: int | str = "all") -> None:
    """Every job of one train-many run (by default all jobs in one mixed forward) equals its solo run."""
    cfgs = {n: TrainConfig.from_mapping({**COMMON, "model": str(model), **j}) for n, j in jobs.items()}
    results = train_many(cfgs, root / "many", progress=False, max_rows=max_rows)
    assert all("error" not in m for m in results.values()), results
    for name, cfg in cfgs.items():
        run_training(dataclasses.replace(cfg, out=str(root / "solo" / name)))
        many, solo = _adapter(root / "many" / name), _adapter(root / "solo" / name)
        assert many.keys() == solo.keys(), name
        for key in solo:
            torch.testing.assert_close(many[key], solo[key], rtol=0, atol=1e-5, msg=f"{name} {key}")
        assert any(solo[k].abs().max() > 1e-3 for k in solo if "lora_B" in k)  # it trained: a real comparison
        files = {p.name for p in (root / "many" / name).iterdir()}
        assert {"adapter", "metrics.json", "log.jsonl", "loss.png", "checkpoint"} <= files
        m_many = json.loads((root / "many" / name / "metrics.json").read_text())
        m_solo = json.loads((root / "solo" / name / "metrics.json").read_text())
        assert m_many["best_step"] == m_solo["best_step"] and m_many["step"] == m_solo["step"]


def test_classify_jobs_equal_their_solo_runs(tiny_dirs, tmp_path: Path) -> None:
    data = str(tiny_dirs["cls_data"])
    _assert_parity(tiny_dirs["bert"], {
        "r4-qv": dict(data=data, rank=4, targets=("query", "value"), seed=0, dropout=0.1),
        "r8-qkd": dict(data=data, rank=8, targets=("query", "key", "dense"), seed=1, lr=1e-2, batch_size=4),
        "r4-v": dict(data=data, rank=4, targets=("value",), seed=2, max_steps=2, grad_accum=2),
        "r4-v-ls": dict(data=data, rank=4, targets=("value",), seed=2, max_steps=2, label_smoothing=0.2),
        "r4-v-plain": dict(data=data, rank=4, targets=("value",), seed=2, max_steps=2),
    }, tmp_path)
    plain, smoothed = _adapter(tmp_path / "solo" / "r4-v-plain"), _adapter(tmp_path / "solo" / "r4-v-ls")
    assert any(not torch.equal(plain[k], smoothed[k]) for k in plain)  # the one difference, smoothing, took effect


def test_generate_jobs_equal_their_solo_runs(tiny_dirs, tmp_path: Path) -> None:
    data = str(tiny_dirs["gen_data"])
    _assert_parity(tiny_dirs["llama"], {
        "r4-qv": dict(data=data, rank=4, targets=("q_proj", "v_proj"), seed=0, dropout=0.1),
        "r16-all": dict(data=data, rank=16, targets=("all-linear",), seed=1, batch_size=4, max_steps=3),
        "r4-qv-ls": dict(data=data, rank=4, targets=("q_proj", "v_proj"), seed=0, dropout=0.1, label_smoothing=0.1),
    }, tmp_path)
    plain, smoothed = _adapter(tmp_path / "solo" / "r4-qv"), _adapter(tmp_path / "solo" / "r4-qv-ls")
    assert any(not torch.equal(plain[k], smoothed[k]) for k in plain)  # the one difference, smoothing, took effect


def test_checkpointed_jobs_with_dropout_equal_their_solo_runs(tiny_dirs, tmp_path: Path) -> None:
    # Recomputed blocks must replay each job's rows and its own dropout stream (not the advanced one).
    data = str(tiny_dirs["gen_data"])
    _assert_parity(tiny_dirs["llama"], {
        "r4-qv": dict(data=data, rank=4, targets=("q_proj", "v_proj"), seed=0, dropout=0.2, checkpointing=True),
        "r8-all": dict(data=data, rank=8, targets=("all-linear",), seed=1, batch_size=4, dropout=0.1,
                       checkpointing=True),
    }, tmp_path)


@pytest.mark.parametrize("lora_dropout", [0.0, 0.1])
def test_jobs_over_a_base_with_dropout_equal_their_solo_runs(tiny_dirs, tmp_path: Path, lora_dropout: float) -> None:
    # BERT's own dropout 0.1 (as the real one): each job's base masks must come from its own stream.
    data = str(tiny_dirs["cls_data"])
    _assert_parity(tiny_dirs["bert_dropout"], {
        "r4-qv": dict(data=data, rank=4, targets=("query", "value"), seed=0, dropout=lora_dropout, max_steps=8),
        "r8-v": dict(data=data, rank=8, targets=("value",), seed=1, batch_size=4, dropout=lora_dropout,
                     grad_accum=2, max_steps=8),
    }, tmp_path)


@pytest.mark.parametrize("lora_dropout", [0.0, 0.1])
def test_generate_jobs_over_a_base_with_dropout_equal_their_solo_runs(tiny_dirs, tmp_path: Path,
                                                                      lora_dropout: float) -> None:
    # Llama's attention dropout 0.1; checkpointed blocks must replay the job's stream on recompute.
    data = str(tiny_dirs["gen_data"])
    _assert_parity(tiny_dirs["llama_dropout"], {
        "r4-qv": dict(data=data, rank=4, targets=("q_proj", "v_proj"), seed=0, dropout=lora_dropout, max_steps=6,
                      checkpointing=True),
        "r8-all": dict(data=data, rank=8, targets=("all-linear",), seed=1, batch_size=4, dropout=lora_dropout,
                       max_steps=6, checkpointing=True),
    }, tmp_path)


def test_a_base_that_draws_never_mixes_jobs_in_one_forward(tiny_dirs, tmp_path: Path, monkeypatch) -> None:
    # The first mixed forward reveals the base's dropout; every later forward holds one job's rows.
    from lorakit.train.many import runner

    seen: list[int] = []
    losses = runner._losses
    monkeypatch.setattr(runner, "_losses", lambda parts, *a: seen.append(len(parts)) or losses(parts, *a))
    data = str(tiny_dirs["cls_data"])
    cfgs = {n: TrainConfig.from_mapping({**COMMON, "model": str(tiny_dirs["bert_dropout"]), "data": data,
                                         "rank": 4, "seed": i, "max_steps": 3}) for i, n in enumerate("ab")}
    assert all("error" not in m for m in train_many(cfgs, tmp_path, progress=False, max_rows="all").values())
    assert seen == [2] + [1] * 6  # one thrown-away mixed forward, then 3 steps × 2 jobs alone


def test_a_mixed_forward_builds_its_row_plan_once_for_all_layers(tiny_dirs, tmp_path: Path, monkeypatch) -> None:
    # Every adapted layer of a forward has the same jobs at the same ranks: one row plan serves them all.
    from lorakit.train.many import model as many_model

    built, grouped = [], []
    row_plan, rank_groups = many_model.row_plan, many_model.rank_groups
    monkeypatch.setattr(many_model, "row_plan", lambda *a: built.append(1) or row_plan(*a))
    monkeypatch.setattr(many_model, "rank_groups", lambda *a: grouped.append(1) or rank_groups(*a))
    data = str(tiny_dirs["gen_data"])
    cfgs = {n: TrainConfig.from_mapping({**COMMON, "model": str(tiny_dirs["llama"]), "data": data, "rank": r,
                                         "targets": ("q_proj", "v_proj"), "seed": i, "max_steps": 2})
            for i, (n, r) in enumerate((("a", 4), ("b", 8)))}
    assert all("error" not in m for m in train_many(cfgs, tmp_path, progress=False, max_rows="all").values())
    layers = len(_adapter(tmp_path / "a")) // 2  # adapted modules (an A and a B each)
    assert layers > 1 and len(built) > 0
    assert len(grouped) == layers * len(built)  # every layer of a mixed forward, one plan for them all


def test_capped_forwards_give_the_same_adapters(tiny_dirs, tmp_path: Path) -> None:
    # --max-rows 8: the 8-row job runs alone, the two 4-row jobs share a forward.
    data = str(tiny_dirs["cls_data"])
    _assert_parity(tiny_dirs["bert"], {
        "r4-qv": dict(data=data, rank=4, targets=("query", "value"), seed=0, dropout=0.1),
        "r8-v": dict(data=data, rank=8, targets=("value",), seed=1, batch_size=4),
        "r2-q": dict(data=data, rank=2, targets=("query",), seed=2, batch_size=4),
    }, tmp_path, max_rows=8)


def test_row_chunks_keep_whole_jobs_in_order() -> None:
    from lorakit.train.many.runner import resolve_max_rows, row_chunks

    parts = [(name, {"input_ids": torch.zeros(n, 3)}) for name, n in (("a", 8), ("b", 4), ("c", 4), ("d", 16))]
    assert [[p[0] for p in c] for c in row_chunks(parts, 8)] == [["a"], ["b", "c"], ["d"]]
    assert [[p[0] for p in c] for c in row_chunks(parts, None)] == [["a", "b", "c", "d"]]
    cfgs = [TrainConfig(batch_size=32), TrainConfig(batch_size=64, grad_accum=4)]
    assert resolve_max_rows("auto", torch.device("cpu"), cfgs) == 32  # the largest micro-batch
    assert resolve_max_rows(None, torch.device("cpu"), cfgs) == 32
    assert resolve_max_rows("auto", torch.device("cuda"), cfgs) is None and resolve_max_rows("all", None, cfgs) is None
    with pytest.raises(ValueError, match="positive number of rows, 'auto' or 'all'"):
        resolve_max_rows(0, torch.device("cpu"), cfgs)


def test_jobs_file_errors_name_the_job() -> None:
    base = {"model": "m", "data": "d"}
    with pytest.raises(ValueError, match="one \\[\\[job\\]\\] table"):
        jobs_from_mapping(base)
    with pytest.raises(ValueError, match="used twice"):
        jobs_from_mapping({**base, "job": [{"name": "a"}, {"name": "a"}]})
    with pytest.raises(ValueError, match="job 1 \\('a'\\): unknown option 'rnak'"):
        jobs_from_mapping({**base, "job": [{"name": "a", "rnak": 4}]})
    with pytest.raises(ValueError, match="base_dtype = 'bf16' differs"):
        jobs_from_mapping({**base, "base_dtype": "fp32", "job": [{"name": "a", "base_dtype": "bf16"}]})
    with pytest.raises(ValueError, match="not supported here: dora"):
        jobs_from_mapping({**base, "job": [{"name": "a", "dora": True}]})
    jobs = jobs_from_mapping({**base, "rank": 2, "job": [{"name": "a"}, {"name": "b", "rank": 8, "data": "e"}]})
    assert (jobs["a"].rank, jobs["b"].rank, jobs["b"].data) == (2, 8, "e")


def _jobs_file(path: Path, model: Path, jobs: list[dict], **top) -> Path:
    lines = [f"{k} = {json.dumps(v)}" for k, v in {"model": str(model), "batch_size": 8, "max_length": 16,
                                                    "base_eval": False, "base_dtype": "fp32", "threads": 1,
                                                    "lr": 5e-3, "device": "cpu", **top}.items()]
    for job in jobs:
        lines += ["[[job]]"] + [f"{k} = {json.dumps(v)}" for k, v in job.items()]
    path.write_text("\n".join(lines) + "\n")
    return path


def test_a_malformed_data_file_fails_its_job_alone(tiny_dirs, tmp_path: Path, capsys) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "good film", "label": 1}\n{"text": "bad film", "label": 0}\n{"text": oops\n')
    jobs = _jobs_file(tmp_path / "jobs.toml", tiny_dirs["bert"], [
        {"name": "ok", "data": str(tiny_dirs["cls_data"]), "rank": 4, "max_steps": 2},
        {"name": "broken", "data": str(bad), "rank": 8, "max_steps": 2},
        {"name": "ok2", "data": str(tiny_dirs["cls_data"]), "rank": 2, "max_steps": 3}])
    assert main(["train-many", str(jobs), "--out", str(tmp_path / "out"), "--no-progress"]) == 1
    err = capsys.readouterr().err
    assert "job 'broken'" in err and f"{bad}:3" in err, err
    summary = json.loads((tmp_path / "out" / "train_many.json").read_text())["jobs"]
    assert f"{bad}:3" in summary["broken"]["error"]
    for name in ("ok", "ok2"):
        assert (tmp_path / "out" / name / "adapter" / "adapter_model.safetensors").is_file()
        assert summary[name]["step"] == {"ok": 2, "ok2": 3}[name]


def _checkpoint_step(folder: Path) -> int:
    state = folder / "checkpoint" / "state.json"
    try:
        return json.loads(state.read_text())["state"]["step"]
    except (OSError, ValueError, KeyError):
        return 0


@pytest.mark.parametrize("model", ["llama", "llama_dropout"])  # a base without, then with, its own dropout
def test_sigkill_then_resume_gives_the_same_adapters_bitwise(tiny_dirs, tmp_path: Path, model: str) -> None:
    jobs = _jobs_file(tmp_path / "jobs.toml", tiny_dirs[model], [
        {"name": "a", "data": str(tiny_dirs["gen_data"]), "rank": 4, "dropout": 0.1},
        {"name": "b", "data": str(tiny_dirs["gen_data"]), "rank": 8, "seed": 3, "targets": ["all-linear"],
         "batch_size": 4}], max_steps=8, checkpoint_every=1, eval_every=4, eval_limit=2, max_new_tokens=2)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).parents[3] / "src"),
                                                        os.environ.get("PYTHONPATH", "")])}
    argv = [sys.executable, "-m", "lorakit", "train-many", str(jobs), "--no-progress"]
    reference = train_many(jobs, tmp_path / "ref", progress=False)  # uninterrupted, in this process
    assert all("error" not in m for m in reference.values()), reference
    killed = tmp_path / "killed"
    proc = subprocess.Popen([*argv, "--out", str(killed)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 300
    while _checkpoint_step(killed / "a") < 3 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the run ended before the kill"
    assert not (killed / "a" / "adapter").exists()
    resumed = subprocess.run([*argv, "--out", str(killed), "--resume"], env=env, capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    for name in ("a", "b"):
        ref, got = _adapter(tmp_path / "ref" / name), _adapter(killed / name)
        assert ref.keys() == got.keys() and all(torch.equal(ref[k], got[k]) for k in ref), name


@pytest.mark.slow
def test_smollm2_jobs_equal_their_solo_runs(data_root: Path, tmp_path: Path) -> None:
    """The real causal LM (no dropout in its base, so the comparison is exact) on E2E, two ranks."""
    data = "e2e"
    jobs = {"r4": dict(data=data, rank=4, seed=0), "r16": dict(data=data, rank=16, seed=1, targets=("all-linear",))}
    cfgs = {n: TrainConfig.from_mapping({**COMMON, "model": "smollm2", "batch_size": 4, "max_length": 48,
                                         "max_steps": 2, "eval_every": 0, "eval_limit": 2, "lr": 2e-4,
                                         "data_root": str(data_root), **j}) for n, j in jobs.items()}
    assert all("error" not in m for m in train_many(cfgs, tmp_path / "many", progress=False).values())
    run_training(dataclasses.replace(cfgs["r16"], out=str(tmp_path / "solo")))  # one solo run keeps it short
    many, solo = _adapter(tmp_path / "many" / "r16"), _adapter(tmp_path / "solo")
    for key in solo:
        torch.testing.assert_close(many[key], solo[key], rtol=0, atol=1e-5, msg=key)


@pytest.mark.slow
@pytest.mark.parametrize("lora_dropout", [0.0, 0.1])
def test_minilm_jobs_equal_their_solo_runs(data_root: Path, tmp_path: Path, lora_dropout: float) -> None:
    """The real minilm on SST-2 and TREC, with its own dropout (0.1) on, fp32: exact to 1e-5."""
    common = {**COMMON, "model": "minilm", "batch_size": 16, "max_length": 32, "max_steps": 8, "eval_every": 0,
              "eval_limit": 16, "data_root": str(data_root), "dropout": lora_dropout}
    cfgs = {"sst2-r4": TrainConfig.from_mapping({**common, "data": "sst2", "rank": 4, "seed": 0}),
            "trec-r16": TrainConfig.from_mapping({**common, "data": "trec", "rank": 16, "seed": 1,
                                                  "targets": ("all-linear",)})}
    assert all("error" not in m for m in train_many(cfgs, tmp_path / "many", progress=False).values())
    for name, cfg in cfgs.items():
        run_training(dataclasses.replace(cfg, out=str(tmp_path / "solo" / name)))
        many, solo = _adapter(tmp_path / "many" / name), _adapter(tmp_path / "solo" / name)
        assert many.keys() == solo.keys()
        for key in solo:
            torch.testing.assert_close(many[key], solo[key], rtol=0, atol=1e-5, msg=f"{name} {key}")

"""Training on your own files: held-out metrics, bad rows, early stopping, trackers, packing (tiny models)."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from lorakit.cli.main import main

FAST = ["--batch-size", "8", "--max-length", "16", "--no-progress", "--threads", "1", "--lr", "5e-3"]


def _my_jsonl(path: Path, n: int = 60, empty_at: int | None = None) -> Path:
    rng = random.Random(0)
    lines = []
    for i in range(n):
        label = rng.randrange(2)
        text = "" if i == empty_at else f"the {rng.choice(['good', 'great'] if label else ['bad', 'dull'])} movie"
        lines.append(json.dumps({"text": text, "label": ["negative", "positive"][label]}))
    path.write_text("\n".join(lines) + "\n")
    return path


def test_a_single_file_reports_metrics_on_a_held_out_split(tiny_dirs, tmp_path: Path, capsys) -> None:
    data = _my_jsonl(tmp_path / "some.jsonl", 60)
    out = tmp_path / "run"
    assert main(["train", str(tiny_dirs["bert"]), str(data), "--out", str(out), "--max-steps", "2", *FAST]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    splits = metrics["data_splits"]
    # Before: the file was its own train, dev and test split, so "test" covered all 60 trained rows.
    assert metrics["test"]["examples"] == 6 and metrics["test_split"] == "dev"
    assert splits["held_out"] is True and splits["eval"]["how"] == "held out" and splits["seed"] == 0
    assert splits["train"]["examples"] == 54 and splits["eval"]["fraction"] == 0.1
    captured = capsys.readouterr()
    assert "10% held out by seed 0, never trained on" in captured.out
    assert "dev (6 examples held out of some.jsonl, never trained on)" in captured.out


def test_eval_on_train_rows_is_possible_only_loudly(tiny_dirs, tmp_path: Path, capsys) -> None:
    data = _my_jsonl(tmp_path / "some.jsonl", 40)
    out = tmp_path / "run"
    assert main(["train", str(tiny_dirs["bert"]), str(data), "--out", str(out), "--max-steps", "1",
                 "--no-base-eval", "--eval-on-train-rows", *FAST]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["data_splits"]["held_out"] is False and metrics["test"]["examples"] == 40
    assert "WARNING" in capsys.readouterr().out


def test_bad_rows_stop_the_run_or_are_skipped_and_reported(tiny_dirs, tmp_path: Path, capsys) -> None:
    data = _my_jsonl(tmp_path / "my.jsonl", 60, empty_at=10)
    args = ["train", str(tiny_dirs["bert"]), str(data), "--max-steps", "1", "--no-base-eval", *FAST]
    assert main([*args, "--out", str(tmp_path / "a")]) == 2
    err = capsys.readouterr().err
    assert f"{data}:11: text must be a non-empty string" in err and "--skip-bad-rows" in err
    assert main([*args, "--out", str(tmp_path / "b"), "--skip-bad-rows"]) == 0
    bad = json.loads((tmp_path / "b" / "metrics.json").read_text())["data_splits"]["bad_rows"]
    assert bad["count"] == 1 and bad["first"][0].startswith(f"{data}:11: ")
    assert "skipped 1 bad row" in capsys.readouterr().out


def test_early_stopping_ends_the_run_and_keeps_the_best(tiny_dirs, tmp_path: Path) -> None:
    out = tmp_path / "run"
    # A rate too small to change the predictions: accuracy cannot improve after the first evaluation.
    assert main(["train", str(tiny_dirs["bert"]), str(tiny_dirs["cls_data"]), "--out", str(out), "--max-steps", "8",
                 "--eval-every", "1", "--early-stopping-patience", "2", "--no-base-eval",
                 *FAST[:-2], "--lr", "1e-12"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["early_stopped"] is True and metrics["step"] == 3 and metrics["best_step"] == 1
    assert metrics["stopped"] == "done" and (out / "adapter").is_dir()


def test_tensorboard_and_mlflow_receive_the_log(tiny_dirs, tmp_path: Path) -> None:
    out = tmp_path / "run"
    assert main(["train", str(tiny_dirs["bert"]), str(tiny_dirs["cls_data"]), "--out", str(out), "--max-steps", "4",
                 "--eval-every", "2", "--log-every", "1", "--no-base-eval", "--report-to", "tensorboard", "mlflow",
                 *FAST]) == 0
    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    train_losses = [r["loss"] for r in log if "loss" in r]
    assert len(train_losses) == 4 and (out / "loss.png").is_file()

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(out / "tensorboard")).Reload()
    tags = set(events.Tags()["scalars"])
    assert {"train/loss", "train/lr", "train/tokens_per_s", "train/memory_mb", "eval/accuracy", "test/accuracy"} <= tags
    assert [e.step for e in events.Scalars("train/loss")] == [1, 2, 3, 4]
    assert [e.value for e in events.Scalars("train/loss")] == pytest.approx(train_losses, rel=1e-6)
    assert [e.step for e in events.Scalars("eval/accuracy")] == [2, 4]

    import os

    os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=(out / "mlruns").resolve().as_uri())
    (run,) = client.search_runs([client.get_experiment_by_name("lorakit").experiment_id])
    assert run.info.status == "FINISHED" and run.data.params["rank"] == "8"
    history = client.get_metric_history(run.info.run_id, "train/loss")
    assert [m.value for m in sorted(history, key=lambda m: m.step)] == pytest.approx(train_losses, rel=1e-6)
    assert "eval/accuracy" in run.data.metrics and "train/memory_mb" in run.data.metrics


def test_packing_trains_generation_with_fewer_rows(tiny_dirs, tmp_path: Path) -> None:
    out = tmp_path / "run"
    assert main(["train", str(tiny_dirs["llama"]), str(tiny_dirs["gen_data"]), "--out", str(out), "--packing",
                 "--max-steps", "2", "--max-length", "64", "--eval-limit", "2", "--max-new-tokens", "4",
                 "--no-base-eval", "--batch-size", "4", "--no-progress", "--threads", "1"]) == 0
    packing = json.loads((out / "metrics.json").read_text())["packing"]
    assert packing["examples"] == 32 and packing["rows"] < 32 and packing["fill"] > 0.5
    assert main(["train", str(tiny_dirs["bert"]), str(tiny_dirs["cls_data"]), "--out", str(tmp_path / "x"),
                 "--packing", *FAST]) == 2


def test_column_options_work_from_a_config_file(tiny_dirs, tmp_path: Path) -> None:
    data = tmp_path / "reviews.csv"
    rng = random.Random(1)
    data.write_text("id,review,stars\n" + "".join(
        f"{i},the {rng.choice(['good', 'bad'])} film,{rng.randrange(2)}\n" for i in range(40)))
    cfg = tmp_path / "run.yaml"
    cfg.write_text(f"model: {tiny_dirs['bert']}\ndata: {data}\ntext-column: review\nlabel_column: stars\n"
                   "max-steps: 1\nbase_eval: false\n")
    out = tmp_path / "run"
    assert main(["train", "--config", str(cfg), "--out", str(out), *FAST]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["config"]["text_column"] == "review" and metrics["data_splits"]["train"]["examples"] == 36


def test_packing_is_refused_for_a_model_whose_attention_crosses_examples() -> None:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from lorakit.data.packing import PackedCollator, pack
    from lorakit.train.run_data import check_packing

    torch.manual_seed(0)
    llama = LlamaForCausalLM(LlamaConfig(vocab_size=32, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                         num_attention_heads=2, num_key_value_heads=1, pad_token_id=0))
    rows = pack([([1, 2, 3, 4], [-100, -100, 3, 4]), ([5, 6, 7], [-100, 6, 7])], 16)
    check_packing(llama, rows, PackedCollator(0))  # honours the restarting positions: passes

    class IgnoresPositions(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.inner = llama

        def forward(self, input_ids, **kwargs):
            return self.inner(input_ids=input_ids)  # one causal sequence: example 2 sees example 1

    with pytest.raises(ValueError, match="attention crosses packed examples"):
        check_packing(IgnoresPositions(), rows, PackedCollator(0))


@pytest.mark.slow
def test_minilm_on_a_single_file_reports_held_out_metrics(tmp_path: Path) -> None:
    """The issue's command on the real model: `lorakit train minilm some.jsonl`."""
    data = _my_jsonl(tmp_path / "some.jsonl", 100)
    out = tmp_path / "run"
    assert main(["train", "minilm", str(data), "--out", str(out), "--max-steps", "2", "--no-base-eval", *FAST]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["test"]["examples"] == 10 and metrics["data_splits"]["eval"]["how"] == "held out"

"""Promise 5 (crashes): training killed at any moment resumes exactly.

``lorakit train`` on a tiny local BERT folder is killed with SIGKILL at random moments — at random
times and while a checkpoint is being written — several times in a row, each restart with
``--resume``. After every kill the checkpoint ``--resume`` will use must be intact (or absent, when
the kill came before the first one), and the final adapter must be bitwise equal to an uninterrupted
run's. SIGTERM must write a checkpoint and exit 0.

Runs are forked from a pre-imported zygote (see ``killkit.py``) so that a kill costs about a second,
not the ~10 s of importing torch and transformers. ``benchmarks/reliability_kill.py`` does many more
kills, and real ``python -m lorakit train`` subprocesses too. ``LORAKIT_KILL_SEED`` replays a run.
"""

from __future__ import annotations

import os
import random
from collections.abc import Iterator
from pathlib import Path

import pytest

from benchmarks.reliability.killkit import Zygote, checkpoint_report

REPO = Path(__file__).resolve().parents[2]
SEED = int(os.environ.get("LORAKIT_KILL_SEED", random.randrange(1 << 30)))
STEPS = 8


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> dict[str, Path]:
    from benchmarks.tiny_models import make_classify_data, make_tiny_bert_dir

    root = tmp_path_factory.mktemp("kill")
    return {"bert": make_tiny_bert_dir(root / "bert"), "data": make_classify_data(root / "data"), "root": root}


def train_argv(tiny: dict[str, Path], out: Path, resume: bool) -> list[str]:
    """The training run every test kills: 8 steps, a checkpoint after each, dropout on (RNG matters)."""
    argv = ["train", str(tiny["bert"]), str(tiny["data"]), "--out", str(out), "--max-steps", str(STEPS),
            "--checkpoint-every", "1", "--eval-every", "4", "--batch-size", "8", "--max-length", "16",
            "--no-progress", "--threads", "1", "--no-base-eval", "--lr", "5e-3", "--dropout", "0.1"]
    return argv + (["--resume"] if resume else [])


@pytest.fixture(scope="module")
def zygote() -> Iterator[Zygote]:
    with Zygote(REPO) as z:
        yield z


@pytest.fixture(scope="module")
def reference(tiny: dict[str, Path], zygote: Zygote) -> dict[str, object]:
    out = tiny["root"] / "reference"
    reply = zygote.run(train_argv(tiny, out, resume=False), out, tiny["root"] / "logs-reference")
    assert reply["exit"] == 0, reply["stderr"][-2000:]
    return {"adapter": (out / "adapter" / "adapter_model.safetensors").read_bytes(), "seconds": reply["seconds"]}


def _adapter_bytes(out: Path) -> bytes:
    return (out / "adapter" / "adapter_model.safetensors").read_bytes()


def test_sigkill_at_random_moments_then_resume_is_bitwise_exact(tiny, zygote, reference) -> None:
    rng = random.Random(SEED)
    out = tiny["root"] / f"killed-{SEED}"
    plan = [{"mode": "checkpoint", "nth": rng.randint(1, 3)},
            {"mode": "time", "after": rng.uniform(0.05, 1.0) * reference["seconds"]},
            {"mode": "checkpoint", "nth": rng.randint(1, 3)}]
    kills, mid_write = 0, 0
    for i, kill in enumerate(plan):
        reply = zygote.run(train_argv(tiny, out, resume=i > 0), out, tiny["root"] / f"logs-{SEED}-{i}", kill)
        where = f"seed {SEED}, kill {i} {kill}: {reply}"
        if reply["signal"] is None:  # the run finished before the kill came: fine, nothing to check
            assert reply["exit"] == 0, where
            continue
        assert reply["signal"] == "SIGKILL" and reply["exit"] == -9, where
        kills += 1
        mid_write += reply["mid_write"]
        report = checkpoint_report(out)
        assert report["intact"] is not False, f"{where}: --resume would find a damaged checkpoint: {report}"
    final = zygote.run(train_argv(tiny, out, resume=True), out, tiny["root"] / f"logs-{SEED}-final")
    assert final["exit"] == 0, final["stderr"][-2000:]
    assert kills >= 1 and mid_write >= 1, f"seed {SEED}: no kill landed ({kills} kills, {mid_write} mid-write)"
    assert _adapter_bytes(out) == reference["adapter"], f"seed {SEED}: resumed adapter differs from the reference"
    assert not [p for p in out.iterdir() if p.name.startswith(".checkpoint")], "leftovers of killed writes remain"


def test_sigterm_writes_a_checkpoint_and_exits_cleanly(tiny, zygote, reference) -> None:
    out = tiny["root"] / "sigterm"
    nth = random.Random(SEED + 1).randint(2, 4)
    reply = zygote.run(train_argv(tiny, out, resume=False), out, tiny["root"] / "logs-sigterm",
                       {"mode": "checkpoint", "nth": nth, "signal": "SIGTERM"})
    assert reply["signal"] == "SIGTERM" and reply["exit"] == 0, reply
    assert "interrupted at step" in reply["stderr"] and "Traceback" not in reply["stderr"], reply["stderr"][-2000:]
    step = int(reply["stderr"].split("interrupted at step ")[1].split(":")[0])
    report = checkpoint_report(out)
    assert report["intact"] and report["step"] == step, report
    assert not (out / "adapter").exists()  # an interrupted run does not pretend to be finished
    final = zygote.run(train_argv(tiny, out, resume=True), out, tiny["root"] / "logs-sigterm-final")
    assert final["exit"] == 0, final["stderr"][-2000:]
    assert _adapter_bytes(out) == reference["adapter"]

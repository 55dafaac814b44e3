"""Kill ``lorakit train`` many times; count intact checkpoints and bitwise-exact resumes (promise 5).

Each *chain* trains the same tiny BERT run (``--checkpoint-every 1``, dropout on) and SIGKILLs it
1-4 times at random moments — at a random time, or the instant a checkpoint write is seen in progress —
restarting with ``--resume`` after each kill, then lets the last ``--resume`` finish. After every kill
the checkpoint that ``--resume`` will use is checked (complete, loadable, finite); at the end the adapter
must be bitwise equal to an uninterrupted run's. SIGTERM runs must checkpoint and exit 0.

Most runs are forked from a pre-imported zygote (``benchmarks/reliability/killkit.py``: the child calls
the CLI's ``main(argv)``, as ``python -m lorakit train`` does); ``--real`` chains use real
``python -m lorakit train`` subprocesses (slow: ~10 s of imports per start on a busy machine).

Usage: ``python -m benchmarks.reliability_kill [--chains 25] [--sigterms 5] [--real 3] [--seed 1]``.
Writes ``benchmarks/results/reliability_kill.json``.
"""

from __future__ import annotations

import argparse
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.common import REPO, RESULTS, write_results_file

STEPS = 8


def train_argv(bert: Path, data: Path, out: Path, resume: bool) -> list[str]:
    """The run every chain kills (the same as tests/reliability/test_rel_crash_resume.py)."""
    argv = ["train", str(bert), str(data), "--out", str(out), "--max-steps", str(STEPS), "--checkpoint-every", "1",
            "--eval-every", "4", "--batch-size", "8", "--max-length", "16", "--no-progress", "--threads", "1",
            "--no-base-eval", "--lr", "5e-3", "--dropout", "0.1"]
    return argv + (["--resume"] if resume else [])


def _adapter(out: Path) -> bytes | None:
    path = out / "adapter" / "adapter_model.safetensors"
    return path.read_bytes() if path.is_file() else None


def real_chain(bert: Path, data: Path, out: Path, rng: random.Random, reference: bytes, seconds: float) -> dict:
    """One kill of a real ``python -m lorakit train`` subprocess, then a real ``--resume`` to the end."""
    from benchmarks.reliability.killkit import checkpoint_report

    cmd = [sys.executable, "-m", "lorakit", *train_argv(bert, data, out, False)]
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 300
    while not (out / "train_config.json").exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)  # imports done, the run has started
    delay = rng.uniform(0.0, seconds)
    time.sleep(delay)
    killed = proc.poll() is None
    if killed:
        proc.send_signal(signal.SIGKILL)
    proc.wait(60)
    report = checkpoint_report(out)
    resumed = subprocess.run([sys.executable, "-m", "lorakit", *train_argv(bert, data, out, True)], cwd=REPO,
                             capture_output=True, text=True, timeout=600)
    return {"killed": killed, "delay_s": delay, "intact": report["intact"] is not False, "report": report,
            "resume_exit": resumed.returncode, "exact": _adapter(out) == reference}


def write(result: dict, out: Path, argv: list[str] | None = None) -> Path:
    """``out`` (``NAME.json``): the figures and every kill, chain and resume, with the run's provenance under ``machine``.

    Through :func:`benchmarks.common.write_results_file`: atomic, so an interrupted run leaves no half file.
    """
    return write_results_file(out, result, argv, "benchmarks.reliability_kill")


def main(argv: list[str] | None = None) -> int:
    """Run the chains and print the figures; exit 1 on any damaged checkpoint or inexact resume."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--chains", type=int, default=25, help="zygote chains of 1-4 kills [default: %(default)s]")
    parser.add_argument("--sigterms", type=int, default=5, help="SIGTERM runs [default: %(default)s]")
    parser.add_argument("--real", type=int, default=3, help="chains with real subprocesses [default: %(default)s]")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--out", default=str(RESULTS / "reliability_kill.json"),
                        help="the results file, NAME.json (any other suffix becomes .json) [default: %(default)s]")
    args = parser.parse_args(argv)

    from benchmarks.reliability.killkit import Zygote, checkpoint_report
    from benchmarks.tiny_models import make_classify_data, make_tiny_bert_dir

    rng = random.Random(args.seed)
    root = Path(tempfile.mkdtemp(prefix="lorakit-kill-"))
    bert, data = make_tiny_bert_dir(root / "bert"), make_classify_data(root / "data")
    started = time.perf_counter()
    kills: list[dict] = []
    chains: list[dict] = []
    sigterms: list[dict] = []
    with Zygote(REPO) as zygote:
        ref = zygote.run(train_argv(bert, data, root / "reference", False), root / "reference", root / "logs-ref")
        assert ref["exit"] == 0, ref["stderr"][-2000:]
        reference, seconds = _adapter(root / "reference"), ref["seconds"]
        for c in range(args.chains):
            out = root / f"chain-{c}"
            n_kills = rng.randint(1, 4)
            chain_kills = 0
            for k in range(n_kills):
                if rng.random() < 0.5:
                    kill = {"mode": "checkpoint", "nth": rng.randint(1, STEPS)}
                else:
                    kill = {"mode": "time", "after": rng.uniform(0.0, 1.0) * seconds}
                reply = zygote.run(train_argv(bert, data, out, k > 0), out, root / f"logs-{c}-{k}", kill)
                if reply["signal"] is None:
                    continue  # finished before the kill came
                report = checkpoint_report(out)
                kills.append({"chain": c, "kill": kill, "mid_write": reply["mid_write"], "exit": reply["exit"],
                              "checkpoint_step": report["step"], "intact": report["intact"] is not False,
                              "report": report})
                chain_kills += 1
            final = zygote.run(train_argv(bert, data, out, True), out, root / f"logs-{c}-final")
            leftovers = [p.name for p in out.iterdir() if p.name.startswith(".checkpoint")]
            chains.append({"chain": c, "kills": chain_kills, "final_exit": final["exit"],
                           "exact": final["exit"] == 0 and _adapter(out) == reference, "leftovers": leftovers})
            print(f"  chain {c}: {chain_kills} kills, exact={chains[-1]['exact']}", file=sys.stderr, flush=True)
        for s in range(args.sigterms):
            out = root / f"sigterm-{s}"
            reply = zygote.run(train_argv(bert, data, out, False), out, root / f"logs-term-{s}",
                               {"mode": "checkpoint", "nth": rng.randint(1, STEPS), "signal": "SIGTERM"})
            report = checkpoint_report(out)
            clean = reply["exit"] == 0 and "Traceback" not in reply["stderr"]
            said = "interrupted at step" in reply["stderr"] if reply["signal"] else True
            final = zygote.run(train_argv(bert, data, out, True), out, root / f"logs-term-{s}-final")
            sigterms.append({"signalled": reply["signal"] is not None, "clean_exit": clean and said,
                             "intact": report["intact"] is not False, "step": report["step"],
                             "exact": final["exit"] == 0 and _adapter(out) == reference})
    real = [real_chain(bert, data, root / f"real-{r}", rng, reference, seconds) for r in range(args.real)]
    shutil.rmtree(root, ignore_errors=True)

    n_kills = len(kills)
    result = {
        "seed": args.seed, "steps_per_run": STEPS, "reference_run_s": seconds,
        "kills": n_kills, "kills_during_checkpoint_write": sum(k["mid_write"] for k in kills),
        "intact_after_kill": sum(k["intact"] for k in kills),
        "chains": len(chains), "exact_chains": sum(c["exact"] for c in chains),
        "kills_in_exact_chains": sum(c["kills"] for c in chains if c["exact"]),
        "leftover_folders": sum(len(c["leftovers"]) for c in chains),
        "sigterm": {"runs": len(sigterms), "signalled": sum(s["signalled"] for s in sigterms),
                    "clean_exit": sum(s["clean_exit"] for s in sigterms), "intact": sum(s["intact"] for s in sigterms),
                    "exact": sum(s["exact"] for s in sigterms)},
        "real_subprocess": {"chains": len(real), "killed": sum(r["killed"] for r in real),
                            "intact": sum(r["intact"] for r in real), "exact": sum(r["exact"] for r in real)},
        "seconds": time.perf_counter() - started,
        "details": {"kills": kills, "chains": chains, "sigterms": sigterms, "real": real},
    }
    out_path = write(result, Path(args.out), argv)
    print(f"SIGKILL: {n_kills} kills ({result['kills_during_checkpoint_write']} during a checkpoint write) in "
          f"{len(chains)} chains; intact checkpoint after {result['intact_after_kill']}/{n_kills} kills; "
          f"bitwise-exact final adapter in {result['exact_chains']}/{len(chains)} chains "
          f"({result['kills_in_exact_chains']}/{n_kills} kills followed by an exact resume); "
          f"{result['leftover_folders']} leftover folders")
    st = result["sigterm"]
    print(f"SIGTERM: {st['signalled']}/{st['runs']} signalled, {st['clean_exit']} clean exits, "
          f"{st['intact']} intact checkpoints, {st['exact']} exact resumes")
    rs = result["real_subprocess"]
    print(f"real `python -m lorakit train`: {rs['killed']}/{rs['chains']} killed, {rs['intact']} intact, "
          f"{rs['exact']} exact resumes")
    print(f"wrote {out_path} in {result['seconds']:.0f} s")
    bad = (result["intact_after_kill"] != n_kills or result["exact_chains"] != len(chains)
           or st["exact"] != st["runs"] or st["clean_exit"] != st["runs"] or rs["exact"] != rs["chains"])
    return 1 if bad else 0


if __name__ == "__main__":
    raise SystemExit(main())

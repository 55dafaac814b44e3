"""Kill ``lorakit train`` at random moments, cheaply: a pre-imported "zygote" process forks each run.

Starting ``python -m lorakit train`` costs seconds of imports (torch, transformers) on a busy machine,
which would make dozens of kills too slow for a test. The zygote (this file run as a script) imports
``lorakit.cli.main`` once, then for each request forks a child that calls ``main(argv)`` — exactly what
``python -m lorakit train ...`` runs — with its own stdout/stderr files. The zygote does not run any torch
op before forking, so the children start clean. The parent kills the child as asked:

* ``{"mode": "none"}``: let it finish;
* ``{"mode": "time", "after": s}``: SIGKILL ``s`` seconds after the fork;
* ``{"mode": "checkpoint", "nth": k}``: SIGKILL as soon as the k-th checkpoint write is seen in progress
  (a ``.checkpoint.tmp-*`` folder exists), i.e. during the write (``"signal": "SIGTERM"`` sends that instead);
* ``{"mode": "sigterm", "after": s}``: SIGTERM after ``s`` seconds (the loop checkpoints and exits 0).

Protocol: one JSON request per stdin line, one JSON reply per stdout line. The test side is
:class:`Zygote`; :func:`checkpoint_report` checks what a kill left on disk.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

CHILD_LIMIT_S = 300.0  # a child running longer than this is killed and reported as a hang


def _serve() -> None:
    """The zygote's loop (runs in the zygote process)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    import matplotlib.pyplot  # noqa: F401 - the run's loss plot
    import transformers  # noqa: F401
    from transformers import (  # noqa: F401 - transformers imports these lazily, at a cost of seconds
        AutoModelForCausalLM,
        AutoModelForSequenceClassification,
        AutoTokenizer,
        BertForSequenceClassification,
        LlamaForCausalLM,
        PreTrainedTokenizerFast,
    )

    import lorakit.cli.main  # noqa: F401 - the expensive imports, done once
    import lorakit.cli.train  # noqa: F401
    import lorakit.data  # noqa: F401
    import lorakit.models  # noqa: F401
    import lorakit.train.runner  # noqa: F401

    print(json.dumps({"ready": True}), flush=True)
    for line in sys.stdin:
        if not line.strip():
            continue
        request = json.loads(line)
        print(json.dumps(_one(request)), flush=True)


def _one(request: dict[str, Any]) -> dict[str, Any]:
    argv, kill, logs = request["argv"], request.get("kill", {"mode": "none"}), Path(request["logs"])
    out_dir = Path(request["out"])
    logs.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    pid = os.fork()
    if pid == 0:  # the child: a `lorakit train` process
        code = 1
        try:
            with open(logs / "stdout.txt", "w") as out, open(logs / "stderr.txt", "w") as err:
                os.dup2(out.fileno(), 1)
                os.dup2(err.fileno(), 2)
            sys.stdout = open(1, "w", closefd=False)  # noqa: SIM115 - the child exits below
            sys.stderr = open(2, "w", closefd=False)  # noqa: SIM115
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            from lorakit.cli.main import main

            code = main(argv)
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
        except BaseException:  # noqa: BLE001 - report, then leave without running the parent's cleanup
            import traceback

            traceback.print_exc()
            code = 1
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)
    mode = kill.get("mode", "none")
    stale = _tmp_dirs(out_dir)  # left by an earlier killed run: not a write of this one
    signalled, mid_write, seen, in_write = None, False, 0, False
    deadline = started + CHILD_LIMIT_S
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        now = time.perf_counter()
        writing = bool(_tmp_dirs(out_dir) - stale)
        if now > deadline and signalled != "timeout":
            os.kill(pid, signal.SIGKILL)
            signalled = "timeout"
        elif signalled is None and mode in ("time", "sigterm") and now - started >= kill["after"]:
            signalled = "SIGKILL" if mode == "time" else "SIGTERM"
            mid_write = writing
            os.kill(pid, getattr(signal, signalled))
        elif signalled is None and mode == "checkpoint":
            if writing and not in_write:  # a new write started
                seen += 1
                if seen >= kill.get("nth", 1):
                    signalled = kill.get("signal", "SIGKILL")
                    os.kill(pid, getattr(signal, signalled))
                    mid_write = True
            in_write = writing
            time.sleep(0.0002)
            continue
        time.sleep(0.002)
    code = os.waitstatus_to_exitcode(status)
    return {"exit": code, "signal": signalled, "mid_write": mid_write, "seconds": time.perf_counter() - started}


def _tmp_dirs(out_dir: Path) -> set[str]:
    """Temporary checkpoint folders present now (a write in progress, or left by a kill)."""
    try:
        return {e.name for e in os.scandir(out_dir) if e.name.startswith(".checkpoint.tmp-")}
    except FileNotFoundError:
        return set()


class Zygote:
    """The test side: start the zygote, send runs, read replies; always stopped on exit."""

    def __init__(self, cwd: Path, timeout: float = 180.0) -> None:
        env = {**os.environ, "PYTHONPATH": str(cwd / "src") + os.pathsep + os.environ.get("PYTHONPATH", "")}
        self.proc = subprocess.Popen([sys.executable, str(Path(__file__).resolve())], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True, cwd=cwd, env=env)
        ready = self._read(timeout)
        if not ready.get("ready"):
            raise RuntimeError(f"zygote did not start: {ready}")

    def _read(self, timeout: float) -> dict[str, Any]:
        import selectors

        sel = selectors.DefaultSelector()
        sel.register(self.proc.stdout, selectors.EVENT_READ)
        if not sel.select(timeout):
            raise TimeoutError(f"zygote gave no answer within {timeout} s")
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"zygote exited (code {self.proc.poll()})")
        return json.loads(line)

    def run(self, argv: list[str], out: Path, logs: Path, kill: dict[str, Any] | None = None,
            timeout: float = CHILD_LIMIT_S + 30) -> dict[str, Any]:
        """Run ``lorakit <argv>`` in a forked child, killed as ``kill`` says; returns the reply."""
        request = {"argv": argv, "out": str(out), "logs": str(logs), "kill": kill or {"mode": "none"}}
        self.proc.stdin.write(json.dumps(request) + "\n")
        self.proc.stdin.flush()
        reply = self._read(timeout)
        reply["stderr"] = (logs / "stderr.txt").read_text(errors="replace") if (logs / "stderr.txt").exists() else ""
        return reply

    def close(self) -> None:
        """Stop the zygote (closing its stdin ends its loop)."""
        with contextlib.suppress(OSError):
            self.proc.stdin.close()
        try:
            self.proc.wait(2)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def __enter__(self) -> Zygote:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def checkpoint_report(out_dir: Path) -> dict[str, Any]:
    """What a killed run left: the checkpoint ``--resume`` will use, and whether it is intact.

    Intact: ``state.json`` parses, both safetensors files load, their names match ``param_names`` and
    every tensor is finite.
    """
    import torch
    from safetensors.torch import load_file

    from lorakit.train.checkpoint import find_checkpoint

    found = find_checkpoint(out_dir)
    leftovers = sorted(p.name for p in out_dir.iterdir() if p.name.startswith(".checkpoint")) \
        if out_dir.is_dir() else []
    if found is None:
        return {"found": None, "intact": None, "step": 0, "leftovers": leftovers}
    try:
        meta = json.loads((found / "state.json").read_text())
        weights = load_file(str(found / "trainable.safetensors"))
        optim = load_file(str(found / "optimizer.safetensors"))
        names_ok = sorted(weights) == sorted(meta["param_names"])
        finite = all(torch.isfinite(v).all() for v in weights.values()) and all(
            torch.isfinite(v).all() for k, v in optim.items() if k.startswith("state."))
        return {"found": found.name, "intact": bool(names_ok and finite), "finite": finite,
                "step": int(meta["state"]["step"]), "leftovers": leftovers}
    except Exception as exc:  # noqa: BLE001 - any failure to read it means "not intact"
        return {"found": found.name, "intact": False, "error": f"{type(exc).__name__}: {exc}", "step": -1,
                "leftovers": leftovers}


if __name__ == "__main__":
    _serve()

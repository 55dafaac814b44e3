"""`lorakit`'s entry point: a user mistake is one `error:` line, a bug keeps its traceback."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

import lorakit.cli.inspect
from lorakit.cli.main import main
from lorakit.errors import LorakitError, UnsupportedLayerError


def _raising(exc: BaseException):
    """A command's ``run`` that raises ``exc``."""

    def run(args):
        raise exc

    return run


def _user_mistakes(tmp_path, model):
    return {
        "rank 0": (["inspect", str(model), "--rank", "0"], "rank r must be a positive integer, got 0"),
        "bad adapter folder": (["inspect", str(model), "--adapter", str(tmp_path / "nope")], "adapter folder not found"),
        "missing data": (["eval", str(model), str(tmp_path / "no-data")], "no such file or directory"),
        "missing model": (["inspect", str(tmp_path / "no-model")], "neither an embedded model nor an existing folder"),
    }


@pytest.mark.parametrize("case", ["rank 0", "bad adapter folder", "missing data", "missing model"])
def test_a_user_mistake_is_one_error_line(tiny_llama_dir, tmp_path, capsys, monkeypatch, case):
    monkeypatch.delenv("LORAKIT_DEBUG", raising=False)
    argv, message = _user_mistakes(tmp_path, tiny_llama_dir)[case]
    assert main(argv) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], lines


@pytest.mark.parametrize(("raised", "shown"), [
    (LorakitError("r must be >= 1\nsecond line"), "error: r must be >= 1"),
    (UnsupportedLayerError("cannot adapt 'x'"), "error: cannot adapt 'x'"),
    (FileNotFoundError(2, "No such file or directory", "/data/x"), "error: /data/x: no such file or directory"),
    (PermissionError(13, "Permission denied", "/out"), "error: /out: permission denied"),
    (MemoryError(), "error: out of memory (try a smaller --batch-size or --max-length)"),
])
def test_what_counts_as_a_user_mistake(monkeypatch, capsys, raised, shown):
    monkeypatch.delenv("LORAKIT_DEBUG", raising=False)
    monkeypatch.setattr(lorakit.cli.inspect, "run", _raising(raised))
    assert main(["inspect", "minilm"]) == 2
    assert capsys.readouterr().err == shown + "\n"


@pytest.mark.parametrize("bug", [KeyError("step"), TypeError("unsupported operand"), ValueError("from a library"),
                                 AttributeError("no attribute 'x'")])
def test_a_bug_is_not_turned_into_an_error_line(monkeypatch, capsys, bug):
    monkeypatch.delenv("LORAKIT_DEBUG", raising=False)
    monkeypatch.setattr(lorakit.cli.inspect, "run", _raising(bug))
    with pytest.raises(type(bug)):
        main(["inspect", "minilm"])
    assert "error:" not in capsys.readouterr().err


def test_debug_shows_the_traceback_of_a_user_mistake(monkeypatch):
    monkeypatch.setenv("LORAKIT_DEBUG", "1")
    monkeypatch.setattr(lorakit.cli.inspect, "run", _raising(LorakitError("bad")))
    with pytest.raises(LorakitError):
        main(["inspect", "minilm"])


def test_ctrl_c_exits_130_without_a_traceback(monkeypatch, capsys):
    monkeypatch.setattr(lorakit.cli.inspect, "run", _raising(KeyboardInterrupt()))
    assert main(["inspect", "minilm"]) == 130
    assert "Traceback" not in capsys.readouterr().err


def test_a_bug_prints_its_traceback_from_the_command_line():
    code = ("import sys, lorakit.cli.inspect as m\n"
            "def run(args):\n    return {}['missing key']\n"
            "m.run = run\n"
            "from lorakit.cli.main import main\nsys.exit(main(['inspect', 'minilm']))\n")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         env={**os.environ, "LORAKIT_DEBUG": ""})
    assert res.returncode != 0
    assert "Traceback" in res.stderr and "KeyError: 'missing key'" in res.stderr
    assert "error:" not in res.stderr


def test_the_console_script_starts_in_a_bare_interpreter() -> None:
    # The `lorakit` script imports lorakit.cli.main in an interpreter where neither pytest nor `python -m`
    # (runpy) has loaded importlib.util or anything else main relies on by accident.
    code = "import sys; from lorakit.cli.main import main; sys.exit(main(['--version']))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("lorakit ")

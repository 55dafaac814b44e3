"""The CLI's malloc settings (cli/allocator.py): applied in a fresh process, refused by name when unknown."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from lorakit.cli.allocator import SETTINGS, apply_allocator
from lorakit.errors import LorakitError


def _applied(name: str) -> dict[str, int]:
    # A fresh interpreter: mallopt changes the whole process, which must not be the test runner's.
    code = f"import json; from lorakit.cli.allocator import apply_allocator; print(json.dumps(apply_allocator({name!r})))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return {int(k): v for k, v in json.loads(out.stdout).items()}


@pytest.mark.skipif(not sys.platform.startswith("linux") or not os.confstr("CS_GNU_LIBC_VERSION"),
                    reason="mallopt is glibc's")
@pytest.mark.parametrize("name", sorted(SETTINGS))
def test_every_setting_is_accepted_by_glibc(name: str) -> None:
    assert _applied(name) == SETTINGS[name]


def test_an_unknown_setting_is_a_user_mistake(monkeypatch) -> None:
    monkeypatch.setenv("LORAKIT_MALLOC", "tcmalloc-please")
    with pytest.raises(LorakitError, match="LORAKIT_MALLOC='tcmalloc-please' is not one of: glibc"):
        apply_allocator()


def test_the_cli_reports_an_unknown_setting_in_one_line() -> None:
    env = dict(os.environ, LORAKIT_MALLOC="nope")
    out = subprocess.run([sys.executable, "-m", "lorakit", "inspect", "--help"], capture_output=True, text=True,
                         env=env)
    assert out.returncode == 0  # --help exits in the parser, before any setting is applied
    out = subprocess.run([sys.executable, "-m", "lorakit", "merge", "nowhere", "--adapter", "nowhere",
                          "--out", "x"],
                         capture_output=True, text=True, env=env)
    assert out.returncode == 2 and out.stderr.strip().splitlines() == [
        "error: LORAKIT_MALLOC='nope' is not one of: " + ", ".join(SETTINGS)]

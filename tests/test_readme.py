"""The README's Python example runs as written, and its two fresh-machine commands stay in CI."""

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_readme_python_example_runs(tmp_path, monkeypatch):
    text = (REPO / "README.md").read_text()
    code = re.search(r"```python\n(.*?)```", text, re.S).group(1)
    monkeypatch.chdir(tmp_path)
    exec(compile(code, "README.md", "exec"), {})
    assert (tmp_path / "my-adapter" / "adapter_model.safetensors").is_file()


def test_ci_runs_the_readme_test_command():
    text = (REPO / "README.md").read_text()
    test_cmd = "scripts/install.sh --dev && .venv/bin/python -m pytest -q"
    assert test_cmd in text
    ci = (REPO / ".ci" / "run").read_text()
    assert "scripts/install.sh --dev" in ci and ".venv/bin/python -m pytest -q" in ci

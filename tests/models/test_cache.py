"""The folder cache is atomic: an entry exists complete or not at all (fake builders, no real model)."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from lorakit.models import cache_root
from lorakit.models.cache import cached_folder
from lorakit.models.gguf import converted_gguf, gguf_cache_key


class FakeBuilder:
    """Writes config.json (and a weights file) into the folder it is given, and counts its calls."""

    def __init__(self, fail: bool = False, files: tuple[str, ...] = ("config.json", "weights")) -> None:
        self.calls: list[Path] = []
        self.fail = fail
        self.files = files

    def __call__(self, out: Path) -> None:
        self.calls.append(out)
        assert out.is_dir() and not any(out.iterdir())  # always an empty temporary folder
        for name in self.files:
            (out / name).write_text(name)
        if self.fail:
            raise KeyboardInterrupt("simulated crash after writing some files")


def _names(folder: Path) -> set[str]:
    return {p.name for p in folder.iterdir()}


def test_builds_once_then_serves_the_entry(tmp_path: Path) -> None:
    build = FakeBuilder()
    first = cached_folder("m-abc", build, root=tmp_path)
    assert first == tmp_path / "models" / "m-abc"
    assert _names(first) == {"config.json", "weights"}
    assert build.calls[0].parent == first.parent and build.calls[0].name.startswith(".tmp-m-abc-")
    assert cached_folder("m-abc", build, root=tmp_path) == first
    assert len(build.calls) == 1
    assert _names(tmp_path / "models") == {"m-abc"}


def test_a_crash_mid_build_leaves_nothing(tmp_path: Path) -> None:
    with pytest.raises(KeyboardInterrupt):
        cached_folder("m-abc", FakeBuilder(fail=True), root=tmp_path)
    assert _names(tmp_path / "models") == set()
    build = FakeBuilder()
    assert _names(cached_folder("m-abc", build, root=tmp_path)) == {"config.json", "weights"}
    assert len(build.calls) == 1


def test_a_build_missing_required_files_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match=r"did not write \['model.safetensors'\]"):
        cached_folder("m", FakeBuilder(), required=("config.json", "model.safetensors"), root=tmp_path)
    assert _names(tmp_path / "models") == set()


def test_an_incomplete_entry_is_rebuilt(tmp_path: Path) -> None:
    broken = tmp_path / "models" / "m"
    broken.mkdir(parents=True)
    (broken / "weights").write_text("half")
    build = FakeBuilder()
    assert _names(cached_folder("m", build, root=tmp_path)) == {"config.json", "weights"}
    assert (broken / "weights").read_text() == "weights" and len(build.calls) == 1


def test_a_concurrent_winner_is_kept(tmp_path: Path) -> None:
    final = tmp_path / "models" / "m"

    def build_while_another_process_finishes(out: Path) -> None:
        (out / "config.json").write_text("ours")
        final.mkdir()
        (final / "config.json").write_text("theirs")

    assert cached_folder("m", build_while_another_process_finishes, root=tmp_path) == final
    assert (final / "config.json").read_text() == "theirs"
    assert _names(tmp_path / "models") == {"m"}  # our temporary copy is gone


def test_stale_build_folders_are_cleaned_but_fresh_ones_kept(tmp_path: Path) -> None:
    models = tmp_path / "models"
    stale, fresh = models / ".tmp-old-1", models / ".tmp-running-2"
    for folder in (stale, fresh):
        folder.mkdir(parents=True)
        (folder / "model.safetensors").write_text("partial")
    two_hours_ago = time.time() - 7200
    os.utime(stale, (two_hours_ago, two_hours_ago))
    cached_folder("m", FakeBuilder(), root=tmp_path)
    assert _names(models) == {"m", fresh.name}


@pytest.mark.parametrize("entry", ["", "a/b", "..", ".tmp-x"])
def test_entry_names_are_plain_folder_names(tmp_path: Path, entry: str) -> None:
    with pytest.raises(ValueError, match="plain folder name"):
        cached_folder(entry, FakeBuilder(), root=tmp_path)


def test_cache_root_env_and_default(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("LORAKIT_CACHE", str(tmp_path / "c"))
    assert cache_root() == tmp_path / "c"
    monkeypatch.delenv("LORAKIT_CACHE")
    assert cache_root() == Path.home() / ".cache" / "lorakit"


# --- GGUF conversion cache, with a fake converter ----------------------------------------------------


def test_gguf_cache_key_follows_content_not_path_or_mtime(tmp_path: Path) -> None:
    a, b, c = tmp_path / "a.gguf", tmp_path / "b.gguf", tmp_path / "c.gguf"
    a.write_bytes(b"GGUF" + bytes(3000))
    b.write_bytes(a.read_bytes())
    c.write_bytes(b"GGUF" + bytes(2999) + b"\x01")
    os.utime(b, (1, 1))
    assert gguf_cache_key(a) == gguf_cache_key(b)
    assert gguf_cache_key(a) != gguf_cache_key(c)
    assert len(gguf_cache_key(a)) == 16


def test_converted_gguf_converts_once_into_the_cache(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("LORAKIT_CACHE", str(tmp_path / "cache"))
    gguf = tmp_path / "model.gguf"
    gguf.write_bytes(b"GGUF" + bytes(100))
    calls: list[tuple[Path, Path]] = []

    def fake_convert(src: Path, out: Path) -> None:
        calls.append((src, out))
        for name in ("config.json", "model.safetensors", "tokenizer_config.json"):
            (out / name).write_text("{}")

    monkeypatch.setattr("lorakit.models.gguf.convert_gguf", fake_convert)
    first = converted_gguf("smollm2", gguf)
    assert first == tmp_path / "cache" / "models" / f"smollm2-{gguf_cache_key(gguf)}"
    assert converted_gguf("smollm2", gguf) == first
    assert len(calls) == 1 and calls[0][0] == gguf

"""The one atomic write: old or new file, never half of one, and nothing left behind on failure."""

from __future__ import annotations

import json
import os
import stat

import pytest
import torch
from safetensors.torch import load_file, save_file

from lorakit.io import atomic
from lorakit.io.atomic import replacing, write_atomic, write_json_atomic


def test_bytes_text_and_json_land_in_place(tmp_path):
    write_atomic(tmp_path / "a.bin", b"\x00\x01")
    write_atomic(tmp_path / "sub" / "b.txt", "héllo")  # missing folders are created
    write_json_atomic(tmp_path / "c.json", {"x": [1, 2]}, indent=2)
    assert (tmp_path / "a.bin").read_bytes() == b"\x00\x01"
    assert (tmp_path / "sub" / "b.txt").read_text(encoding="utf-8") == "héllo"
    assert json.loads((tmp_path / "c.json").read_text()) == {"x": [1, 2]}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.bin", "c.json", "sub"]  # no temp files left


def test_file_mode_follows_the_umask_not_mkstemp(tmp_path):
    path = write_atomic(tmp_path / "f", "x")
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~atomic._UMASK


def test_a_failure_mid_write_keeps_the_old_file(tmp_path):
    path = write_atomic(tmp_path / "w.safetensors", b"old")
    with pytest.raises(RuntimeError, match="disk died"), replacing(path) as tmp:
        tmp.write_bytes(b"half of the new fi")
        raise RuntimeError("disk died")
    assert path.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["w.safetensors"]


def test_unserialisable_json_never_touches_the_file(tmp_path):
    path = write_json_atomic(tmp_path / "m.json", {"ok": 1})
    with pytest.raises(TypeError):
        write_json_atomic(path, {"bad": object()})
    assert json.loads(path.read_text()) == {"ok": 1}


def test_safetensors_through_a_temp_name(tmp_path):
    path = tmp_path / "t.safetensors"
    with replacing(path) as tmp:
        save_file({"w": torch.ones(2)}, str(tmp))
        assert not path.exists()  # published only when the block ends
    assert torch.equal(load_file(str(path))["w"], torch.ones(2))


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="names open files through /proc")
def test_data_and_rename_are_fsynced(tmp_path, monkeypatch):
    synced = []
    real = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (synced.append(os.readlink(f"/proc/self/fd/{fd}")), real(fd)))
    path = write_atomic(tmp_path / "d.txt", "data")
    assert len(synced) == 2 and synced[0].startswith(str(tmp_path / ".d.txt.")) and synced[1] == str(tmp_path)
    assert path.read_text() == "data"

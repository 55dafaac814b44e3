"""Data root resolution: explicit argument > $LORAKIT_DATA > ../shared/data (repo, then cwd)."""

import os
from pathlib import Path

import pytest

import lorakit.data.root as root_module
from lorakit.data.root import ENV_VAR, default_data_roots, resolve_data_root


def test_explicit_argument_wins_over_env(tmp_path, monkeypatch):
    explicit, env = tmp_path / "explicit", tmp_path / "env"
    explicit.mkdir()
    env.mkdir()
    monkeypatch.setenv(ENV_VAR, str(env))
    assert resolve_data_root(explicit) == explicit.resolve()
    assert resolve_data_root(str(explicit)) == explicit.resolve()


def test_env_var_used_without_argument(tmp_path, monkeypatch):
    monkeypatch.setenv(ENV_VAR, str(tmp_path))
    assert resolve_data_root() == tmp_path.resolve()


@pytest.mark.parametrize("how", ["argument", "env"])
def test_missing_folder_is_an_error_naming_path_and_fix(tmp_path, monkeypatch, how):
    missing = tmp_path / "nope"
    if how == "env":
        monkeypatch.setenv(ENV_VAR, str(missing))
        arg = None
    else:
        monkeypatch.delenv(ENV_VAR, raising=False)
        arg = missing
    with pytest.raises(ValueError) as err:
        resolve_data_root(arg)
    message = str(err.value)
    assert str(missing) in message
    assert "--data-root" in message and ENV_VAR in message


def test_defaults_are_repo_sibling_then_cwd_sibling(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    repo_candidate, cwd_candidate = default_data_roots()
    # Compare lexically: resolve() would follow a symlinked ../shared to wherever it points.
    expected = Path(root_module.__file__).resolve().parents[4] / "shared" / "data"
    assert Path(os.path.normpath(repo_candidate)) == expected
    assert cwd_candidate == tmp_path / ".." / "shared" / "data"


def test_default_falls_back_to_cwd_sibling(tmp_path, monkeypatch):
    # Pretend the package lives somewhere without data, and cwd has ../shared/data.
    fake_file = tmp_path / "elsewhere" / "src" / "lorakit" / "data" / "root.py"
    monkeypatch.setattr(root_module, "__file__", str(fake_file))
    (tmp_path / "shared" / "data").mkdir(parents=True)
    (tmp_path / "project").mkdir()
    monkeypatch.chdir(tmp_path / "project")
    monkeypatch.delenv(ENV_VAR, raising=False)
    assert resolve_data_root() == (tmp_path / "shared" / "data").resolve()


def test_default_missing_lists_every_candidate(tmp_path, monkeypatch):
    fake_file = tmp_path / "a" / "src" / "lorakit" / "data" / "root.py"
    monkeypatch.setattr(root_module, "__file__", str(fake_file))
    (tmp_path / "b" / "c").mkdir(parents=True)
    monkeypatch.chdir(tmp_path / "b" / "c")
    monkeypatch.delenv(ENV_VAR, raising=False)
    with pytest.raises(ValueError) as err:
        resolve_data_root()
    assert str(tmp_path / "a" / ".." / "shared" / "data") in str(err.value)
    assert str(tmp_path / "b" / "c" / ".." / "shared" / "data") in str(err.value)

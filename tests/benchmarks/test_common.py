"""benchmarks.common: the provenance every results file records, result files, spreads; serve_vs_vllm's setup."""

from __future__ import annotations

import json
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


def test_command_names_a_script_by_its_module() -> None:
    assert common.command([], "benchmarks.reproduce.nlu") == "python -m benchmarks.reproduce.nlu"


def test_write_results_adds_provenance_and_leaves_no_temporary_file(tmp_path: Path) -> None:
    out_json, out_md = common.write_results("x", {"rows": [1]}, "| a |\n", out=tmp_path)
    data = json.loads(out_json.read_text())
    assert data["rows"] == [1] and "command" in data["machine"] and out_md.read_text() == "| a |\n"
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

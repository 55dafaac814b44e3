"""The reproduction scripts' machinery: row caching and locking, the tables' row sets, equal budgets."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks.reproduce import figure3, nlg, nlu, rank, sweep
from benchmarks.tiny_models import make_classify_data, make_tiny_bert_dir


@pytest.fixture
def runs(tmp_path, monkeypatch) -> Path:
    monkeypatch.setattr(sweep, "RUNS", tmp_path / "runs")
    return tmp_path / "runs"


def test_a_row_is_locked_while_a_live_process_holds_it_and_taken_over_from_a_dead_one(runs) -> None:
    row = sweep.Row("r", ("m", "d"))
    assert sweep._take_lock(row)
    assert not sweep._take_lock(row)  # held by this (live) process
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    (row.out / sweep.LOCK).write_text(dead.stdout.strip())
    assert sweep._take_lock(row)  # the holder is gone: its lock is stale
    assert (row.out / sweep.LOCK).read_text() == str(os.getpid())


def test_run_row_skips_a_locked_row_and_reads_a_finished_one_without_running(runs, monkeypatch) -> None:
    def no_run(*args, **kwargs):
        raise AssertionError("nothing should run")

    monkeypatch.setattr(sweep.subprocess, "run", no_run)
    busy = sweep.Row("busy", ("m", "d"))
    busy.out.mkdir(parents=True)
    (busy.out / sweep.LOCK).write_text(str(os.getpid()))
    assert sweep.run_row(busy) is None
    assert (busy.out / sweep.LOCK).is_file()  # another sweep's lock is left alone

    done = sweep.Row("done", ("m", "d"), verb="eval")
    done.out.mkdir(parents=True)
    done.result_file.write_text(json.dumps({"metrics": {"bleu": 12.5}}))
    assert sweep.main_metric(sweep.run_row(done)) == 12.5


def test_run_row_trains_once_then_reads_the_cache(runs, tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(sweep, "git_state", lambda: {"commit": "c0ffee" * 7, "dirty": True})
    model = make_tiny_bert_dir(tmp_path / "bert")
    data = make_classify_data(tmp_path / "data", n_train=32, n_dev=8) / "train.jsonl"
    row = sweep.Row("tiny", (str(model), str(data), "--max-steps", "2", "--batch-size", "8", "--max-length", "16",
                             "--eval-every", "0", "--no-base-eval", "--threads", "1"))
    first = sweep.run_row(row, timeout=900)  # a loaded machine (a benchmark beside the suite) took > 300 s
    assert first is not None and first["step"] == 2 and 0.0 <= sweep.main_metric(first) <= 100.0
    assert not (row.out / sweep.LOCK).exists() and (row.out / "adapter" / "adapter_model.safetensors").is_file()
    assert row.command.startswith("lorakit train ") and row.command.endswith("--out runs/reproduce/tiny")
    # the commit the row's own process ran, which a sweep spanning several commits needs per row
    assert sweep.row_commit(row) == "c0ffeec0ffee+dirty"
    (row.out / "metrics.json").write_text(json.dumps({**first, "marker": 1}))
    assert sweep.run_row(row)["marker"] == 1  # cached: not trained again


def test_nlu_rows_cover_every_method_and_seed_once_with_first_seeds_first() -> None:
    rows = nlu.rows_for(["sst2", "trec", "subj"], [0, 1, 2], 120)
    assert len(rows) == len(nlu.METHODS) * (3 + 1 + 1) and len({r.key for r in rows}) == len(rows)
    assert {r.labels["seed"] for r in rows if r.labels["data"] != "sst2"} == {0}
    first = 3 * len(nlu.METHODS)
    assert all(r.labels["seed"] == 0 for r in rows[:first]) and all(r.labels["seed"] > 0 for r in rows[first:])
    for row in rows:
        assert "--test-split" in row.args and row.args[row.args.index("--max-steps") + 1] == "120"


def test_every_training_row_pins_the_base_precision() -> None:
    """lorakit's --base-dtype default (auto) picks bf16 where the CPU has it: a row must not depend on it."""
    from benchmarks.reproduce import many_tables, precision

    rows = [*nlu.rows_for(["sst2", "trec"], [0, 1], 120), *(rank.rank_row(r, 120) for r in (1, 8, 64)),
            *(rank.budget_row(name, 120) for name in rank.BUDGET), *nlg.train_rows(40, 100, 1),
            precision.sst2_row("bf16", 0), precision.e2e_row("nf4"), *(many_tables.solo_rank_row(r) for r in (4, 8))]
    for row in rows:
        assert row.args.count("--base-dtype") == 1, row.command
    assert all(r.args[r.args.index("--base-dtype") + 1] == "fp32" for r in nlu.rows_for(["sst2"], [0], 120))


def test_rank_rows_reuse_the_nlu_run_where_the_recipe_is_the_same() -> None:
    assert rank.rank_row(8, 120).key == nlu.nlu_row("sst2", "lora-qv-r8", 0, 120).key
    assert rank.rank_row(8, 120).args == nlu.nlu_row("sst2", "lora-qv-r8", 0, 120).args
    assert rank.budget_row("qv r=4", 120).key == rank.rank_row(4, 120).key
    r2 = rank.rank_row(2, 120)
    assert r2.args[r2.args.index("--alpha") + 1] == "4"  # alpha = 2r keeps alpha/r fixed


def test_equal_budget_rows_adapt_the_same_number_of_parameters() -> None:
    """Table 5's premise, on a BERT with minilm's width: q r=8, q,v r=4, q,k,v,o r=2 cost the same."""
    from transformers import BertConfig, BertModel

    import lorakit

    counts = {}
    for name, (targets, r) in rank.BUDGET.items():
        model = BertModel(BertConfig(vocab_size=50, hidden_size=384, num_hidden_layers=2, num_attention_heads=12,
                                     intermediate_size=64))
        lorakit.inject(model, lorakit.LoraSpec(r=r, alpha=2 * r, targets=(targets,)))
        counts[name] = lorakit.parameter_report(model).lora
    assert set(counts.values()) == {2 * 6144}, counts


def test_nlg_rows_share_the_schedule_and_differ_only_in_the_method() -> None:
    rows = nlg.train_rows(40, 100, 1)
    assert [r.labels["method"] for r in rows] == list(nlg.METHODS)
    tails = set()
    for row in rows:
        extra = nlg.METHODS[row.labels["method"]]
        assert row.args[:2 + len(extra)] == ("smollm2", "e2e", *extra)
        pin = row.args[2 + len(extra):4 + len(extra)]  # the base precision, pinned: full FT in fp32
        assert pin == ("--base-dtype", "fp32" if "--full" in extra else "bf16"), row.args
        tails.add(row.args[4 + len(extra):])
    assert len(tails) == 1 and "--max-steps" in next(iter(tails))
    base = nlg.base_row(100, 1)
    assert base.verb == "eval" and base.command.endswith("--json runs/reproduce/nlg-e2e-base-l100/eval.json")


def test_nlg_beam_rows_decode_each_trained_row_with_the_papers_beam_search(runs) -> None:
    (row,) = nlg.train_rows(40, 630, 2, epochs=1, lrs={"lora-qv-r8": ["2e-3"]}, base_dtype="fp32")[1:2]
    assert row.key == "nlg-e2e-lora-qv-r8-lr2e-3-e1-fp32-l630"  # another precision never shares a run folder
    (row.out / "adapter").mkdir(parents=True)
    result = {"config": {"eval_batch_size": 50, "max_new_tokens": 64}}
    beam = nlg.beam_row(row, result, 630, 2)
    assert beam.verb == "eval" and beam.key == row.key + "-beam10-gen"
    assert beam.args[:4] == ("smollm2", "e2e", "--adapter", str(row.out / "adapter"))
    text = " ".join(beam.args)
    assert "--num-beams 10 --length-penalty 0.9 --no-repeat-ngram-size 4" in text
    assert "--limit 630 --batch-size 50 --max-new-tokens 64" in text and text.endswith("--base-dtype fp32")
    line = nlg.add_beam({"method": "m", "bleu": 50.0}, beam, {"metrics": {"bleu": 51.0, "nist": 5.0}})
    assert line["bleu"] == 50.0 and line["bleu_beam"] == 51.0 and line["nist_beam"] == 5.0
    assert nlg.add_beam({"bleu": 1.0}, beam, None) == {"bleu": 1.0}  # not scored yet: the line as it was


def test_nlg_rows_with_checkpoint_selection_are_rows_of_their_own() -> None:
    last = nlg.train_rows(40, 630, 2, epochs=5, lrs={"lora-qv-r8": ["1e-3"]})
    chosen = nlg.train_rows(40, 630, 2, epochs=5, lrs={"lora-qv-r8": ["1e-3"]}, eval_every=530)
    (last_row,) = [r for r in last if r.labels["method"] == "lora-qv-r8@1e-3"]
    (chosen_row,) = [r for r in chosen if r.labels["method"] == "lora-qv-r8@1e-3"]
    assert " --eval-every 0 " in last_row.command and " --eval-every 530 " in chosen_row.command
    assert chosen_row.key == last_row.key.replace("-e5-", "-e5-ev530-")  # never the last checkpoint's cache


def test_nlg_keeps_the_earlier_results_file_when_nothing_new_is_measured(runs, tmp_path, monkeypatch, capsys) -> None:
    # A carried row (same command, run folder gone) whose beam step cannot run: the file must stay
    # as the earlier command wrote it, not be rewritten under this command line.
    rows = nlg.train_rows(40, 630, 2, epochs=2, lrs={"lora-qv-r8": ["1e-3"]}, base_dtype="bf16")
    (row,) = [r for r in rows if r.labels["method"] == "lora-qv-r8@1e-3"]
    monkeypatch.setattr(nlg, "RESULTS", tmp_path)
    earlier = {"machine": {"date": "then", "command": "the earlier command"}, "epochs": 2.0, "eval_limit": 630,
               "table": [{"method": row.labels["method"], "commands": [row.command], "runs": [row.key], "bleu": 58.0}]}
    (tmp_path / "search.json").write_text(json.dumps(earlier), encoding="utf-8")
    monkeypatch.setattr(nlg, "run_row", lambda *a, **k: pytest.fail("a carried row was re-run"))
    monkeypatch.setattr(nlg, "write_results", lambda *a, **k: pytest.fail("the earlier file was rewritten"))
    monkeypatch.setattr(sys, "argv", ["nlg", "--name", "search", "--epochs", "2", "--eval-limit", "630", "--threads", "2",
                                      "--methods", "lora-qv-r8", "--lrs", "lora-qv-r8=1e-3", "--base-dtype", "bf16",
                                      "--beam"])
    nlg.main()
    assert "nothing new measured" in capsys.readouterr().out
    assert json.loads((tmp_path / "search.json").read_text(encoding="utf-8")) == earlier


def test_decoding_rows_differ_only_in_the_papers_beam_search(runs) -> None:
    from benchmarks.reproduce import decoding

    greedy, beam = decoding.decoding_rows("adapters/smollm2/e2e", 630, 50, 64, "bf16", 2)
    assert greedy.verb == beam.verb == "eval" and greedy.key != beam.key
    assert beam.args == (*greedy.args, *nlg.BEAM)
    text = " ".join(greedy.args)
    assert text.startswith("smollm2 e2e --adapter adapters/smollm2/e2e --split test --limit 630 --batch-size 50")
    assert "--base-dtype bf16" in text  # the precision the card reports in, pinned


def test_decoding_rows_of_a_republished_adapter_do_not_read_the_old_weights_cache(runs, tmp_path, monkeypatch) -> None:
    from benchmarks.reproduce import decoding

    monkeypatch.setattr(decoding, "REPO", tmp_path)
    weights = tmp_path / "adapters" / "x" / "adapter_model.safetensors"
    weights.parent.mkdir(parents=True)
    weights.write_bytes(b"old weights")
    old = [r.key for r in decoding.decoding_rows("adapters/x", 630, 50, 64, "bf16", 2)]
    assert old == [r.key for r in decoding.decoding_rows("adapters/x", 630, 50, 64, "bf16", 2)]
    weights.write_bytes(b"new weights")
    new = [r.key for r in decoding.decoding_rows("adapters/x", 630, 50, 64, "bf16", 2)]
    assert not set(old) & set(new)


def test_the_defaults_folder_is_an_honest_rewrite_of_e2e_that_lorakit_reads_as_a_user_folder(data_root, tmp_path) -> None:
    from benchmarks.reproduce import defaults
    from lorakit.data import load_dataset
    from lorakit.data.recipes import E2E_PROMPT_PREFIX

    sizes = defaults.write_folder(tmp_path / "dir", str(data_root))
    train = load_dataset(str(tmp_path / "dir"), "train")  # lorakit's own held-out dev split leaves these
    test = load_dataset(str(tmp_path / "dir"), "test")
    recipe_test = load_dataset("e2e", "test", str(data_root))
    assert train.task == test.task == "generate" and sizes["test"] == len(test) == len(recipe_test) == 630
    assert 1_000 < sizes["train"] < 3_000  # "a few thousand rows", as a user's folder would have
    # Every test prompt keeps all the recipe's references; no test prompt was trained on.
    assert [e.references for e in test.examples] == [e.references for e in recipe_test.examples]
    assert not {e.prompt for e in train.examples} & {e.prompt for e in test.examples}
    first = train.examples[0].prompt
    assert not first.startswith(E2E_PROMPT_PREFIX) and "\n- name: " in first and "[" not in first


def test_defaults_rows_differ_from_the_defaults_row_only_in_their_searched_knobs(tmp_path) -> None:
    from benchmarks.reproduce import defaults

    rows = {r.labels["name"]: r for r in defaults.search_rows(list(defaults.SEARCH), tmp_path, 2)}
    base = rows.pop("defaults").args
    assert base == ("smollm2", str(tmp_path), "--base-dtype", "bf16", "--threads", "2")  # nothing searched passed
    for name, row in rows.items():
        assert row.args == (*base[:2], *defaults.SEARCH[name], "--no-base-eval", *base[2:]), name


def test_a_defaults_row_is_labelled_and_cached_by_the_recipe_lorakit_resolves_and_refuses_another(
        tmp_path, monkeypatch) -> None:
    # A change of default must re-run the defaults row, never read the run of the old defaults.
    from benchmarks.reproduce import defaults
    from lorakit.train import config

    (row,) = defaults.search_rows(["defaults"], tmp_path, 2)
    epochs = config.DEFAULT_EPOCHS["generate"]
    assert (row.labels["lr"], row.labels["batch_size"], row.labels["epochs"]) == (
        config.DEFAULT_LR[("lora", "generate")], config.DEFAULT_BATCH_SIZE["generate"], epochs)
    assert row.labels["setting"].startswith("the defaults: ") and f"{epochs:g} epochs" in row.labels["setting"]
    monkeypatch.setitem(config.DEFAULT_EPOCHS, "generate", epochs + 1)
    (moved,) = defaults.search_rows(["defaults"], tmp_path, 2)
    assert moved.key != row.key and moved.args == row.args
    ran = {"config": {"lr": row.labels["lr"], "batch_size": row.labels["batch_size"], "epochs": epochs}}
    defaults.check_recipe(row, ran)
    with pytest.raises(SystemExit, match="move it away"):
        defaults.check_recipe(moved, ran)


def test_the_defaults_page_names_the_base_score_once_and_prints_no_empty_cells(tmp_path) -> None:
    from benchmarks.reproduce import defaults

    rows = {r.labels["name"]: r for r in defaults.search_rows(["defaults", "e2"], tmp_path, 2)}
    cfg = {"lr": 1e-3, "batch_size": 8, "epochs": 3}

    def result(bleu: float, base: float | None) -> dict:
        test = {**dict.fromkeys(defaults.METRICS, 1.0), "bleu": bleu}
        return {"config": cfg, "step": 10, "train_seconds": 60, "test": test, "base": {"bleu": base}}

    table = [defaults.line(rows["defaults"], result(59.77, 14.06)), defaults.line(rows["e2"], result(58.32, None))]
    assert "base_bleu" not in table[1]
    page = defaults.markdown(defaults.machine([], module="benchmarks.reproduce.defaults"), {"train": 3, "test": 1}, table, 2)
    assert "None" not in page and page.count("14.06") == 1 and "gap 0.00" in page


def test_figure3_stamps_each_analysis_file_with_its_provenance(tmp_path, monkeypatch) -> None:
    # `lorakit analyze --json` records no machine block; figure3.py adds its own to every file it has written.
    monkeypatch.setattr(figure3, "REPO", tmp_path)

    def fake_lorakit(*args: str) -> None:
        (tmp_path / args[args.index("--json") + 1]).write_text(json.dumps({"analysis": args[1], "modules": [1]}))

    monkeypatch.setattr(figure3, "lorakit", fake_lorakit)
    figure3.analyze("amplification", "minilm", "runs/a8/adapter", "--json", "amp.json")
    report = json.loads((tmp_path / "amp.json").read_text())
    assert report["analysis"] == "amplification" and report["modules"] == [1]  # the analysis, unchanged
    assert report["lorakit_command"] == "lorakit analyze amplification minilm runs/a8/adapter --json amp.json"
    assert {"date", "lorakit_commit", "command", "cpu", "versions", "threads"} <= report["machine"].keys()


def test_latency_results_record_the_run(tmp_path, provenance) -> None:
    from benchmarks.reproduce import latency

    rows = [{"model": "m", "batch": 1, "seq": 8, "variant": "base", "median_ms": 2.0, "ratio_to_base": 1.0,
             "ratio_q1": 1.0, "ratio_q3": 1.0, "rounds": 5}]
    latency.write(rows, ["--reps", "5"], out=tmp_path)
    data = provenance(tmp_path / "latency.json", tmp_path / "latency.md", "python -m benchmarks.reproduce.latency --reps 5")
    assert data["rows"] == rows and "| m | 1 | 8 | base | 2 |" in (tmp_path / "latency.md").read_text()

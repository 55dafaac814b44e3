"""The big fuzz campaign behind promise 2 of RELIABILITY.md: malformed adapters fail cleanly.

Runs the strategies of ``benchmarks/reliability/fuzzkit.py`` for many more cases than the test suite does:
the whole load path (``read_adapter`` on a folder, then ``load_adapter`` onto a tiny Llama, GPT-2 or
BERT), the server's own load path (``AdapterBank.load``) and ``AdapterConfig.from_json`` alone. Counts outcomes, crashes (anything but ``ValueError`` /
``TypeError`` with a message, or a damaged model), hangs (per-case deadline), case times and memory.

Usage (from the repository root)::

    python -m benchmarks.reliability_fuzz      # 10,000 load + 3,000 server + 10,000 config cases, ~25 min on 2 busy cores
    python -m benchmarks.reliability_fuzz --cases 500 --bank-cases 200 --configs 500 --seed 7

Writes ``benchmarks/results/reliability_fuzz.json``; a crashing case's two files are kept under
``benchmarks/results/reliability_fuzz_crashes/`` for replay.
"""

from __future__ import annotations

import argparse
import contextlib
import resource
import sys
import time
import warnings
from collections import Counter
from pathlib import Path

from benchmarks.common import RESULTS, write_results_file


def _percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def write(result: dict, out: Path, argv: list[str] | None = None) -> Path:
    """``out`` (``NAME.json``): the campaign's outcomes, crashes, times and memory, with the run's provenance under ``machine``.

    Through :func:`benchmarks.common.write_results_file`: atomic, so an interrupted run leaves no half file.
    """
    return write_results_file(out, result, argv, "benchmarks.reliability_fuzz")


def main(argv: list[str] | None = None) -> int:
    """Run the campaign and print the figures; exit code 1 if any case crashed or hung."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cases", type=int, default=10_000, help="load-path cases [default: %(default)s]")
    parser.add_argument("--configs", type=int, default=10_000, help="from_json cases [default: %(default)s]")
    parser.add_argument("--bank-cases", type=int, default=3_000,
                        help="cases through the server's AdapterBank.load [default: %(default)s]")
    parser.add_argument("--seed", type=int, default=20260101, help="hypothesis seed [default: %(default)s]")
    parser.add_argument("--case-seconds", type=float, default=10.0, help="per-case deadline [default: %(default)s]")
    parser.add_argument("--replay-pool", type=int, default=300, help="cases kept for the memory replay")
    parser.add_argument("--replay-rounds", type=int, default=5, help="times the pool is re-run")
    parser.add_argument("--out", default=str(RESULTS / "reliability_fuzz.json"),
                        help="the results file, NAME.json (any other suffix becomes .json) [default: %(default)s]")
    args = parser.parse_args(argv)

    import torch
    from hypothesis import HealthCheck, Phase, given, seed, settings
    from hypothesis import strategies as st

    from benchmarks.reliability.fuzzkit import (
        ALLOWED_ERRORS,
        Crash,
        Hang,
        Harness,
        cases,
        default_factories,
        mutated_config,
        rss_mb,
    )
    from lorakit.io import AdapterConfig

    torch.set_num_threads(1)
    harness = Harness(default_factories(), case_seconds=args.case_seconds)
    crash_dir = RESULTS / "reliability_fuzz_crashes"
    outcomes: Counter[str] = Counter()
    errors: Counter[str] = Counter()
    messages: Counter[str] = Counter()
    crashes: Counter[str] = Counter()
    per_base: Counter[str] = Counter()
    times: list[float] = []
    pool: list[tuple[str, bytes, bytes]] = []
    rss_start = rss_mb()
    started = time.perf_counter()
    fuzz_settings = settings(max_examples=args.cases, deadline=None, database=None, phases=[Phase.generate],
                             suppress_health_check=list(HealthCheck))

    @seed(args.seed)
    @fuzz_settings
    @given(st.data())
    def one_case(data: st.DataObject) -> None:
        try:
            base, config, weights = data.draw(cases(harness))
        except Exception as exc:  # noqa: BLE001 - a bug of the generator, not of lorakit: count it, go on
            outcomes["generator_error"] += 1
            crashes[f"generator: {type(exc).__name__}: {str(exc)[:120]}"] += 0
            return
        if len(pool) < args.replay_pool:
            pool.append((base, config, weights))
        t0 = time.perf_counter()
        try:
            outcome = harness.run(base, config, weights)
        except (Crash, Hang) as exc:
            key = f"{type(exc).__name__}: {str(exc)[:160]}"
            crashes[key] += 1
            folder = crash_dir / f"{len(crashes):03d}"
            if crashes[key] == 1:
                folder.mkdir(parents=True, exist_ok=True)
                (folder / "adapter_config.json").write_bytes(config)
                (folder / "adapter_model.safetensors").write_bytes(weights)
                (folder / "what.txt").write_text(f"base: {base}\n{key}\n")
            outcomes["crash"] += 1
        else:
            outcomes[outcome.status] += 1
            if outcome.status == "refused":
                errors[outcome.error] += 1
                messages[_message_kind(outcome.message)] += 1
        per_base[base] += 1
        times.append(time.perf_counter() - t0)
        if len(times) % 1000 == 0:
            print(f"  {len(times)} cases, {dict(outcomes)}, RSS {rss_mb():.0f} MiB", file=sys.stderr, flush=True)

    one_case()
    load_seconds = time.perf_counter() - started
    rss_end = rss_mb()
    # Memory of lorakit's load path alone (hypothesis keeps growing bookkeeping of its own): replay the
    # first cases several times; RSS must stay flat.
    import gc

    gc.collect()
    rss_replay_start = rss_mb()
    replayed = 0
    for _ in range(args.replay_rounds):
        for base, config, weights in pool:
            with contextlib.suppress(Crash, Hang):  # already counted above
                harness.run(base, config, weights)
            replayed += 1
    gc.collect()
    rss_replay_end = rss_mb()

    bank_outcomes: Counter[str] = Counter()
    bank_crashes: Counter[str] = Counter()

    @seed(args.seed + 2)
    @settings(max_examples=args.bank_cases, deadline=None, database=None, phases=[Phase.generate],
              suppress_health_check=list(HealthCheck))
    @given(st.data())
    def one_bank_case(data: st.DataObject) -> None:
        try:
            base, config, weights = data.draw(cases(harness))
        except Exception:  # noqa: BLE001 - a generator bug, counted
            bank_outcomes["generator_error"] += 1
            return
        try:
            bank_outcomes[harness.run_bank(base, config, weights).status] += 1
        except (Crash, Hang) as exc:
            bank_outcomes["crash"] += 1
            bank_crashes[f"{type(exc).__name__}: {str(exc)[:160]}"] += 1

    bank_started = time.perf_counter()
    one_bank_case()
    bank_seconds = time.perf_counter() - bank_started

    config_outcomes: Counter[str] = Counter()
    config_crashes: Counter[str] = Counter()
    configs = [b.config for b in harness.bases.values()]

    @seed(args.seed + 1)
    @settings(max_examples=args.configs, deadline=None, database=None, phases=[Phase.generate],
              suppress_health_check=list(HealthCheck))
    @given(st.sampled_from(configs).flatmap(mutated_config))
    def one_config(data: object) -> None:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                AdapterConfig.from_json(data, "adapter_config.json").to_spec()
            config_outcomes["ok"] += 1
        except ALLOWED_ERRORS as exc:
            config_outcomes["refused" if str(exc).strip() else "crash"] += 1
        except Exception as exc:  # noqa: BLE001 - counting crashes is the point
            config_outcomes["crash"] += 1
            config_crashes[f"{type(exc).__name__}: {str(exc)[:160]}"] += 1

    one_config()
    harness.close()
    total_seconds = time.perf_counter() - started
    result = {

        "seed": args.seed,
        "load_path": {
            "cases": sum(outcomes.values()), "outcomes": dict(outcomes), "crashes": dict(crashes),
            "hangs": sum(v for k, v in crashes.items() if k.startswith("Hang")),
            "refused_by_error_type": dict(errors), "by_base_model": dict(per_base),
            "refusal_kinds": dict(messages.most_common(25)),
            "case_ms": {"p50": 1e3 * _percentile(times, 0.5), "p99": 1e3 * _percentile(times, 0.99),
                        "max": 1e3 * max(times, default=float("nan"))},
            "deadline_s": args.case_seconds, "seconds": load_seconds,
            "rss_mib": {"start": rss_start, "end": rss_end, "growth_with_hypothesis": rss_end - rss_start,
                        "peak": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024},
            "replay": {"cases": replayed, "rss_start_mib": rss_replay_start, "rss_end_mib": rss_replay_end,
                       "growth_mib": rss_replay_end - rss_replay_start},
        },
        "server_bank_load": {"cases": sum(bank_outcomes.values()), "outcomes": dict(bank_outcomes),
                             "crashes": dict(bank_crashes), "seconds": bank_seconds},
        "from_json": {"cases": sum(config_outcomes.values()), "outcomes": dict(config_outcomes),
                      "crashes": dict(config_crashes)},
        "seconds": total_seconds,
    }
    out = write(result, Path(args.out), argv)
    lp = result["load_path"]
    print(f"load path : {lp['cases']} cases ({dict(outcomes)}), {len(crashes)} distinct crashes, "
          f"{lp['hangs']} hangs; case time p50 {lp['case_ms']['p50']:.1f} ms, p99 {lp['case_ms']['p99']:.1f} ms, "
          f"max {lp['case_ms']['max']:.0f} ms (deadline {args.case_seconds:.0f} s); "
          f"RSS {rss_start:.0f} -> {rss_end:.0f} MiB (peak {lp['rss_mib']['peak']:.0f}, hypothesis included)")
    print(f"replay    : {replayed} cases re-run, RSS {rss_replay_start:.0f} -> {rss_replay_end:.0f} MiB "
          f"({rss_replay_end - rss_replay_start:+.1f} MiB)")
    print(f"server    : {result['server_bank_load']['cases']} cases through AdapterBank.load ({dict(bank_outcomes)})")
    print(f"from_json : {result['from_json']['cases']} cases ({dict(config_outcomes)})")
    for key, count in crashes.most_common():
        print(f"  CRASH x{count}: {key}")
    for key, count in bank_crashes.most_common():
        print(f"  SERVER CRASH x{count}: {key}")
    for key, count in config_crashes.most_common():
        print(f"  CONFIG CRASH x{count}: {key}")
    print(f"wrote {out} in {total_seconds:.0f} s")
    return 1 if crashes or config_crashes or bank_crashes else 0


def _message_kind(message: str) -> str:
    """A refusal message without its case-specific details (for grouping)."""
    head = message.replace("CASE/", "")
    for stop in (" (", ": base_model", " got ", "[", "="):
        cut = head.find(stop, 12)
        if cut > 0:
            head = head[:cut]
    return head[:90]


if __name__ == "__main__":
    raise SystemExit(main())

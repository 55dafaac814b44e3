"""Greedy texts of lorakit's engine in other base precisions vs fp32, on the same E2E test requests.

The requests are serve_vs_vllm.py's (chat, ``"Describe this restaurant in one sentence: " + MR``,
``max_tokens`` 32, greedy) on the base model and on the ``e2e`` adapter, run in-process through
``LoraServer`` (no HTTP), one precision after another. Prints and writes how many texts equal the
fp32 text, per precision and model.

    python -m benchmarks.serve_agreement --dtypes bf16 --mrs 20     # writes results/serve_agreement.{json,md}
"""

from __future__ import annotations

import argparse
from pathlib import Path

from benchmarks.common import REPO, RESULTS, machine, write_page
from benchmarks.serve_vs_vllm import PREFIX, test_mrs  # one list of requests for both benchmarks


def texts(dtype: str, args, mrs: list[str]) -> dict[str, list[str]]:
    """Greedy texts of every MR on the base and on the adapter, with the base in ``dtype``."""
    import torch

    from lorakit.serve import LoraServer, SamplingParams

    torch.set_num_threads(args.threads)
    server = LoraServer.from_pretrained(args.model, dtype=dtype, max_batch=args.batch)
    server.add_adapter("e2e", args.adapter)
    ids = [server.encode_chat([{"role": "user", "content": PREFIX + mr}]) for mr in mrs]
    params = SamplingParams(max_tokens=args.max_tokens, temperature=0.0)
    out = {}
    for label, adapter in (("base", None), ("e2e", "e2e")):
        done = server.generate_ids(ids, [adapter] * len(ids), params)
        out[label] = [c.text for c in done]
    server.close()
    return out


def write(args, mrs: list[str], runs: dict[str, dict[str, list[str]]], argv: list[str] | None = None) -> None:
    """``<out>/serve_agreement.{json,md}``: texts equal to fp32's per dtype and model, with provenance."""
    rows = [{"dtype": d, "model": m, "same_as_fp32": f"{sum(a == b for a, b in zip(runs[d][m], runs['fp32'][m], strict=True))}/{len(mrs)}"}
            for d in args.dtypes for m in ("base", "e2e")]
    lines = ["| dtype | model | same text as fp32 |", "|---|---|---|"]
    lines += [f"| {r['dtype']} | {r['model']} | {r['same_as_fp32']} |" for r in rows]
    write_page("serve_agreement", f"Greedy texts vs fp32 ({args.model}, {len(mrs)} E2E test MRs, max_tokens "
               f"{args.max_tokens})", lines, {"mrs": mrs, "rows": rows, "texts": runs},
               machine(argv, "benchmarks.serve_agreement"), out=args.out)


def main(argv: list[str] | None = None) -> int:
    """Run fp32, then each other dtype; write the agreement table."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="smollm2")
    p.add_argument("--adapter", type=Path, default=REPO / "adapters" / "smollm2" / "e2e")
    p.add_argument("--data-root", type=Path, default=None, help="the data sets (default: $LORAKIT_DATA, else ../shared/data)")
    p.add_argument("--dtypes", nargs="+", default=["bf16"], help="precisions compared with fp32")
    p.add_argument("--mrs", type=int, default=20)
    p.add_argument("--max-tokens", type=int, default=32)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", type=Path, default=RESULTS)
    args = p.parse_args(argv)
    mrs = test_mrs(args.data_root, args.mrs)
    runs = {"fp32": texts("fp32", args, mrs)}
    for dtype in args.dtypes:
        runs[dtype] = texts(dtype, args, mrs)
    write(args, mrs, runs, argv)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Serve one base model and many adapters over an OpenAI-compatible HTTP API.

``lorakit serve smollm2 --adapters adapters/`` answers ``/v1/completions`` and
``/v1/chat/completions`` where ``model`` names an adapter folder under ``--adapters`` (loaded on
first use, least recently used evicted beyond ``--max-loaded``) or the base model itself. With
``--task classify`` it answers ``/v1/classify`` instead. ``/health`` is open; every other route
needs ``Authorization: Bearer KEY`` when ``--api-key`` (or ``LORAKIT_API_KEY``) is set.
"""

from __future__ import annotations

import argparse
import os

from lorakit.cli.common import positive_int
from lorakit.cli.options import add_config_options
from lorakit.errors import LorakitError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``lorakit serve``."""
    parser.add_argument("model", help="embedded model name (smollm2, minilm) or a local Hugging Face folder")
    parser.add_argument("--adapters", required=True, help="folder holding one adapter folder per name")
    parser.add_argument("--task", choices=("generate", "classify"), default="generate",
                        help="generate text (default) or classify with classification adapters")
    parser.add_argument("--num-labels", type=positive_int, default=None,
                        help="classes of the classification head (task classify, base without a head)")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    parser.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    parser.add_argument("--max-loaded", type=positive_int, default=8, help="adapters resident at once (LRU beyond)")
    parser.add_argument("--max-batch", type=positive_int, default=16, help="rows in the running batch")
    parser.add_argument("--no-pack", action="store_true",
                        help="keep the base's Linear weights in their plain layout (CPU: saves the memory of the "
                             "oneDNN-prepacked copy, slower decode steps)")
    parser.add_argument("--prefix-cache-mb", type=int, default=256,
                        help="memory for keys/values of prompt prefixes reused by later prompts of the same "
                             "adapter (default 256; 0 turns prefix caching off)")
    parser.add_argument("--max-queue", type=positive_int, default=64, help="waiting requests before 429")
    parser.add_argument("--max-prompt-tokens", type=positive_int, default=2048, help="longest prompt accepted")
    parser.add_argument("--max-tokens", type=positive_int, default=1024, help="largest max_tokens accepted")
    parser.add_argument("--max-body-bytes", type=positive_int, default=1 << 20, help="largest request body")
    parser.add_argument("--api-key", default=None,
                        help="bearer key required on every route but /health (default: $LORAKIT_API_KEY if set)")
    # --base-dtype as train spells it; --dtype is serve's older spelling of the same option.
    add_config_options(parser, ["base_dtype", "device"], flags={"base_dtype": ("--base-dtype", "--dtype")},
                       helps={"base_dtype": "precision of the frozen base: auto (bf16 where the hardware multiplies "
                                            "bf16 natively, else fp32), fp32, bf16, fp16, or int8/nf4 (Linear layers "
                                            "quantized with bitsandbytes); adapters are kept in the activations' type"})
    parser.add_argument("--preload", nargs="*", default=(), metavar="NAME", help="adapters to load at start")


def run(args: argparse.Namespace) -> int:
    """Load the base, preload adapters, serve until interrupted."""
    from lorakit.serve.api import LoraServer
    from lorakit.serve.http import HttpSettings, run
    from lorakit.serve.http_generate import Limits

    if not 0 < args.port < 65536:
        raise LorakitError(f"--port must be in 1..65535, got {args.port}")
    if args.prefix_cache_mb < 0:
        raise LorakitError(f"--prefix-cache-mb must be 0 (off) or more, got {args.prefix_cache_mb}")
    if not os.path.isdir(args.adapters):  # fail before spending time loading the model
        raise LorakitError(f"adapters folder not found: {args.adapters}")
    from lorakit.train.distributed import resolve_device

    server = LoraServer.from_pretrained(args.model, task=args.task, num_labels=args.num_labels,
                                        dtype=args.base_dtype, device=resolve_device(args.device), pack=not args.no_pack,
                                        adapters_dir=args.adapters, max_loaded=args.max_loaded,
                                        max_batch=args.max_batch, max_queue=args.max_queue,
                                        prefix_cache_mb=args.prefix_cache_mb)
    p = server.precision
    quantized = f", {p['quantized_linears']} Linear layers quantized" if p["quantized_linears"] else ""
    quantized += f", {p['packed_linears']} Linear layers prepacked for oneDNN" if p["packed_linears"] else ""
    print(f"base in {p['base_dtype']} on {p['device']} (activations {p['compute_dtype']}{quantized})")
    for name in args.preload:
        info = server.add_adapter(name)
        print(f"loaded adapter {name} (rank {info.rank}, {info.modules} modules, {info.ready_ms:.1f} ms)")
    api_key = args.api_key or os.environ.get("LORAKIT_API_KEY") or None
    settings = HttpSettings(api_key=api_key, max_body_bytes=args.max_body_bytes,
                            limits=Limits(max_prompt_tokens=args.max_prompt_tokens, max_tokens=args.max_tokens))
    if args.host not in ("127.0.0.1", "localhost", "::1") and api_key is None:
        print(f"warning: serving on {args.host} without --api-key: anyone who can reach it can use it")
    print(f"serving {server.name} with adapters from {args.adapters} on http://{args.host}:{args.port}")
    run(server, args.host, args.port, settings)
    return 0

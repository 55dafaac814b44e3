"""``load_model``: a Hugging Face model + tokenizer for a task, from an embedded name or a local folder.

Always offline (``local_files_only=True``, ``HF_HUB_OFFLINE=1``): lorakit never downloads weights.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import torch
from safetensors import SafetensorError

from lorakit.data.examples import TASKS as DATA_TASKS
from lorakit.errors import LorakitError
from lorakit.io.storage import PICKLE_SUFFIXES
from lorakit.models.resolve import resolve_model_path

if TYPE_CHECKING:
    from transformers import PretrainedConfig, PreTrainedModel, PreTrainedTokenizerBase

__all__ = ["TASKS", "LoadedModel", "Task", "is_decoder_config", "load_model", "model_family"]

logger = logging.getLogger(__name__)

Task = Literal["base", "classify", "generate"]
TASKS: tuple[str, ...] = ("base", *DATA_TASKS)  # "base": the bare model, no head

# config.model_type → family name used by target presets and key naming; anything else is "other".
_FAMILIES = {"bert": "bert", "llama": "llama", "gpt2": "gpt2"}
# Decoder-only model types, for folders whose config lists no architectures to tell us.
_DECODER_TYPES = frozenset({"llama", "gpt2", "mistral", "qwen2", "qwen3", "gemma", "gemma2", "phi", "phi3",
                            "gpt_neox", "opt", "falcon", "olmo", "smollm3"})


@dataclass
class LoadedModel:
    """A loaded model with its tokenizer and where it came from."""

    model: PreTrainedModel  # in eval mode, on CPU, in the requested dtype
    tokenizer: PreTrainedTokenizerBase  # always has a pad token; keeps the folder's chat template
    name: str  # what the caller passed (embedded name or path), for messages and metadata
    source_path: Path  # the folder actually loaded (the cache folder for a converted GGUF)
    task: str  # one of TASKS


def load_model(
    name_or_path: str | os.PathLike[str],
    task: str = "base",
    *,
    num_labels: int | None = None,
    dtype: torch.dtype = torch.float32,
) -> LoadedModel:
    """Load an embedded model (``minilm``, ``smollm2``) or a local HF folder for ``task``.

    Tasks: ``"base"`` gives the bare encoder (``AutoModel``) or, for a decoder, the causal LM with its
    head; ``"classify"`` gives ``AutoModelForSequenceClassification`` (``num_labels`` is required when
    the checkpoint has no classification head yet, since the new head is sized by it); ``"generate"``
    gives ``AutoModelForCausalLM`` and needs a decoder. The tokenizer gets a pad token (the eos token if
    it has none); for ``"generate"`` it pads on the left, as batched generation with a decoder requires.
    Raises ValueError for an unknown task, a bad ``num_labels`` or an unknown model.
    """
    if task not in TASKS:
        raise LorakitError(f"unknown task {task!r}; expected one of {', '.join(TASKS)}")
    if not isinstance(dtype, torch.dtype):
        raise TypeError(f"dtype must be a torch.dtype such as torch.float32, got {dtype!r}")
    if num_labels is not None:
        if task != "classify":
            raise LorakitError(f"num_labels={num_labels!r} only applies to task 'classify', not {task!r}")
        if isinstance(num_labels, bool) or not isinstance(num_labels, int) or num_labels < 1:
            raise LorakitError(f"num_labels must be a positive int, got {num_labels!r}")
    path = resolve_model_path(name_or_path)
    _require_safetensors(path)

    os.environ["HF_HUB_OFFLINE"] = "1"  # belt and braces with local_files_only: never reach a hub
    from transformers import AutoConfig, AutoTokenizer

    # trust_remote_code=False: never run a folder's own Python (transformers would otherwise ask on a TTY).
    config = AutoConfig.from_pretrained(path, local_files_only=True, trust_remote_code=False)
    decoder = is_decoder_config(config)
    tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True, trust_remote_code=False)
    _ensure_pad_token(tokenizer, path)
    if task == "generate":
        if not decoder:
            raise LorakitError(
                f"task 'generate' needs a decoder (causal LM); {name_or_path!r} is an encoder "
                f"(model_type {config.model_type!r}); use task 'base' or 'classify'"
            )
        tokenizer.padding_side = "left"  # right padding would put pad tokens between prompt and output

    auto_class, overrides, new_head = _model_class_for(task, decoder, config, num_labels, tokenizer, name_or_path)
    from lorakit.models.quiet import quiet_transformers

    with quiet_transformers():
        try:
            model, info = auto_class.from_pretrained(
                path, local_files_only=True, dtype=dtype, output_loading_info=True, use_safetensors=True,
                trust_remote_code=False, **overrides
            )
        except SafetensorError as exc:  # a damaged weights file is the user's to replace, not a bug
            raise LorakitError(f"{path}: a weights file is not readable safetensors ({exc})") from None
    _log_loading_info(model, info, new_head, str(name_or_path))
    generation_config = getattr(model, "generation_config", None)
    if generation_config is not None and generation_config.pad_token_id is None:
        # Otherwise generate() warns on every call and guesses the same value itself.
        generation_config.pad_token_id = tokenizer.pad_token_id
    model.eval()
    return LoadedModel(model=model, tokenizer=tokenizer, name=str(name_or_path), source_path=path, task=task)


def _require_safetensors(path: Path) -> None:
    """Refuse a folder whose weights exist only as pickle files: lorakit never unpickles (they can run code)."""
    if any(path.glob("*.safetensors")):
        return
    pickles = sorted(p.name for p in path.iterdir() if p.suffix in PICKLE_SUFFIXES)
    if pickles:
        raise LorakitError(
            f"{path} holds its weights only as pickle files ({', '.join(pickles)}); lorakit loads safetensors "
            f"only, because unpickling can run arbitrary code. Convert them once with the tool that wrote them"
        )


def model_family(model: Any) -> str:
    """``"bert"``, ``"llama"``, ``"gpt2"`` or ``"other"``, from ``model.config.model_type``.

    Accepts any object; a model without an HF config (plain torch) is ``"other"``.
    """
    model_type = getattr(getattr(model, "config", None), "model_type", None)
    return _FAMILIES.get(model_type, "other") if isinstance(model_type, str) else "other"


def is_decoder_config(config: PretrainedConfig) -> bool:
    """Whether an HF config describes a decoder-only (causal LM) model."""
    if getattr(config, "is_decoder", False):
        return True
    architectures = getattr(config, "architectures", None) or []
    if architectures:
        return any(a.endswith(("ForCausalLM", "LMHeadModel")) for a in architectures)
    return getattr(config, "model_type", None) in _DECODER_TYPES


def _model_class_for(
    task: str, decoder: bool, config: PretrainedConfig, num_labels: int | None,
    tokenizer: PreTrainedTokenizerBase, name: object,
) -> tuple[Any, dict[str, Any], bool]:
    """The auto class, config overrides and whether a classification head is created fresh."""
    from transformers import AutoModel, AutoModelForCausalLM, AutoModelForSequenceClassification

    if task == "generate" or (task == "base" and decoder):
        return AutoModelForCausalLM, {}, False
    if task == "base":
        return AutoModel, {}, False
    has_head = any(a.endswith("ForSequenceClassification") for a in getattr(config, "architectures", None) or [])
    if num_labels is None:
        if not has_head:
            raise LorakitError(
                f"task 'classify' on {name!r} creates a new classification head: pass num_labels "
                f"(the number of classes)"
            )
        num_labels = config.num_labels
    elif has_head and num_labels != config.num_labels:
        raise LorakitError(
            f"{name!r} already has a classification head with {config.num_labels} labels, "
            f"but num_labels={num_labels} was asked for"
        )
    overrides: dict[str, Any] = {"num_labels": num_labels}
    if getattr(config, "pad_token_id", None) is None:
        # Decoder classifiers pool the last non-pad token and fail on batches without a pad id in config.
        overrides["pad_token_id"] = tokenizer.pad_token_id
    return AutoModelForSequenceClassification, overrides, not has_head


def _ensure_pad_token(tokenizer: PreTrainedTokenizerBase, path: Path) -> None:
    """Give the tokenizer a pad token: batching needs one, and decoders (Llama, GPT-2) often lack it."""
    if tokenizer.pad_token is not None:
        return
    if tokenizer.eos_token is None:
        raise LorakitError(f"the tokenizer in {path} has neither a pad nor an eos token to pad batches with")
    # The attention mask hides padding, so reusing eos as pad changes no output.
    tokenizer.pad_token = tokenizer.eos_token


def _log_loading_info(model: PreTrainedModel, info: dict[str, Any], new_head: bool, name: str) -> None:
    """One line per kind of key difference instead of transformers' multi-line table.

    A freshly created classification head is expected (INFO); weights missing from the body are not
    (WARNING): they would be random and silently spoil every result.
    """
    missing = sorted(info.get("missing_keys") or [])
    unexpected = sorted(info.get("unexpected_keys") or [])
    prefix = getattr(model, "base_model_prefix", "")
    is_wrapper = bool(prefix) and getattr(model, "base_model", model) is not model
    head = [k for k in missing if is_wrapper and not k.startswith(prefix + ".")] if new_head else []
    body = [k for k in missing if k not in head]
    if head:
        logger.info("%s: new classification head initialised randomly (train it): %s", name, ", ".join(head))
    if body:
        logger.warning("%s: %d weights missing from the checkpoint, initialised randomly: %s",
                       name, len(body), ", ".join(body[:8]) + (" ..." if len(body) > 8 else ""))
    if unexpected:  # e.g. a pretraining head the chosen class does not use
        logger.info("%s: %d checkpoint weights unused: %s",
                    name, len(unexpected), ", ".join(unexpected[:8]) + (" ..." if len(unexpected) > 8 else ""))

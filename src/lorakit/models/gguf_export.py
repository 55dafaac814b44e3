"""Write a (merged) Hugging Face Llama model as a GGUF file that llama.cpp, Ollama and transformers load.

::

    export_gguf(model, tokenizer, "model.gguf", dtype="q8_0")

The file follows llama.cpp's own converter (``convert_hf_to_gguf.py``), written with the ``gguf``
package's ``GGUFWriter``:

- metadata ``llama.*`` from the config (context, sizes, heads, RoPE base, RMS-norm epsilon);
- tensors renamed with ``gguf``'s own name map (``model.layers.0.self_attn.q_proj.weight`` →
  ``blk.0.attn_q.weight``); q/k projections permuted to GGML's RoPE layout (transformers' GGUF
  loader undoes exactly this); 1-D tensors (norms) stay float32, matrices are ``f16`` or ``q8_0``
  (a matrix whose rows do not split into 32-value blocks falls back to f16, as llama.cpp does);
  tied embeddings write no ``output.weight``;
- the tokenizer as llama.cpp's ``gpt2`` (byte-level BPE) vocabulary: tokens, token types (control
  for special tokens, user-defined for other added tokens, unused for embedding rows past the
  vocabulary), merges, special ids, ``add_bos_token`` and the chat template. ``tokenizer_source``
  copies every ``tokenizer.*`` field of an existing GGUF instead (the embedded ``smollm2`` came from
  one: its ``tokenizer.ggml.pre`` "smollm" tells llama.cpp how to pre-split text).

The file is written next to its destination and renamed into place, so a failed export leaves no
half-written file behind.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from lorakit.errors import LorakitError
from lorakit.io.atomic import replacing

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

__all__ = ["EXPORT_DTYPES", "embedded_gguf_source", "export_gguf"]

EXPORT_DTYPES = ("f16", "q8_0")
_ARCHITECTURES = ("llama",)


def _permute(weight: torch.Tensor, heads: int) -> torch.Tensor:
    """HF's rotary layout (first half / second half of each head) → GGML's (interleaved pairs)."""
    return weight.reshape(heads, 2, weight.shape[0] // heads // 2, *weight.shape[1:]).swapaxes(1, 2).reshape(
        weight.shape)


def _check_model(model: PreTrainedModel) -> Any:
    config = model.config
    if config.model_type not in _ARCHITECTURES:
        raise LorakitError(f"GGUF export supports the {', '.join(_ARCHITECTURES)} architecture; "
                           f"this model is {config.model_type!r}")
    rope = getattr(config, "rope_scaling", None) or {}
    if rope.get("rope_type", rope.get("type", "default")) != "default":
        raise LorakitError(f"GGUF export does not write RoPE scaling ({rope}); only plain RoPE is supported")
    if getattr(config, "attention_bias", False) or getattr(config, "mlp_bias", False):
        raise LorakitError("GGUF export does not write attention/MLP biases; this Llama has them")
    leftovers = [n for n, m in model.named_modules() if not type(m).__module__.startswith(("torch.", "transformers"))]
    if leftovers:
        raise LorakitError(f"merge and unload the LoRA layers before exporting (e.g. {leftovers[0]})")
    return config


def _write_config(writer, config, name: str) -> None:
    heads = config.num_attention_heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads
    writer.add_name(name)
    writer.add_context_length(config.max_position_embeddings)
    writer.add_embedding_length(config.hidden_size)
    writer.add_block_count(config.num_hidden_layers)
    writer.add_feed_forward_length(config.intermediate_size)
    writer.add_head_count(heads)
    writer.add_head_count_kv(getattr(config, "num_key_value_heads", None) or heads)
    writer.add_rope_dimension_count(head_dim)
    theta = getattr(config, "rope_theta", None) or (getattr(config, "rope_parameters", None) or {}).get("rope_theta")
    writer.add_rope_freq_base(float(theta if theta is not None else 10000.0))
    writer.add_layer_norm_rms_eps(config.rms_norm_eps)
    writer.add_vocab_size(config.vocab_size)
    if head_dim != config.hidden_size // heads:  # llama.cpp assumes hidden/heads unless told
        writer.add_key_length(head_dim)
        writer.add_value_length(head_dim)


def _tensor_data(data: np.ndarray, dtype: str):
    """(array to write, its GGML type): float32 vectors; f16 or q8_0 matrices."""
    import gguf

    if data.ndim == 1:
        return data.astype(np.float32), gguf.GGMLQuantizationType.F32
    if dtype == "q8_0" and data.shape[-1] % 32 == 0:
        return gguf.quants.quantize(data.astype(np.float32), gguf.GGMLQuantizationType.Q8_0), \
            gguf.GGMLQuantizationType.Q8_0
    return data.astype(np.float16), gguf.GGMLQuantizationType.F16


def _write_tensors(writer, model: PreTrainedModel, config, dtype: str) -> None:
    import gguf

    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, config.num_hidden_layers)
    heads = config.num_attention_heads
    kv_heads = getattr(config, "num_key_value_heads", None) or heads
    tied = bool(getattr(config, "tie_word_embeddings", False))
    for hf_name, tensor in model.state_dict().items():
        if tied and hf_name == "lm_head.weight":
            continue  # llama.cpp reuses token_embd.weight
        if hf_name.endswith("rotary_emb.inv_freq"):
            continue
        gguf_name = names.get_name(hf_name, try_suffixes=(".weight", ".bias"))
        if gguf_name is None:
            raise LorakitError(f"no GGUF name for tensor {hf_name!r}")
        weight = tensor.detach().float().cpu()
        if hf_name.endswith("self_attn.q_proj.weight"):
            weight = _permute(weight, heads)
        elif hf_name.endswith("self_attn.k_proj.weight"):
            weight = _permute(weight, kv_heads)
        if not torch.isfinite(weight).all():
            raise LorakitError(f"tensor {hf_name!r} holds non-finite values; nothing was written")
        data, qtype = _tensor_data(weight.numpy(), dtype)
        writer.add_tensor(gguf_name, data, raw_dtype=qtype)


def _write_hf_tokenizer(writer, tokenizer: PreTrainedTokenizerBase, vocab_size: int) -> None:
    import gguf

    backend = getattr(tokenizer, "backend_tokenizer", None)
    spec = json.loads(backend.to_str()) if backend is not None else {}
    model = spec.get("model") or {}
    byte_level = "ByteLevel" in json.dumps(spec.get("pre_tokenizer")) or "ByteLevel" in json.dumps(spec.get("decoder"))
    if model.get("type") != "BPE" or not byte_level:
        raise LorakitError("GGUF export writes byte-level BPE tokenizers (GPT-2 style, llama.cpp's 'gpt2'); this "
                           f"tokenizer is {model.get('type')!r}{'' if byte_level else ' without byte-level'}")
    by_id = {i: t for t, i in tokenizer.get_vocab().items()}
    added = {t.content: t for t in tokenizer.added_tokens_decoder.values()}
    tokens, types = [], []
    for i in range(vocab_size):
        token = by_id.get(i)
        if token is None:
            tokens.append(f"[PAD{i}]")
            types.append(gguf.TokenType.UNUSED)
        elif token in added:
            tokens.append(token)
            types.append(gguf.TokenType.CONTROL if added[token].special else gguf.TokenType.USER_DEFINED)
        else:
            tokens.append(token)
            types.append(gguf.TokenType.NORMAL)
    merges = [m if isinstance(m, str) else " ".join(m) for m in model.get("merges", [])]
    writer.add_tokenizer_model("gpt2")
    pre = spec.get("pre_tokenizer") or {}
    if pre.get("type") == "ByteLevel" and pre.get("use_regex", True):
        writer.add_tokenizer_pre("gpt-2")  # the plain GPT-2 split regex
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    writer.add_token_merges(merges)
    for token_id, add in ((tokenizer.bos_token_id, writer.add_bos_token_id), (tokenizer.eos_token_id,
                          writer.add_eos_token_id), (tokenizer.unk_token_id, writer.add_unk_token_id),
                          (tokenizer.pad_token_id, writer.add_pad_token_id)):
        if token_id is not None:
            add(int(token_id))
    writer.add_add_bos_token(bool(getattr(tokenizer, "add_bos_token", False)))
    if getattr(tokenizer, "chat_template", None):
        writer.add_chat_template(tokenizer.chat_template)


def _copy_tokenizer_fields(writer, source: Path) -> None:
    """Every ``tokenizer.*`` field of the GGUF file ``source``, with its exact types."""
    import gguf

    reader = gguf.GGUFReader(str(source))
    copied = 0
    for key, field in reader.fields.items():
        if not key.startswith("tokenizer."):
            continue
        main = field.types[0]
        if main == gguf.GGUFValueType.ARRAY:
            sub = field.types[-1]
            values = [bytes(field.parts[i]) if sub == gguf.GGUFValueType.STRING else field.parts[i].tolist()[0]
                      for i in field.data]
            writer.add_key_value(key, values, main, sub_type=sub)
        elif main == gguf.GGUFValueType.STRING:
            writer.add_key_value(key, bytes(field.parts[field.data[0]]).decode("utf-8"), main)
        else:
            writer.add_key_value(key, field.parts[field.data[0]].tolist()[0], main)
        copied += 1
    if not copied:
        raise LorakitError(f"{source} holds no tokenizer metadata to copy")


def export_gguf(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, out: str | os.PathLike[str], *,
                dtype: str = "f16", name: str | None = None, tokenizer_source: str | os.PathLike[str] | None = None
                ) -> Path:
    """Write ``model`` (plain, LoRA merged) and ``tokenizer`` as a GGUF file at ``out``; returns its path.

    ``dtype``: ``"f16"`` or ``"q8_0"`` for the matrices (vectors stay float32). ``tokenizer_source``: a
    GGUF file whose ``tokenizer.*`` metadata is copied instead of building it from ``tokenizer``.
    Raises ``ValueError`` for an unsupported architecture, dtype or tokenizer, or non-finite weights.
    """
    import gguf

    if dtype not in EXPORT_DTYPES:
        raise LorakitError(f"unknown GGUF dtype {dtype!r}; choose one of {', '.join(EXPORT_DTYPES)}")
    config = _check_model(model)
    out = Path(out)
    with replacing(out) as tmp:
        writer = gguf.GGUFWriter(str(tmp), "llama")
        _write_config(writer, config, name or getattr(config, "name_or_path", "") or "lorakit-export")
        file_type = gguf.LlamaFileType.MOSTLY_Q8_0 if dtype == "q8_0" else gguf.LlamaFileType.MOSTLY_F16
        writer.add_file_type(file_type)
        writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
        if tokenizer_source is not None:
            _copy_tokenizer_fields(writer, Path(tokenizer_source))
        else:
            _write_hf_tokenizer(writer, tokenizer, config.vocab_size)
        _write_tensors(writer, model, config, dtype)
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
    return out


def embedded_gguf_source(name_or_path: str | os.PathLike[str]) -> Path | None:
    """The packaged GGUF file an embedded model was converted from (its tokenizer metadata is copied), or None."""
    from lorakit.models.embedded import EMBEDDED, locate_embedded

    entry = EMBEDDED.get(os.fspath(name_or_path))
    return locate_embedded(entry.name) if entry is not None and entry.kind == "gguf" else None

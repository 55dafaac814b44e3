"""The target presets ("qv", "attention", "ffn"): which module names mean attention or FFN in each
model family. :mod:`~lorakit.core.targeting` resolves them (``all-linear`` is computed there, from the
kinds' ``supports``); an extension may add a preset to :data:`PRESETS`.
"""

# Preset name -> module-name suffixes across model families. BERT's "output.dense" names both the
# attention output and the FFN output, so the attention one is spelled with its parent.
PRESETS: dict[str, tuple[str, ...]] = {
    "qv": ("query", "value", "q_proj", "v_proj", "q_lin", "v_lin", "c_attn[q,v]"),
    "attention": (
        "query", "key", "value", "attention.output.dense",  # BERT
        "q_proj", "k_proj", "v_proj", "o_proj",  # Llama, Mistral, Qwen, OPT
        "q_lin", "k_lin", "v_lin", "out_lin",  # DistilBERT
        "c_attn", "attn.c_proj",  # GPT-2
    ),
    "ffn": (
        "intermediate.dense", "re:(.*\\.)?layer\\.\\d+\\.output\\.dense",  # BERT
        "gate_proj", "up_proj", "down_proj",  # Llama
        "lin1", "lin2",  # DistilBERT
        "mlp.c_fc", "mlp.c_proj",  # GPT-2
        "fc1", "fc2",  # OPT, ViT-style
    ),
}

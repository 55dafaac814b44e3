"""The built-in target presets ("qv", "attention", "ffn"), registered in
:data:`lorakit.core.targeting.PRESETS` when ``lorakit`` is imported (as :mod:`lorakit.layer_kinds`
registers layer kinds): which module names mean attention or FFN in each model family.
"""

from lorakit.core.targeting import PRESETS

# Presets list module-name suffixes across model families. BERT's "output.dense" names both the
# attention output and the FFN output, so the attention one is spelled with its parent.
PRESETS.update({
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
})

"""References for the parity tests: one adapter, one prompt, no batching, no padding."""

from __future__ import annotations

from pathlib import Path

import torch

import lorakit

EOS = 2


def single_model(factory, adapter: Path | None, merged: bool = False):
    """A fresh base with ``adapter`` loaded by core (unmerged LoRA layers, or merged into W)."""
    model = factory()
    if adapter is not None:
        lorakit.load_adapter(model, adapter)
        if merged:
            lorakit.merge(model)
    return model.eval()


@torch.inference_mode()
def greedy_alone(model, prompt: list[int], max_tokens: int) -> tuple[list[int], list[torch.Tensor]]:
    """Greedy decoding of one prompt with a KV cache: (tokens, next-token logits per step).

    Stops at EOS (not included in the tokens), like the engine.
    """
    out = model(input_ids=torch.tensor([prompt]), use_cache=True)
    cache, tokens, logits = out.cache, [], []
    step_logits = out.logits[0, -1]
    for i in range(max_tokens):
        logits.append(step_logits.float())
        token = int(step_logits.argmax())
        if token == EOS:
            break
        tokens.append(token)
        if i + 1 == max_tokens:
            break
        out = model(input_ids=torch.tensor([[token]]), cache=cache, use_cache=True,
                    position_ids=torch.tensor([[len(prompt) + i]]))
        cache, step_logits = out.cache, out.logits[0, -1]
    return tokens, logits

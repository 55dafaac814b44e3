"""Chunked linear cross-entropy against ``F.cross_entropy`` on full logits: loss and every gradient."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from lorakit.train.losses import IGNORE_INDEX, causal_lm_summed_loss, chunk_rows, linear_cross_entropy


def _reference(hidden, weight, bias, targets, smoothing=0.0):
    logits = F.linear(hidden, weight, bias).float()
    return F.cross_entropy(logits, targets, reduction="sum", label_smoothing=smoothing)


@pytest.mark.parametrize("chunk", [1, 7, 64, 1000])
@pytest.mark.parametrize("with_bias", [False, True])
@pytest.mark.parametrize("smoothing", [0.0, 0.1])
def test_chunked_loss_and_gradients_match_full_logits_in_fp32(chunk: int, with_bias: bool, smoothing: float) -> None:
    gen = torch.Generator().manual_seed(0)
    n, d, vocab = 50, 16, 97
    hidden = torch.randn(n, d, generator=gen, dtype=torch.float64).float().requires_grad_()
    weight = torch.randn(vocab, d, generator=gen).requires_grad_()
    bias = torch.randn(vocab, generator=gen).requires_grad_() if with_bias else None
    targets = torch.randint(0, vocab, (n,), generator=gen)
    ref = _reference(hidden, weight, bias, targets, smoothing)
    want = torch.autograd.grad(ref * 0.37, [t for t in (hidden, weight, bias) if t is not None])
    got_loss = linear_cross_entropy(hidden, weight, targets, bias, chunk=chunk, label_smoothing=smoothing)
    with torch.no_grad():  # the evaluation path (no gradient formed) gives the same smoothed loss
        torch.testing.assert_close(linear_cross_entropy(hidden, weight, targets, bias, chunk=chunk,
                                                        label_smoothing=smoothing), ref.detach(), rtol=1e-5, atol=1e-5)
    got = torch.autograd.grad(got_loss * 0.37, [t for t in (hidden, weight, bias) if t is not None])
    torch.testing.assert_close(got_loss, ref, rtol=1e-5, atol=1e-5)
    for g, w in zip(got, want, strict=True):
        torch.testing.assert_close(g, w, rtol=1e-5, atol=1e-5)


def test_frozen_head_gets_no_gradient_and_no_grad_mode_gives_the_same_loss() -> None:
    gen = torch.Generator().manual_seed(1)
    hidden = torch.randn(20, 8, generator=gen, requires_grad=True)
    weight = torch.randn(30, 8, generator=gen)  # frozen, like a LoRA model's head
    targets = torch.randint(0, 30, (20,), generator=gen)
    loss = linear_cross_entropy(hidden, weight, targets, chunk=3)
    loss.backward()
    assert weight.grad is None and hidden.grad is not None
    with torch.no_grad():
        assert torch.allclose(linear_cross_entropy(hidden, weight, targets, chunk=3), loss.detach())
    assert chunk_rows(49152) == 170


def test_bad_shapes_raise() -> None:
    with pytest.raises(ValueError, match="hidden"):
        linear_cross_entropy(torch.zeros(3, 4), torch.zeros(5, 6), torch.zeros(3, dtype=torch.long))
    with pytest.raises(ValueError, match="targets"):
        linear_cross_entropy(torch.zeros(3, 4), torch.zeros(5, 4), torch.zeros(2, dtype=torch.long))


def _tiny_lora_llama(tie: bool):
    from transformers import LlamaConfig, LlamaForCausalLM

    from lorakit.core import LoraSpec, inject

    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=61, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=tie)
    model = LlamaForCausalLM(cfg)
    inject(model, LoraSpec(r=4, alpha=8, targets=("qv",)))
    for name, p in model.named_parameters():
        if name.endswith("lora_B.weight") or name.endswith("lora_B"):
            torch.nn.init.normal_(p, std=0.1)  # B = 0 would make A's gradient 0 and the check weak
    return model


@pytest.mark.parametrize(("tie", "smoothing"), [(True, 0.0), (False, 0.0), (False, 0.1)])
def test_causal_lm_loss_matches_the_models_own_logits(tie: bool, smoothing: float) -> None:
    model = _tiny_lora_llama(tie)
    ids = torch.randint(0, 61, (3, 10), generator=torch.Generator().manual_seed(2))
    labels = ids.clone()
    labels[:, :4] = IGNORE_INDEX  # prompt
    labels[2, 7:] = IGNORE_INDEX  # padding
    mask = torch.ones_like(ids)
    batch = {"input_ids": ids, "attention_mask": mask, "labels": labels}
    trainable = [p for p in model.parameters() if p.requires_grad]
    logits = model(input_ids=ids, attention_mask=mask).logits
    ref = F.cross_entropy(logits[:, :-1].reshape(-1, 61).float(), labels[:, 1:].reshape(-1),
                          ignore_index=IGNORE_INDEX, reduction="sum", label_smoothing=smoothing)
    want = torch.autograd.grad(ref, trainable)
    got_loss = causal_lm_summed_loss(model, batch, label_smoothing=smoothing)
    got = torch.autograd.grad(got_loss, trainable)
    torch.testing.assert_close(got_loss, ref, rtol=1e-5, atol=1e-5)
    assert all(float(g.abs().sum()) > 0 for g in want)
    for g, w in zip(got, want, strict=True):
        torch.testing.assert_close(g, w, rtol=1e-5, atol=1e-5)

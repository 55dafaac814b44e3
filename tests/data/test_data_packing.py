"""Packing: rows filled first-fit-decreasing, and packed = unpacked (loss and gradients) on a tiny Llama."""

import random

import pytest
import torch

from lorakit.data.batches import IGNORE_INDEX, pad_right
from lorakit.data.packing import PackedCollator, pack, packing_stats
from lorakit.train.objectives import loss_terms, summed_loss

transformers = pytest.importorskip("transformers")


def _examples(n: int = 7, seed: int = 0) -> list[tuple[list[int], list[int]]]:
    """Random (input_ids, labels): a masked prompt then a learned completion, lengths 4..14."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        prompt, answer = rng.randint(2, 7), rng.randint(2, 7)
        ids = [rng.randrange(1, 60) for _ in range(prompt + answer)]
        out.append((ids, [IGNORE_INDEX] * prompt + ids[prompt:]))
    return out


def _tiny_llama(attn: str):
    torch.manual_seed(0)
    cfg = transformers.LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                   num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                                   pad_token_id=0, attn_implementation=attn)
    return transformers.LlamaForCausalLM(cfg).float()


def _unpacked(examples):
    lengths = [len(ids) for ids, _ in examples]
    width = max(lengths)
    return {"input_ids": pad_right([ids for ids, _ in examples], 0),
            "attention_mask": (torch.arange(width)[None, :] < torch.tensor(lengths)[:, None]).long(),
            "labels": pad_right([labels for _, labels in examples], IGNORE_INDEX)}


def _loss_and_grads(model, batch):
    model.zero_grad(set_to_none=True)
    loss = summed_loss("generate", model, batch)
    loss.backward()
    return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters()}


def test_rows_are_filled_first_fit_decreasing_and_keep_every_example():
    examples = _examples(20)
    rows = pack(examples, 24)
    assert all(len(row) <= 24 for row in rows)
    flat = sorted(seg for row in rows for seg in row.segments)
    assert flat == sorted((tuple(i), tuple(lab)) for i, lab in examples)
    stats = packing_stats(rows, 24)
    assert stats["examples"] == 20 and stats["rows"] < 20 and 0.5 < stats["fill"] <= 1.0
    with pytest.raises(ValueError, match="more than max_length"):
        pack(examples, 5)


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_packed_and_unpacked_give_the_same_loss_and_gradients(attn):
    model = _tiny_llama(attn)
    examples = _examples()
    unpacked = _unpacked(examples)
    packed = PackedCollator(pad_id=0)(pack(examples, 24))
    assert packed["input_ids"].shape[0] < len(examples)  # several examples share a row
    assert (packed["attention_mask"] == 0).any()  # and a row is padded: padding is handled too
    assert loss_terms("generate", packed) == loss_terms("generate", unpacked)
    loss_u, grads_u = _loss_and_grads(model, unpacked)
    loss_p, grads_p = _loss_and_grads(model, packed)
    torch.testing.assert_close(loss_p, loss_u, rtol=1e-5, atol=1e-5)
    for name, grad in grads_u.items():
        torch.testing.assert_close(grads_p[name], grad, rtol=1e-4, atol=1e-6, msg=name)

    # The control: the same rows with one running position (attention crosses examples) differ.
    crossing = {**packed, "position_ids": torch.arange(packed["input_ids"].shape[1]).expand_as(packed["input_ids"])}
    loss_x, _ = _loss_and_grads(model, crossing)
    assert abs(float(loss_x) - float(loss_u)) > 1e-3

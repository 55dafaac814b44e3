"""Collators on a tiny in-test tokenizer: exact ids, loss masks, padding and truncation."""

import os
import subprocess
import sys

import pytest
import torch

from lorakit.data import ClassificationExample, GenerationExample
from lorakit.data.batches import (
    IGNORE_INDEX,
    CausalLMCollator,
    ClassificationCollator,
    encode_prompt,
    padded_width,
    truncate_pair,
)

transformers = pytest.importorskip("transformers")
tokenizers = pytest.importorskip("tokenizers")

SPECIAL = ["<pad>", "<eos>", "<unk>", "<bos>", "<user>", "<assistant>", "<system>"]
WORDS = [*SPECIAL, "hello", "world", "the", "cat", "sat", "on", "a", "mat", "good", "bad", "be", "brief"]
V = {w: i for i, w in enumerate(WORDS)}
CHAT_TEMPLATE = (
    "{% for m in messages %}<{{ m['role'] }}> {{ m['content'] }} {% endfor %}"
    "{% if add_generation_prompt %}<assistant> {% endif %}"
)


def make_tokenizer(chat: bool = True, pad: bool = True, bos: bool = False):
    """A word-level tokenizer: one id per whitespace-separated word, ids from WORDS."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors

    core = Tokenizer(models.WordLevel(V, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    if bos:  # like Llama: special tokens mean a leading BOS
        core.post_processor = processors.TemplateProcessing(
            single="<bos> $A", special_tokens=[("<bos>", V["<bos>"])]
        )
    tok = transformers.PreTrainedTokenizerFast(
        tokenizer_object=core, eos_token="<eos>", unk_token="<unk>", pad_token="<pad>" if pad else None
    )
    if chat:
        tok.chat_template = CHAT_TEMPLATE
    return tok


def ids(text):
    return [V[w] for w in text.split()]


def test_chat_batch_masks_prompt_and_padding_exactly():
    tok = make_tokenizer()
    batch = CausalLMCollator(tok, max_length=32)(
        [GenerationExample("hello world", "the cat sat"), GenerationExample("hello", "good")]
    )
    row0 = ids("<user> hello world <assistant> the cat sat <eos>")
    row1 = ids("<user> hello <assistant> good <eos>") + [V["<pad>"]] * 3
    assert batch["input_ids"].tolist() == [row0, row1]
    assert batch["labels"].tolist() == [
        [IGNORE_INDEX] * 4 + ids("the cat sat <eos>"),
        [IGNORE_INDEX] * 3 + ids("good <eos>") + [IGNORE_INDEX] * 3,
    ]
    assert batch["attention_mask"].tolist() == [[1] * 8, [1] * 5 + [0] * 3]
    assert all(t.dtype == torch.long for t in batch.values())


def test_plain_prompt_when_no_template_or_disabled():
    for tok, flag in ((make_tokenizer(chat=False), None), (make_tokenizer(chat=True), False)):
        batch = CausalLMCollator(tok, max_length=32, use_chat_template=flag)(
            [GenerationExample("hello world", "a mat")]
        )
        assert batch["input_ids"].tolist() == [
            ids("hello world a mat <eos>")
        ]  # the "\n" separator has no token here
        assert batch["labels"].tolist() == [[IGNORE_INDEX] * 2 + ids("a mat <eos>")]


def test_plain_prompt_keeps_special_tokens_like_bos():
    tok = make_tokenizer(chat=False, bos=True)
    batch = CausalLMCollator(tok, max_length=32)([GenerationExample("hello", "good")])
    assert batch["input_ids"].tolist() == [ids("<bos> hello good <eos>")]  # no BOS before the completion
    assert batch["labels"].tolist() == [[IGNORE_INDEX] * 2 + ids("good <eos>")]


def test_pad_falls_back_to_eos_and_eos_label_survives():
    tok = make_tokenizer(pad=False)
    batch = CausalLMCollator(tok, max_length=32)(
        [GenerationExample("hello", "good"), GenerationExample("hello", "a cat")]
    )
    eos = V["<eos>"]
    assert batch["input_ids"][0].tolist() == ids("<user> hello <assistant> good") + [eos, eos]
    # position 4 is the real EOS (a label), position 5 is padding (masked) although both are EOS ids
    assert batch["labels"][0].tolist()[4:] == [eos, IGNORE_INDEX]
    assert batch["attention_mask"][0].tolist() == [1, 1, 1, 1, 1, 0]


@pytest.mark.parametrize("use_chat", [True, False])
def test_encode_prompt_is_exactly_the_training_prefix(use_chat):
    tok = make_tokenizer()
    example = GenerationExample("the cat", "sat on a mat")
    collator = CausalLMCollator(tok, max_length=32, use_chat_template=use_chat)
    input_ids, labels = collator.encode(example)
    prompt = encode_prompt(tok, example.context, use_chat)
    assert input_ids[: len(prompt)] == prompt
    assert labels[: len(prompt)] == [IGNORE_INDEX] * len(prompt)
    assert labels[len(prompt)] != IGNORE_INDEX  # the first completion token is learned


def test_chat_history_is_rendered_before_the_answer():
    tok = make_tokenizer()
    example = GenerationExample.from_messages(
        [
            {"role": "system", "content": "be brief"},
            {"role": "user", "content": "hello"},
            {"role": "assistant", "content": "the cat"},
        ]
    )
    input_ids, labels = CausalLMCollator(tok, max_length=32).encode(example)
    assert input_ids == ids("<system> be brief <user> hello <assistant> the cat <eos>")
    assert labels == [IGNORE_INDEX] * 6 + ids("the cat <eos>")
    # without a template the history reduces to the last user message, the same in both functions
    plain_ids, _ = CausalLMCollator(tok, max_length=32, use_chat_template=False).encode(example)
    assert plain_ids == ids("hello the cat <eos>")
    assert encode_prompt(tok, example.context, use_chat_template=False) == ids("hello")


def test_truncation_cuts_the_completion_first():
    tok = make_tokenizer()
    example = GenerationExample("hello world", "the cat sat on a mat")
    input_ids, labels = CausalLMCollator(tok, max_length=6).encode(example)
    assert input_ids == ids("<user> hello world <assistant> the cat")  # no EOS: the answer was cut
    assert labels == [IGNORE_INDEX] * 4 + ids("the cat")


def test_truncation_of_a_too_long_prompt_keeps_its_end_and_one_answer_token():
    tok = make_tokenizer()
    input_ids, labels = CausalLMCollator(tok, max_length=3).encode(
        GenerationExample("hello world", "the cat")
    )
    assert input_ids == ids("world <assistant> the")
    assert labels == [IGNORE_INDEX, IGNORE_INDEX, V["the"]]


@pytest.mark.parametrize(
    ("n_prompt", "n_completion", "max_length", "expected"),
    [
        (3, 2, 5, (3, 2)),  # fits exactly
        (3, 4, 5, (3, 2)),  # completion cut
        (4, 4, 5, (4, 1)),  # one completion token left
        (5, 4, 5, (4, 1)),  # prompt fills the window: cut from the left, one answer token
        (9, 1, 2, (1, 1)),
    ],
)
def test_truncate_pair_table(n_prompt, n_completion, max_length, expected):
    prompt, completion = list(range(n_prompt)), list(range(100, 100 + n_completion))
    p, c = truncate_pair(prompt, completion, max_length)
    assert (len(p), len(c)) == expected
    assert p == prompt[len(prompt) - len(p) :] and c == completion[: len(c)]


def test_invalid_settings_are_errors():
    with pytest.raises(ValueError, match="no chat_template"):
        CausalLMCollator(make_tokenizer(chat=False), 16, use_chat_template=True)
    with pytest.raises(ValueError, match="max_length must be >= 2"):
        CausalLMCollator(make_tokenizer(), 1)
    with pytest.raises(ValueError, match="empty batch"):
        CausalLMCollator(make_tokenizer(), 8)([])
    with pytest.raises(ValueError, match="at least one user message"):
        encode_prompt(make_tokenizer(), [{"role": "system", "content": "be brief"}], use_chat_template=False)


def test_classification_collator_pads_right_and_truncates():
    tok = make_tokenizer()
    batch = ClassificationCollator(tok, max_length=3)(
        [ClassificationExample("the cat sat on a mat", 1), ClassificationExample("bad", 0)]
    )
    assert batch["input_ids"].tolist() == [ids("the cat sat"), ids("bad <pad> <pad>")]
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [1, 0, 0]]
    assert batch["labels"].tolist() == [1, 0]


def test_pad_multiple_rounds_the_width_up_but_never_past_max_length():
    tok = make_tokenizer()
    examples = [GenerationExample("hello world", "the cat sat"), GenerationExample("hello", "good")]  # 8 and 5
    assert CausalLMCollator(tok, 32, pad_multiple=4)(examples)["input_ids"].shape == (2, 8)  # already a multiple
    batch = CausalLMCollator(tok, 32, pad_multiple=16)(examples)
    plain = CausalLMCollator(tok, 32)(examples)
    assert batch["input_ids"].shape == (2, 16)
    assert batch["input_ids"][:, :8].tolist() == plain["input_ids"].tolist()
    assert (batch["input_ids"][:, 8:] == V["<pad>"]).all() and (batch["labels"][:, 8:] == IGNORE_INDEX).all()
    assert (batch["attention_mask"][:, 8:] == 0).all()
    assert CausalLMCollator(tok, 10, pad_multiple=16)(examples)["input_ids"].shape == (2, 10)  # the cap
    cls = ClassificationCollator(tok, 5, pad_multiple=4)([ClassificationExample("bad", 0)])
    assert cls["input_ids"].tolist() == [ids("bad <pad> <pad> <pad>")] and cls["attention_mask"].sum() == 1
    assert padded_width([3, 9], 8, cap=12) == 12 and padded_width([3, 13], 8, cap=12) == 13
    with pytest.raises(ValueError, match="pad multiple must be >= 1"):
        CausalLMCollator(tok, 16, pad_multiple=0)


def test_padding_to_a_multiple_leaves_the_causal_lm_loss_and_gradients_unchanged():
    """The padded positions are masked: same summed loss and gradients as the unrounded batch (fp32)."""
    from lorakit.train.objectives import summed_loss

    tok = make_tokenizer()
    config = transformers.LlamaConfig(vocab_size=len(WORDS), hidden_size=16, intermediate_size=32,
                                      num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=1,
                                      pad_token_id=V["<pad>"])
    torch.manual_seed(0)
    model = transformers.LlamaForCausalLM(config)
    examples = [GenerationExample("hello world", "the cat sat"), GenerationExample("hello", "good")]
    results = []
    for multiple in (1, 16):
        model.zero_grad()
        loss = summed_loss("generate", model, CausalLMCollator(tok, 32, pad_multiple=multiple)(examples))
        loss.backward()
        results.append((loss.detach(), [p.grad.clone() for p in model.parameters()]))
    (l1, g1), (l16, g16) = results
    torch.testing.assert_close(l16, l1, rtol=1e-5, atol=1e-6)
    for a, b in zip(g16, g1, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


def test_data_package_does_not_import_transformers():
    code = (
        "import sys, lorakit.data, lorakit.data.batches; assert 'transformers' not in sys.modules, 'imported'"
    )
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
    result = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr

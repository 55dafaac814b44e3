"""Multi-turn chat: the loss mask equals the chat template's assistant spans (transformers' own
``return_assistant_tokens_mask`` on a template with ``{% generation %}`` tags is the reference)."""

import pytest

from lorakit.data import GenerationExample
from lorakit.data.batches import IGNORE_INDEX, CausalLMCollator
from lorakit.data.chat import conversation_pieces, encode_conversation

transformers = pytest.importorskip("transformers")
tokenizers = pytest.importorskip("tokenizers")

SPECIAL = ["<pad>", "<unk>", "<|im_start|>", "<|im_end|>"]
WORDS = [*SPECIAL, "system", "user", "assistant", "tool", "be", "brief", "hi", "hello", "how", "are", "you",
         "fine", "thanks", "what", "is", "two", "plus", "four", "ok", "call", "result"]
V = {w: i for i, w in enumerate(WORDS)}
# ChatML-like, with generation tags around what the assistant produces (content and end marker).
TAGGED = (
    "{% for m in messages %}{% if m['role'] == 'assistant' %}<|im_start|> assistant "
    "{% generation %}{{ m['content'] }} <|im_end|>{% endgeneration %} "
    "{% else %}<|im_start|> {{ m['role'] }} {{ m['content'] }} <|im_end|> {% endif %}{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|> assistant {% endif %}"
)
CONVERSATION = [
    {"role": "system", "content": "be brief"},
    {"role": "user", "content": "hi"},
    {"role": "assistant", "content": "hello"},
    {"role": "user", "content": "how are you"},
    {"role": "assistant", "content": "fine thanks"},
    {"role": "user", "content": "what is two plus two"},
    {"role": "tool", "content": "result four"},
    {"role": "assistant", "content": "four"},
]


def make_tokenizer(template: str = TAGGED):
    from tokenizers import Tokenizer, models, pre_tokenizers

    core = Tokenizer(models.WordLevel(V, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok = transformers.PreTrainedTokenizerFast(tokenizer_object=core, eos_token="<|im_end|>", unk_token="<unk>",
                                               pad_token="<pad>")
    tok.chat_template = template
    return tok


def test_every_assistant_turn_is_learned_and_nothing_else():
    tok = make_tokenizer()
    ids, labels = encode_conversation(tok, CONVERSATION)
    reference = tok.apply_chat_template(CONVERSATION, tokenize=True, return_dict=True,
                                        return_assistant_tokens_mask=True)
    assert ids == list(reference["input_ids"])
    mask = list(reference["assistant_masks"])
    assert sum(mask) == 2 + 3 + 2  # "hello <|im_end|>", "fine thanks <|im_end|>", "four <|im_end|>"
    assert [label != IGNORE_INDEX for label in labels] == [bool(m) for m in mask]
    assert [label for label in labels if label != IGNORE_INDEX] == [i for i, m in zip(ids, mask, strict=True) if m]


def test_collator_trains_all_turns_and_the_prompt_prefix_matches_generation():
    tok = make_tokenizer()
    example = GenerationExample.from_messages(CONVERSATION)
    ids, labels = CausalLMCollator(tok, max_length=64).encode(example)
    learned = [tok.convert_ids_to_tokens(i) for i, label in zip(ids, labels, strict=True) if label != IGNORE_INDEX]
    assert learned == ["hello", "<|im_end|>", "fine", "thanks", "<|im_end|>", "four", "<|im_end|>"]
    # The tokens before the last answer are exactly what generation is conditioned on.
    from lorakit.data.batches import encode_prompt

    prefix = encode_prompt(tok, example.context, True)
    assert ids[:len(prefix)] == prefix and labels[len(prefix)] == V["four"]


def test_template_without_end_marker_gets_eos_after_the_last_turn_only():
    plain = ("{% for m in messages %}<|im_start|> {{ m['role'] }} {{ m['content'] }} {% endfor %}"
             "{% if add_generation_prompt %}<|im_start|> assistant {% endif %}")
    tok = make_tokenizer(plain)
    ids, labels = encode_conversation(tok, CONVERSATION[1:5])
    words = tok.convert_ids_to_tokens(ids)
    assert words[-1] == "<|im_end|>" and words.count("<|im_end|>") == 1
    learned = [w for w, label in zip(words, labels, strict=True) if label != IGNORE_INDEX]
    assert learned == ["hello", "fine", "thanks", "<|im_end|>"]


def test_a_template_that_rewrites_history_is_refused():
    # Renders only the last two messages: turn 2's rendering does not start with turn 1's.
    forgetful = ("{% for m in messages[-2:] %}<|im_start|> {{ m['role'] }} {{ m['content'] }} <|im_end|> "
                 "{% endfor %}{% if add_generation_prompt %}<|im_start|> assistant {% endif %}")
    with pytest.raises(ValueError, match="growing prefix"):
        conversation_pieces(make_tokenizer(forgetful), CONVERSATION)


def test_truncation_keeps_a_learned_token():
    tok = make_tokenizer()
    example = GenerationExample.from_messages(CONVERSATION)
    for n in (3, 8, 12, 20):
        ids, labels = CausalLMCollator(tok, max_length=n).encode(example)
        assert len(ids) <= n and any(label != IGNORE_INDEX for label in labels[1:])

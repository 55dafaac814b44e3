"""Evaluation: classification metrics, held-out loss, and generation scored with the E2E metrics.

Generation decodes greedily (or with beams) from exactly the prompt prefix the training collator
built (``encode_prompt``), batched with *left* padding so that every row's new tokens start at the same
position; prompts are sorted by length first to waste little compute on padding.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from lorakit.train.objectives import loss_terms, summed_loss, to_device


def _device_of(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


def _bar(total: int, desc: str, enabled: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="ex", disable=not enabled, dynamic_ncols=True, leave=False)


@torch.no_grad()
def predict_labels(model: nn.Module, examples: Sequence[Any], collate: Callable, batch_size: int = 64,
                   progress: bool = False) -> list[int]:
    """Arg-max class of each example, in order."""
    was_training = model.training
    model.eval()
    device, preds = _device_of(model), [0] * len(examples)
    # Similar lengths share a batch: far less padding, same predictions.
    order = sorted(range(len(examples)), key=lambda i: len(examples[i].text))
    with _bar(len(examples), "eval", progress) as bar:
        for start in range(0, len(order), batch_size):
            rows = order[start:start + batch_size]
            batch = to_device(collate([examples[i] for i in rows]), device)
            logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
            for i, p in zip(rows, logits.argmax(-1).tolist(), strict=True):
                preds[i] = p
            bar.update(len(rows))
    model.train(was_training)
    return preds


def evaluate_classification(model: nn.Module, examples: Sequence[Any], collate: Callable, num_labels: int,
                            batch_size: int = 64, progress: bool = False,
                            keep_predictions: bool = False) -> dict[str, Any]:
    """Accuracy, macro-F1 and MCC (plus the example count) of ``model`` on ``examples``.

    ``keep_predictions`` adds ``predictions``: one ``{"text", "label", "predicted"}`` per example, in order.
    """
    from lorakit.train.metrics import classification_metrics

    preds = predict_labels(model, examples, collate, batch_size, progress)
    metrics: dict[str, Any] = {**classification_metrics(preds, [e.label for e in examples], num_labels),
                               "examples": len(examples)}
    if keep_predictions:
        metrics["predictions"] = [{"text": e.text, "label": e.label, "predicted": p}
                                  for e, p in zip(examples, preds, strict=True)]
    return metrics


@torch.no_grad()
def evaluate_loss(model: nn.Module, examples: Sequence[Any], collate: Callable, task: str,
                  batch_size: int = 32) -> dict[str, float]:
    """Mean cross-entropy per loss term (example or target token) over ``examples``."""
    was_training = model.training
    model.eval()
    device, total, terms = _device_of(model), 0.0, 0
    for start in range(0, len(examples), batch_size):
        batch = to_device(collate(list(examples[start:start + batch_size])), device)
        total += float(summed_loss(task, model, batch))
        terms += loss_terms(task, batch)
    model.train(was_training)
    loss = total / max(terms, 1)
    return {"loss": loss, "perplexity": math.exp(min(loss, 50.0)) if task == "generate" else float("nan")}


def decoding_options(num_beams: int = 1, length_penalty: float = 1.0, no_repeat_ngram_size: int = 0,
                     max_new_tokens: int = 64) -> dict[str, Any]:
    """The ``model.generate`` keyword arguments of a decoding, as recorded next to its scores.

    ``length_penalty`` only exists for beam search (greedy decoding has no beams to rank), so it is
    left out when ``num_beams`` is 1; ``no_repeat_ngram_size`` applies to greedy decoding too (0: off).
    """
    options: dict[str, Any] = {"num_beams": num_beams, "max_new_tokens": max_new_tokens}
    if num_beams > 1:
        options["length_penalty"] = length_penalty
    if no_repeat_ngram_size > 0:
        options["no_repeat_ngram_size"] = no_repeat_ngram_size
    return options


def generated_no_repeat_ngram(ngram_size: int, prompt_width: int):
    """A logits processor that bans repeating an n-gram of the *generated* tokens only, as the paper's decoder did.

    transformers' own ``no_repeat_ngram_size`` scans the whole sequence of a decoder-only model, prompt
    included, so it forbids copying any ``ngram_size``-token span of the prompt: an E2E output could then
    not write ``5 out of 5`` or ``Crowne Plaza Hotel`` as its meaning representation spells them. The
    LoRA authors' beam search (microsoft/LoRA, ``examples/NLG/src/gpt2_beam.py``) bans n-grams of its
    ``history``, the generated tokens alone. ``prompt_width``: the (left-padded) prompt's width, where
    every row's generated tokens start.
    """
    from transformers import NoRepeatNGramLogitsProcessor

    class GeneratedNoRepeatNGram(NoRepeatNGramLogitsProcessor):
        def __call__(self, input_ids: torch.LongTensor, scores: torch.Tensor) -> torch.Tensor:
            return super().__call__(input_ids[:, prompt_width:], scores)

    return GeneratedNoRepeatNGram(ngram_size)


@torch.no_grad()
def generate_texts(model: nn.Module, tokenizer: Any, prompts: Sequence[list[int]], *, batch_size: int = 16,
                   max_new_tokens: int = 64, num_beams: int = 1, length_penalty: float = 1.0,
                   no_repeat_ngram_size: int = 0, progress: bool = False) -> list[str]:
    """Decode a completion for each tokenized prompt (greedy, or beam search); returns stripped texts.

    Beam search as the paper decoded E2E: ``num_beams=10, length_penalty=0.9, no_repeat_ngram_size=4``;
    the n-gram ban covers the generated tokens only (:func:`generated_no_repeat_ngram`).
    ``batch_size`` counts decoded sequences, beams included: beam 10 at batch 50 decodes 5 prompts at a
    time, so a wider beam holds the memory of greedy decoding at the same batch instead of ``num_beams``
    times it (beam 10 over 50 E2E prompts asked the allocator for 28 GB of logits).
    """
    from transformers import LogitsProcessorList

    decoding = decoding_options(num_beams, length_penalty, no_repeat_ngram_size, max_new_tokens)
    ngram = decoding.pop("no_repeat_ngram_size", 0)  # applied by our processor, over generated tokens only
    per_call = max(1, batch_size // num_beams)  # prompts per generate call
    was_training = model.training
    model.eval()
    device = _device_of(model)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
    texts: list[str | None] = [None] * len(prompts)
    with _bar(len(prompts), "generate", progress) as bar:
        for start in range(0, len(order), per_call):
            rows = order[start:start + per_call]
            width = max(len(prompts[i]) for i in rows)
            ids = torch.full((len(rows), width), pad, dtype=torch.long)
            mask = torch.zeros((len(rows), width), dtype=torch.long)
            for r, i in enumerate(rows):  # left padding: the prompt ends at the last column
                ids[r, width - len(prompts[i]):] = torch.tensor(prompts[i])
                mask[r, width - len(prompts[i]):] = 1
            processors = LogitsProcessorList([generated_no_repeat_ngram(ngram, width)] if ngram else [])
            out = model.generate(
                input_ids=ids.to(device), attention_mask=mask.to(device), **decoding, logits_processor=processors,
                do_sample=False, pad_token_id=pad, eos_token_id=tokenizer.eos_token_id,
            )
            for r, i in enumerate(rows):
                texts[i] = tokenizer.decode(out[r, width:], skip_special_tokens=True).strip()
            bar.update(len(rows))
    model.train(was_training)
    return [t or "" for t in texts]


def evaluate_generation(model: nn.Module, tokenizer: Any, examples: Sequence[Any], *, batch_size: int = 16,
                        max_new_tokens: int = 64, num_beams: int = 1, length_penalty: float = 1.0,
                        no_repeat_ngram_size: int = 0, use_chat_template: bool | None = None,
                        progress: bool = False, samples: int = 3,
                        keep_predictions: bool = False) -> dict[str, Any]:
    """BLEU, NIST, ROUGE-L, chrF of generated completions against every reference of each example.

    Returns the metrics plus ``examples`` (how many were scored), ``decoding`` (how they were decoded:
    a reported figure says whether it is greedy or the paper's beam search) and ``samples`` (a few
    prompt / output / reference triples to eyeball); ``keep_predictions`` adds ``predictions``, one
    ``{"prompt", "output", "references"}`` per example, in order (every reference it was scored against).
    """
    from lorakit.data.batches import encode_prompt, wants_chat_template
    from lorakit.train.metrics import generation_metrics

    chat = wants_chat_template(tokenizer, use_chat_template)
    prompts = [encode_prompt(tokenizer, e.context if chat else e.prompt, chat) for e in examples]
    decoding = decoding_options(num_beams, length_penalty, no_repeat_ngram_size, max_new_tokens)
    outputs = generate_texts(model, tokenizer, prompts, batch_size=batch_size, **decoding, progress=progress)
    references = [list(e.references) or [e.completion] for e in examples]
    metrics: dict[str, Any] = dict(generation_metrics(outputs, references))
    metrics["examples"] = len(examples)
    metrics["decoding"] = decoding
    metrics["samples"] = [{"prompt": e.prompt, "output": o, "reference": r[0]}
                          for e, o, r in list(zip(examples, outputs, references, strict=True))[:samples]]
    if keep_predictions:
        metrics["predictions"] = [{"prompt": e.prompt, "output": o, "references": r}
                                  for e, o, r in zip(examples, outputs, references, strict=True)]
    return metrics


def evaluate_dataset(model: nn.Module, tokenizer: Any, dataset: Any, *, collate: Callable | None = None,
                     batch_size: int = 32, max_length: int = 128, num_beams: int = 1, max_new_tokens: int = 64,
                     length_penalty: float = 1.0, no_repeat_ngram_size: int = 0,
                     progress: bool = False, keep_predictions: bool = False) -> dict[str, Any]:
    """Evaluate on a data set by its task: classification metrics, or generation metrics.

    ``keep_predictions``: also return every example's prediction under ``predictions`` (see
    ``evaluate_classification`` / ``evaluate_generation`` for the fields).
    """
    if dataset.task == "classify":
        if collate is None:
            from lorakit.data.batches import ClassificationCollator

            collate = ClassificationCollator(tokenizer, max_length)
        return evaluate_classification(model, dataset.examples, collate, dataset.num_labels, batch_size, progress,
                                       keep_predictions=keep_predictions)
    return evaluate_generation(model, tokenizer, dataset.examples, batch_size=batch_size,
                               max_new_tokens=max_new_tokens, num_beams=num_beams, length_penalty=length_penalty,
                               no_repeat_ngram_size=no_repeat_ngram_size, progress=progress,
                               keep_predictions=keep_predictions)

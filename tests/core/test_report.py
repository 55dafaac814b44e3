"""lorakit.core.report.parameter_report: the paper's counts, shared (tied) tensors counted once."""

import torch
from torch import nn

import lorakit


def test_parameter_report_counts_lora_and_trainable_and_ties_once():
    torch.manual_seed(0)
    emb = nn.Embedding(10, 6)
    head = nn.Linear(6, 10, bias=False)
    head.weight = emb.weight  # tied: 60 parameters, counted once
    model = nn.Sequential(emb, nn.Linear(6, 6), head)
    lorakit.inject(model, lorakit.LoraSpec(r=2, alpha=4, targets=("1",)))
    report = lorakit.parameter_report(model)
    lora = 2 * (6 + 6)
    assert report == lorakit.ParameterReport(total=60 + 42 + lora, trainable=lora, lora=lora)
    assert str(report) == f"trainable {lora} of {60 + 42 + lora:,} parameters ({100 * lora / (102 + lora):.4f}%), LoRA {lora}"

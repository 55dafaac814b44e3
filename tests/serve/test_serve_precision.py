"""``lorakit serve --dtype``: a bf16 / int8 / nf4 base next to the fp32 one, adapters in mixed batches.

The oracle is the same server in fp32: a bf16 base must give the same next-token logits within
bf16's rounding (8 bits of mantissa through two layers), the quantized bases must run and stay
near them, and every adapter stack must be kept in the type the activations flow in.
"""

from __future__ import annotations

import pytest
import torch

from lorakit.serve import LoraServer, SamplingParams
from lorakit.serve.lora_batch import BankLinear
from tests.conftest import tiny_llama
from tests.serve.conftest import char_tokenizer, make_adapter

PROMPTS = ["hello world", "a", "the quick brown fox jumps", "xyz", "lorem ipsum dolor sit", "hi there"]
ROWS = [None, "qv4", "qv8", "attn2", "ffn16", "all4rs"]
STEPS = 8


@pytest.fixture(scope="module")
def llama_dir(tmp_path_factory):
    """A tiny Llama saved as a Hugging Face folder with the character tokenizer."""
    path = tmp_path_factory.mktemp("tiny_llama_bf16")
    tiny_llama().save_pretrained(path)
    char_tokenizer().save_pretrained(path)
    return path


def run(llama_dir, llama_adapters, dtype: str) -> tuple[LoraServer, dict[int, list[torch.Tensor]], list[str]]:
    """Every (prompt, adapter) row in one mixed batch: per-row step logits (fp32 copies) and texts."""
    server = LoraServer.from_pretrained(str(llama_dir), dtype=dtype, adapters_dir=llama_adapters)
    seen: dict[str, list[torch.Tensor]] = {}

    def hook(ids, logits):
        for rid, row in zip(ids, logits, strict=True):
            seen.setdefault(rid, []).append(row.float().clone())

    server.engine.logits_hook = hook
    tok = server.tokenizer
    texts: dict[str, str] = {}

    def collect(rid_box):
        def on_update(u):
            texts[rid_box[0]] = texts.get(rid_box[0], "") + u.text
        return on_update

    rids = []
    for prompt, adapter in zip(PROMPTS, ROWS, strict=True):
        box: list[str] = []
        rid = server.submit(tok(prompt)["input_ids"], SamplingParams(max_tokens=STEPS, ignore_eos=True), adapter,
                            collect(box))
        box.append(rid)
        rids.append(rid)
    server.engine.run_until_idle()
    return server, {i: seen[r] for i, r in enumerate(rids)}, [texts.get(r, "") for r in rids]


@pytest.fixture(scope="module")
def fp32(llama_dir, llama_adapters):
    return run(llama_dir, llama_adapters, "fp32")


def stack_dtypes(server: LoraServer) -> set[torch.dtype]:
    return {g.At.dtype for m in server.model.modules() if isinstance(m, BankLinear) for g in m.groups.values()} | {
        g.Bt.dtype for m in server.model.modules() if isinstance(m, BankLinear) for g in m.groups.values()}


def test_bf16_matches_fp32_within_bf16_rounding(llama_dir, llama_adapters, fp32):
    server32, logits32, texts32 = fp32
    server16, logits16, texts16 = run(llama_dir, llama_adapters, "bf16")
    assert server16.precision["base_dtype"] == "bf16" and server32.precision["base_dtype"] == "fp32"
    assert {p.dtype for p in server16.model.parameters()} == {torch.bfloat16}
    assert stack_dtypes(server16) == {torch.bfloat16} and stack_dtypes(server32) == {torch.float32}
    worst = 0.0
    for i, adapter in enumerate(ROWS):
        # The first step's logits: same prompt, same adapter, only the precision differs.
        want, got = logits32[i][0], logits16[i][0]
        scale = want.abs().max().item()
        err = (got - want).abs().max().item()
        worst = max(worst, err / scale)
        assert err <= 0.05 * scale, (adapter, err, scale)
    # Guard against a vacuous pass: the adapters move the logits far more than bf16 rounding does.
    spread = max((logits32[i][0] - logits32[0][0]).abs().max().item() for i in range(1, len(ROWS)))
    assert spread > 0.2 * logits32[0][0].abs().max().item()
    same = sum(a == b for a, b in zip(texts32, texts16, strict=True))
    print(f"bf16 vs fp32: worst first-step logit error {worst:.4f} of the logit range; "
          f"greedy texts equal on {same}/{len(ROWS)} rows")
    assert same >= len(ROWS) // 2


@pytest.mark.parametrize("dtype", ["int8", "nf4"])
def test_quantized_base_serves_mixed_adapters(llama_dir, llama_adapters, fp32, dtype):
    pytest.importorskip("bitsandbytes")
    server, logits, _ = run(llama_dir, llama_adapters, dtype)
    assert server.precision["quantized_linears"] == 14  # 2 layers × (q, k, v, o, gate, up, down); head kept
    compute = torch.bfloat16 if server.precision["compute_dtype"] == "bfloat16" else torch.float32
    assert stack_dtypes(server) == {compute}
    _, logits32, _ = fp32
    for i, adapter in enumerate(ROWS):
        assert len(logits[i]) == STEPS and all(torch.isfinite(x).all() for x in logits[i])
        want, got = logits32[i][0], logits[i][0]
        # nf4 keeps 4 bits a weight: near the fp32 logits, not equal to them.
        assert (got - want).abs().max() <= 0.5 * want.abs().max(), adapter


def test_dora_on_a_quantized_base_is_refused(llama_dir, tmp_path):
    pytest.importorskip("bitsandbytes")
    path = make_adapter(tiny_llama, tmp_path / "dora", seed=3, r=4, alpha=8, targets=("qv",), dora=True)
    server = LoraServer.from_pretrained(str(llama_dir), dtype="nf4")
    # The registry check (select_targets): a quantized kind does not support DoRA (it needs a float W0).
    with pytest.raises(ValueError, match=r"\(linear4bit\): dora not supported .*it supports: all-linear, serve, slices"):
        server.add_adapter("dora", path)


def test_unknown_dtype_is_refused(llama_dir):
    with pytest.raises(ValueError, match="base dtype must be one of"):
        LoraServer.from_pretrained(str(llama_dir), dtype="fp8")


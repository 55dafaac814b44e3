"""Promise 3: an adapter is checked against its base model (shape, rank limit, key set, dtype, finite
values, at least one matched module) and a mismatch is refused with a precise message, model untouched.

The table of cases and messages lives in RELIABILITY.md; the last test keeps it equal to what the code says
(regenerate it with ``python -m benchmarks.reliability_mismatch_table``).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmarks.reliability.mismatch_cases import CASES, Row, markdown, rows

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def table() -> list[Row]:
    return rows()


@pytest.mark.parametrize("index", range(len(CASES)), ids=[f"{c.check}: {c.case}" for c in CASES])
def test_mismatch_is_refused_with_a_message_and_the_model_untouched(table: list[Row], index: int) -> None:
    row = table[index]
    # lorakit's own error types: the CLI shows them as one line (a bug would keep its traceback)
    assert row.error in ("LorakitError", "UnsupportedLayerError"), f"{row.case}: loaded or crashed: {row.message}"
    assert row.message.strip()
    assert row.model_untouched, f"{row.case}: the refused load changed the model"


def test_messages_name_the_problem(table: list[Row]) -> None:
    by_case = {r.case: r.message for r in table}
    assert "file (4, 48), model (4, 32)" in by_case["adapter trained on another base (hidden 48, not 32)"]
    assert "rank above the layer's limit" in by_case["config claims r=1,000,000 (file holds 4): refused before allocating"]
    assert "missing (1): " in by_case["lora_B missing"]
    assert "torch.int8" in by_case["int8 factors"]
    assert "non-finite" in by_case["one NaN in lora_A"]
    assert "matches no module in layers [7]" in by_case["layers_to_transform=[7] on a 2-layer model"]


def test_reliability_md_holds_the_current_table(table: list[Row]) -> None:
    doc = (REPO / "RELIABILITY.md").read_text(encoding="utf-8")
    assert markdown(table) in doc, "RELIABILITY.md is stale: run python -m benchmarks.reliability_mismatch_table"

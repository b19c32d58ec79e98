"""Answer metrics for the before/after comparison: text answers, and JSON (extraction) answers."""

from __future__ import annotations

import pytest

from engine.finetune.evaluate import answer_metrics


def test_text_answers_get_exact_match_and_token_f1() -> None:
    metrics = answer_metrics(
        ["A plain red square.", "a blue  square", "nothing"],
        ["A plain red square", "A plain blue square.", "A green square."],
        extraction=False,
    )
    assert metrics["exact_match"] == pytest.approx(1 / 3)
    # 1.0 + F1("a blue square", "a plain blue square") = 2*1*0.75/1.75 + 0.0
    assert metrics["token_f1"] == pytest.approx((1.0 + 2 * 0.75 / 1.75) / 3)
    assert "field_accuracy" not in metrics


def test_extraction_answers_are_scored_field_by_field() -> None:
    references = ['{"total": "12.50", "vendor": "ACME"}', '{"total": "7.00", "vendor": "Baker"}']
    answers = ['{"total": "12.50", "vendor": "acme"}', "Total: 7.00 from Baker"]
    metrics = answer_metrics(answers, references, extraction=True)
    assert metrics["valid_json"] == 0.5
    assert metrics["field_accuracy"] == 0.5  # both fields of the first answer, none of the second
    assert metrics["exact_match"] == 0.5  # compared without case and surrounding space

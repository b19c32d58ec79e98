"""Text that people wrote, or that a model or the engine produced, appears as written: labels
that take escaped HTML render it as HTML even when the line has no tags (Qt would otherwise
show "Baker &amp; Sons" with its entity)."""

from __future__ import annotations

from PySide6.QtWidgets import QLabel

from desktop.engine_client import EngineClient
from desktop.state.finetune import FinetuneSession
from desktop.storage import Message, MessageStatus
from desktop.views.finetune_wizard import EvaluatePage, TrainPage, UsePage
from desktop.views.message_card import MessageCard
from engine.protocol import finetune as pf
from tests.desktop.helpers import shown_text

WRITTEN = "Invoice from Baker & Sons, total 1,240.00 EUR"


def labels_showing(widget, text: str) -> list[str]:  # type: ignore[no-untyped-def]
    return [shown_text(label) for label in widget.findChildren(QLabel) if text in shown_text(label)]


def test_the_fine_tuning_pages_show_texts_as_written(qtbot, tmp_path) -> None:
    session = FinetuneSession(EngineClient())
    evaluate, train, use = EvaluatePage(session), TrainPage(session), UsePage(session)
    for page in (evaluate, train, use):
        qtbot.addWidget(page)
    probe = pf.ProbeAnswer(
        images=[], prompt="Describe.", reference=WRITTEN, base="A & B", adapter=""
    )
    session.evaluation = pf.Evaluation(
        on="held_out", rows=1, base_loss=2.0, adapter_loss=1.0, metrics={}, probes=[probe]
    )
    evaluate.refresh()
    assert labels_showing(evaluate, "Baker") == [WRITTEN]
    assert labels_showing(evaluate, "A & B") == ["A & B"]
    assert labels_showing(evaluate, "(nothing)") == ["(nothing)"]  # an empty answer, in italics

    session.message = f"Saved in {tmp_path / 'R&D'}"
    session.outcome = f"Exported to {tmp_path / 'R&D' / 'adapter'}"
    session.notices = ["Rows 3 & 4 were left out."]
    train.refresh()
    use.refresh()
    assert labels_showing(train, "Saved in") == [session.message]
    assert labels_showing(train, "Rows 3") == ["Rows 3 & 4 were left out."]
    assert labels_showing(use, "Exported to") == [session.outcome]


def test_an_answers_error_shows_as_written(qtbot) -> None:
    error = "The model's processor rejected this input: width & height must be positive"
    message = Message(
        id="m1", conversation_id="c1", role="assistant", status=MessageStatus.ERROR,
        error_message=error,
    )  # fmt: skip
    card = MessageCard(message)
    qtbot.addWidget(card)
    assert shown_text(card.error_label) == error


def test_the_learning_rate_reads_as_a_number_to_the_last_step(qtbot) -> None:
    session = FinetuneSession(EngineClient())
    page = TrainPage(session)
    qtbot.addWidget(page)
    shown = []
    for step, rate in ((1, 2e-4), (5, 1.4e-4), (10, 0.0)):  # cosine decay ends at zero
        metrics = pf.TrainMetrics(
            step=step, total_steps=10, epoch=step / 5, loss=1.0, learning_rate=rate,
            tokens_per_s=1.0, samples_per_s=1.0, peak_memory_bytes=0,
            data_wait_fraction=0.0, eta_s=None, elapsed_s=1.0,
        )  # fmt: skip
        session.metrics_added.emit(metrics)
        shown.append(page.values["Learning rate"].text())
    assert shown == ["0.0002", "0.00014", "0"]

"""Editing a sent message and regenerating the last answer, with the fake engine."""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import Qt

from desktop.storage import MessageStatus
from engine import protocol as p
from tests.desktop.helpers import chats, make_image


def ask(qtbot, window, text: str, attachments: list[Path] | None = None) -> None:
    assert window.send_message(text, attachments)
    qtbot.waitUntil(lambda: not window.session.busy, timeout=10_000)


def test_an_edited_message_replaces_itself_and_everything_after_it(
    qtbot, make_window, tmp_path: Path, command_log: Path
) -> None:
    window = make_window()
    image = make_image(tmp_path / "chart.png")
    ask(qtbot, window, "What is this?", [image])
    ask(qtbot, window, "And the colour?")
    cards = window.chat_view.messages.cards()
    assert len(cards) == 4 and cards[0].edit_button.isVisible()
    edit = window.chat_view.composer.edit
    qtbot.keyClicks(edit, "a draft I was writing")
    window.session.attach_files([make_image(tmp_path / "next.png", "#16a34a")])

    qtbot.mouseClick(cards[0].edit_button, Qt.MouseButton.LeftButton)
    assert edit.toPlainText() == "What is this?"
    assert [a.name for a in window.session.draft_attachments] == ["chart.png"]
    assert len(window.chat_view.composer.chips()) == 1
    bar = window.chat_view.editing_bar
    assert bar.isVisible() and "the 3 messages after it" in bar.label.text()
    assert cards[0].property("editing") and not cards[2].property("editing")  # outlined
    edit.clear()
    qtbot.keyClicks(edit, "What is this chart about?")
    qtbot.keyClick(edit, Qt.Key.Key_Return)
    qtbot.waitUntil(lambda: not window.session.busy, timeout=10_000)

    cards = window.chat_view.messages.cards()
    assert [card.message.role for card in cards] == ["user", "assistant"]
    assert cards[0].body.toPlainText() == "What is this chart about?"
    assert cards[0].thumbnails is not None  # the picture went with the edit
    assert cards[1].message.status == MessageStatus.COMPLETE
    stored = window.storage.messages(window.session.conversation_id)
    assert [(m.role, m.text, m.position) for m in stored] == [
        ("user", "What is this chart about?", 0),
        ("assistant", cards[1].message.text, 1),
    ]
    assert stored[0].attachments[0].path.read_bytes() == image.read_bytes()
    # The model is asked the edited conversation, with nothing of the replaced turns.
    picture = str(stored[0].attachments[0].path)
    assert chats(command_log)[-1].messages == [
        p.ChatMessage("user", "What is this chart about?", [picture])
    ]
    # Named after its first question, the conversation now bears the edited one's name.
    assert window.storage.conversation(window.session.conversation_id).title == (
        "What is this chart about?"
    )
    assert window.windowTitle() == "What is this chart about? — VisionDesk"
    assert window.conversation_list.list.item(0).text() == "What is this chart about?"
    assert edit.toPlainText() == "a draft I was writing"  # the draft comes back
    assert [a.name for a in window.session.draft_attachments] == ["next.png"]
    assert len(window.chat_view.composer.chips()) == 1
    assert not bar.isVisible() and window.session.editing is None
    assert not any(card.property("editing") for card in window.chat_view.messages.cards())


def test_a_sent_edit_can_be_undone_and_the_replaced_turns_come_back(
    qtbot, make_window, tmp_path: Path
) -> None:
    window = make_window("--delay", "0.02")
    image = make_image(tmp_path / "chart.png")
    ask(qtbot, window, "What is this?", [image])
    ask(qtbot, window, "And the colour?")
    before = window.storage.messages(window.session.conversation_id)
    assert window.edit_message(before[2].id)
    window.chat_view.composer.edit.setPlainText("And the shape?")
    window.chat_view.composer.send_button.click()
    notice = window.chat_view.notice
    assert notice.isVisible() and "replaced 2 messages" in notice.label.text()
    assert window.session.busy  # the edited question is being answered

    qtbot.mouseClick(notice.action, Qt.MouseButton.LeftButton)  # Undo, mid-answer
    assert not window.session.busy and not notice.isVisible()
    restored = window.storage.messages(window.session.conversation_id)
    assert [(m.id, m.text, m.status, m.position) for m in restored] == [
        (m.id, m.text, m.status, m.position) for m in before
    ]
    assert restored[0].attachments == before[0].attachments
    cards = window.chat_view.messages.cards()
    assert [c.body.toPlainText() for c in cards][2] == "And the colour?" and len(cards) == 4
    qtbot.waitUntil(cards[3].regenerate_button.isVisible, timeout=2000)
    qtbot.wait(200)  # the stopped answer's end arrives and changes nothing
    assert len(window.storage.messages(window.session.conversation_id)) == 4
    assert not window.session.undo()  # once only
    # The second question was edited, not the first: the name never changed.
    assert window.storage.conversation(window.session.conversation_id).title == "What is this?"


def test_undo_gives_back_the_name_an_edit_of_the_first_question_changed(qtbot, make_window) -> None:
    window = make_window()
    ask(qtbot, window, "First question")
    conversation = window.session.conversation_id
    assert window.edit_message(window.session.messages[0].id)
    window.chat_view.composer.edit.setPlainText("A better question")
    window.chat_view.composer.send_button.click()
    assert window.storage.conversation(conversation).title == "A better question"
    window.session.undo()
    assert window.storage.conversation(conversation).title == "First question"
    assert window.conversation_list.list.item(0).text() == "First question"
    window.rename_conversation(conversation, "My own name")
    qtbot.waitUntil(lambda: not window.session.busy, timeout=10_000)
    assert window.edit_message(window.session.messages[0].id)
    window.chat_view.composer.edit.setPlainText("Another question")
    window.chat_view.composer.send_button.click()
    assert window.storage.conversation(conversation).title == "My own name"  # chosen: kept


def test_escape_leaves_an_edit_unsent_and_the_conversation_as_it_was(
    qtbot, make_window, tmp_path: Path, command_log: Path
) -> None:
    window = make_window()
    ask(qtbot, window, "First question")
    image = make_image(tmp_path / "waiting.png")
    window.session.attach_files([image])  # a draft picture, not yet sent
    edit = window.chat_view.composer.edit
    qtbot.keyClick(edit, Qt.Key.Key_Up)  # Up in an empty composer edits the last message sent
    assert edit.toPlainText() == "First question"
    assert window.session.draft_attachments == []  # the edited message had no picture
    assert "the answer after it" in window.chat_view.editing_bar.label.text()
    qtbot.keyClicks(edit, ", changed my mind")
    qtbot.keyClick(edit, Qt.Key.Key_Escape)

    assert window.session.editing is None and not window.chat_view.editing_bar.isVisible()
    assert edit.toPlainText() == ""
    assert [a.name for a in window.session.draft_attachments] == ["waiting.png"]
    stored = window.storage.messages(window.session.conversation_id)
    assert [m.text for m in stored][0] == "First question" and len(stored) == 2
    assert len(chats(command_log)) == 1


def test_regenerate_asks_again_for_the_last_answer_with_the_same_history(
    qtbot, make_window, command_log: Path
) -> None:
    window = make_window()
    ask(qtbot, window, "One")
    ask(qtbot, window, "Two")
    cards = window.chat_view.messages.cards()
    assert not cards[1].regenerate_button.isVisible()  # only the last answer
    assert cards[3].regenerate_button.isVisible() and not cards[3].edit_button.isVisible()
    last = cards[3].message

    qtbot.mouseClick(cards[3].regenerate_button, Qt.MouseButton.LeftButton)
    assert window.session.busy and not cards[3].regenerate_button.isVisible()
    # An edit waits for the answer being written.
    assert not window.edit_message(cards[2].message.id)
    assert "Wait for the current answer" in window.chat_view.notice.label.text()
    qtbot.waitUntil(lambda: not window.session.busy, timeout=10_000)
    window.regenerate_action.trigger()  # Ctrl+R
    qtbot.waitUntil(lambda: not window.session.busy, timeout=10_000)

    sent = chats(command_log)
    assert len(sent) == 4
    assert sent[1].messages == sent[2].messages == sent[3].messages
    assert [m.text for m in sent[3].messages if m.role == "user"] == ["One", "Two"]
    assert len(window.chat_view.messages.cards()) == 4
    stored = window.storage.messages(window.session.conversation_id)
    assert [m.id for m in stored][-1] == last.id and len(stored) == 4
    assert stored[-1].status == MessageStatus.COMPLETE and stored[-1].text


def test_undo_brings_back_the_answer_that_regenerate_replaced(qtbot, make_window) -> None:
    window = make_window("--delay", "0.02")
    ask(qtbot, window, "One")
    before = window.storage.messages(window.session.conversation_id)
    window.regenerate_action.trigger()
    notice = window.chat_view.notice
    assert window.session.busy and notice.isVisible() and notice.label.text() == "Asked again."
    qtbot.mouseClick(notice.action, Qt.MouseButton.LeftButton)
    assert not window.session.busy
    after = window.storage.messages(window.session.conversation_id)
    assert [(m.id, m.text, m.status, m.provenance) for m in after] == [
        (m.id, m.text, m.status, m.provenance) for m in before
    ]
    card = window.chat_view.messages.cards()[-1]
    assert card.body.toPlainText() and card.message.text == before[-1].text

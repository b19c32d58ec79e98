"""The message column: a long conversation's older messages are built after the newest ones."""

from __future__ import annotations

import pytest
from PySide6.QtCore import QPoint, Qt

from desktop import paths
from desktop.storage import Message, MessageStatus, Storage
from desktop.views.message_card import MessageCard
from desktop.views.message_list import FIRST_CARDS, MessageList

ANSWER = "An answer with a list:\n\n- one\n- two\n\n```\ncode\n```\n\n" + "Prose that wraps. " * 20


def conversation(name: str, count: int) -> list[Message]:
    """``count`` messages, questions and answers in turn, with ids ``<name>0``, ``<name>1``…"""
    return [
        Message(f"{name}{i}", name, "assistant", f"{name} answer {i}. {ANSWER}")
        if i % 2
        else Message(f"{name}{i}", name, "user", f"{name} question {i}")
        for i in range(count)
    ]


@pytest.fixture
def message_list(qtbot) -> MessageList:
    view = MessageList()
    qtbot.addWidget(view)
    view.resize(700, 500)
    view.show()
    qtbot.waitExposed(view)
    return view


def shown_ids(view: MessageList) -> list[str]:
    return [card.message.id for card in view.cards()]


def wait_loaded(qtbot, view: MessageList) -> None:
    qtbot.waitUntil(lambda: not view.is_loading())


def at_bottom(view: MessageList) -> bool:
    bar = view.verticalScrollBar()
    return bar.maximum() > 0 and bar.value() == bar.maximum()


def test_a_long_conversation_shows_its_newest_messages_first_then_all_in_order(
    qtbot, message_list: MessageList
) -> None:
    messages = conversation("a", 60)
    message_list.set_messages(messages)
    assert shown_ids(message_list) == [m.id for m in messages[-FIRST_CARDS:]]
    assert message_list.is_loading()
    wait_loaded(qtbot, message_list)
    assert shown_ids(message_list) == [m.id for m in messages]
    tops = [card.y() for card in message_list.cards()]
    assert tops == sorted(tops) and len(set(tops)) == len(tops)  # on screen in the same order
    assert all(card.isVisible() for card in message_list.cards())
    qtbot.waitUntil(lambda: at_bottom(message_list))


def test_older_cards_keep_their_actions_and_only_the_last_answer_regenerates(
    qtbot, message_list: MessageList
) -> None:
    message_list.set_messages(conversation("a", 40))
    wait_loaded(qtbot, message_list)
    cards = message_list.cards()
    first_question, first_answer = cards[0], cards[1]
    message_list.ensureWidgetVisible(first_question)
    with qtbot.waitSignal(message_list.edit_clicked) as edited:
        qtbot.mouseClick(first_question.edit_button, Qt.MouseButton.LeftButton)
    assert edited.args == ["a0"]
    assert first_answer.copy_button.isVisible()
    assert not first_answer.regenerate_button.isVisible()
    assert [card.regenerate_button.isVisible() for card in cards if not card.is_user] == [
        False
    ] * 19 + [True]


def test_a_streaming_answer_updates_while_older_messages_are_still_added(
    qtbot, message_list: MessageList
) -> None:
    messages = conversation("a", 60)
    pending = Message("a60", "a", "assistant", "", status=MessageStatus.PENDING)
    message_list.set_messages([*messages, pending])
    assert message_list.is_loading()
    card = message_list.card("a60")
    assert card is not None and card.activity.isVisible()
    height = card.body.height()
    for text in ("The first words", "The first words and then " + "many more words " * 60):
        pending.text = text
        message_list.update_message(pending)
    assert message_list.is_loading()  # still building the older ones
    assert card.body.toPlainText().startswith("The first words and then many more")
    assert card.body.height() > height and not card.activity.isVisible()
    wait_loaded(qtbot, message_list)
    assert message_list.cards()[-1] is card and len(message_list.cards()) == 61
    qtbot.waitUntil(lambda: at_bottom(message_list))


def test_an_older_message_changed_before_it_is_shown_shows_its_change(
    qtbot, message_list: MessageList
) -> None:
    messages = conversation("a", 40)
    message_list.set_messages(messages)
    assert message_list.card("a1") is None
    changed = Message("a1", "a", "assistant", "Stopped early.", status=MessageStatus.CANCELLED)
    message_list.update_message(changed)
    wait_loaded(qtbot, message_list)
    card = message_list.card("a1")
    assert card is not None and card.body.toPlainText() == "Stopped early."
    assert "stopped" in card.provenance.text()


def test_a_message_sent_while_older_ones_load_goes_last(qtbot, message_list: MessageList) -> None:
    messages = conversation("a", 40)
    message_list.set_messages(messages)
    question = Message("q", "a", "user", "One more question")
    answer = Message("r", "a", "assistant", "", status=MessageStatus.PENDING)
    message_list.add_message(question)
    message_list.add_message(answer)
    wait_loaded(qtbot, message_list)
    assert shown_ids(message_list) == [m.id for m in messages] + ["q", "r"]
    assert [card.is_last for card in message_list.cards()] == [False] * 41 + [True]
    qtbot.waitUntil(lambda: at_bottom(message_list))


def test_switching_conversations_midway_does_not_mix_them(qtbot, message_list: MessageList) -> None:
    message_list.set_messages(conversation("a", 80))
    qtbot.waitUntil(lambda: len(message_list.cards()) > FIRST_CARDS)  # some older ones built
    assert message_list.is_loading()
    other = conversation("b", 50)
    message_list.set_messages(other)
    wait_loaded(qtbot, message_list)
    qtbot.wait(50)  # nothing from the first conversation arrives late
    assert shown_ids(message_list) == [m.id for m in other]
    on_screen = message_list.widget().findChildren(MessageCard)
    assert sorted(card.message.id for card in on_screen) == sorted(m.id for m in other)
    message_list.set_messages(conversation("c", 3))
    assert shown_ids(message_list) == ["c0", "c1", "c2"] and not message_list.is_loading()


def test_a_reader_who_scrolled_up_keeps_their_place_while_older_messages_load(
    qtbot, message_list: MessageList
) -> None:
    message_list.set_messages(conversation("a", 80))
    qtbot.waitUntil(lambda: at_bottom(message_list))
    assert message_list.is_loading()
    bar = message_list.verticalScrollBar()
    bar.setValue(bar.maximum() - 400)  # the reader scrolls up a little
    reading = message_list.card("a75")
    assert reading is not None
    where = reading.mapTo(message_list.viewport(), QPoint(0, 0)).y()
    wait_loaded(qtbot, message_list)
    qtbot.wait(20)  # and nothing moves it afterwards
    assert reading.mapTo(message_list.viewport(), QPoint(0, 0)).y() == where
    assert bar.value() < bar.maximum()  # not pulled to the bottom


def test_cards_built_after_a_resize_fit_the_new_width(qtbot, message_list: MessageList) -> None:
    message_list.set_messages(conversation("a", 60))
    message_list.resize(560, 500)
    wait_loaded(qtbot, message_list)
    widths = {card.body.width() for card in message_list.cards() if not card.is_user}
    assert len(widths) == 1
    [width] = widths
    assert width < 560 - 48  # inside the column's margins


def test_in_the_window_a_question_asked_while_a_long_conversation_opens_gets_its_answer(
    qtbot, make_window
) -> None:
    storage = Storage(paths.database_path())
    long = storage.create_conversation("Long")
    for message in conversation("a", 60):
        storage.add_message(long.id, message.role, message.text)
    short = storage.create_conversation("Short")
    storage.add_message(short.id, "user", "Hello")
    storage.close()
    window = make_window("--delay", "0.02")
    shown = window.chat_view.messages
    window.session.open_conversation(long.id)
    assert shown.is_loading()
    qtbot.keyClicks(window.chat_view.composer.edit, "And the last one?")
    qtbot.keyClick(window.chat_view.composer.edit, Qt.Key.Key_Return)
    answer = shown.cards()[-1]
    assert shown.is_loading()  # the older messages are still being added
    qtbot.waitUntil(lambda: not window.session.busy, timeout=10_000)
    assert answer.message.status == MessageStatus.COMPLETE
    assert "print('hello')" in answer.body.toPlainText()
    texts = [card.body.toPlainText() for card in shown.cards()]
    assert len(texts) == 62 and texts[0] == "a question 0" and texts[-2] == "And the last one?"
    assert answer.regenerate_button.isVisible()
    window.session.open_conversation(short.id)
    assert [card.body.toPlainText() for card in shown.cards()] == ["Hello"]

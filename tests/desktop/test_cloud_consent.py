""" "Local, then ask before cloud": nothing is sent without the user's yes, and yes sends once."""

from __future__ import annotations

import pytest
from PySide6.QtWidgets import QMessageBox

from desktop.settings_store import POLICY
from engine.protocol.cloud import CONSENT_NEEDED
from tests.desktop.helpers import chats

ASK = (
    f"{CONSENT_NEEDED}:The local model could not answer. Sending this to Claude needs your consent."
)


@pytest.mark.parametrize(
    "reply, sent", [(QMessageBox.StandardButton.Yes, True), (QMessageBox.StandardButton.No, False)]
)
def test_the_window_asks_before_sending_to_the_cloud(
    qtbot, make_window, command_log, monkeypatch, reply, sent
) -> None:
    asked: list[str] = []

    def question(parent, title, text, *args, **kwargs):
        asked.append(text)
        return reply

    monkeypatch.setattr(QMessageBox, "question", staticmethod(question))
    window = make_window("--error-on-chat", ASK, "--unless-cloud-only")
    window.cloud_settings.set(POLICY, "local_then_ask")
    assert window.send_message("What is on this receipt?")
    qtbot.waitUntil(lambda: bool(asked), timeout=10_000)
    assert "Claude" in asked[0]
    qtbot.waitUntil(lambda: not window.session.busy, timeout=10_000)
    policies = [chat.policy for chat in chats(command_log)]
    answer = window.session.messages[-1]
    if sent:
        assert policies == ["local_then_ask", "cloud_only"]
        assert answer.status == "complete" and answer.text
    else:
        assert policies == ["local_then_ask"]
        assert answer.status == "error" and "consent" in answer.error_message

"""The Settings view for cloud and remote backends: masked keys that go only to the keyring, a
connection test, models, the policy, the remote server, and the line that says what goes where."""

from __future__ import annotations

from pathlib import Path

import pytest
from PySide6.QtCore import QSettings, Qt
from PySide6.QtWidgets import QLineEdit

from desktop.settings_store import CloudSettings, KeyStore, effective_policy
from desktop.views.settings import SettingsView
from engine import protocol as p
from engine.protocol import cloud as c
from tests.engine.wire.keyring_file import JsonFileKeyring

SECRET = "sk-test-typed-into-settings-5a7c9e"


@pytest.fixture
def keyring_file(tmp_path: Path) -> Path:
    return tmp_path / "keyring.json"


@pytest.fixture
def keys(keyring_file: Path) -> KeyStore:
    return KeyStore(JsonFileKeyring(keyring_file))  # never the user's real keyring


@pytest.fixture
def qsettings(tmp_path: Path) -> QSettings:
    return QSettings(str(tmp_path / "settings.ini"), QSettings.Format.IniFormat)


@pytest.fixture
def view(qtbot, qsettings, keys) -> SettingsView:
    widget = SettingsView(CloudSettings(qsettings), keys)
    qtbot.addWidget(widget)
    widget.show()
    return widget


def choose(combo, data: str) -> None:
    combo.setCurrentIndex(combo.findData(data))


def test_keys_are_masked_and_stored_only_in_the_keyring(
    qtbot, view, keys, keyring_file, tmp_path
) -> None:
    box = view.boxes["openai"]
    assert box.title() == "OpenAI" and view.boxes["anthropic"].title() == "Claude (Anthropic)"
    assert box.key_edit.echoMode() == QLineEdit.EchoMode.Password
    assert box.key_status.text() == "No key saved." and not box.forget_key_button.isEnabled()
    qtbot.keyClicks(box.key_edit, SECRET)
    qtbot.mouseClick(box.save_key_button, Qt.MouseButton.LeftButton)
    assert keys.has_key("openai") and SECRET in keyring_file.read_text()
    assert box.key_edit.text() == ""  # gone from the window once stored
    assert "saved in the system keyring" in box.key_status.text()
    view.settings.qsettings.sync()
    assert SECRET not in (tmp_path / "settings.ini").read_text()
    qtbot.mouseClick(box.forget_key_button, Qt.MouseButton.LeftButton)
    assert not keys.has_key("openai") and box.key_status.text() == "No key saved."


def test_test_connection_saves_a_typed_key_then_asks_and_shows_the_answer(
    qtbot, view, keys
) -> None:
    box = view.boxes["anthropic"]
    qtbot.keyClicks(box.key_edit, SECRET)
    with qtbot.waitSignal(view.connection_test_requested) as asked:
        qtbot.mouseClick(box.test_button, Qt.MouseButton.LeftButton)
    assert asked.args == ["anthropic", ""]
    assert keys.has_key("anthropic") and box.test_result.text() == "Testing…"
    view.show_finished("anthropic", p.Finished(job_id="t", reason="done",
                                               result={"provider": "anthropic", "ok": True, "models": 4}))  # fmt: skip
    assert box.test_result.text() == "✓ Connected: 4 models available."
    rejected = p.Finished(job_id="t", reason="error", error_code=c.INVALID_KEY,
                          message="Claude rejected the API key (HTTP 401).")  # fmt: skip
    view.show_finished("anthropic", rejected)
    assert box.test_result.text() == "✗ Claude rejected the API key (HTTP 401)."


def test_the_policy_provider_and_models_persist_and_come_back(qtbot, qsettings, keys, view) -> None:
    choose(view.policy_combo, c.LOCAL_THEN_CLOUD)
    choose(view.provider_combo, c.GEMINI)
    view.set_provider_models("gemini", ["gemini-3.8-flash", "gemini-2.5-pro"])
    view.boxes["gemini"].model_combo.setCurrentText("gemini-2.5-pro")
    again = SettingsView(CloudSettings(qsettings), keys)
    qtbot.addWidget(again)
    assert again.policy_combo.currentData() == c.LOCAL_THEN_CLOUD
    assert again.provider_combo.currentData() == c.GEMINI
    assert again.boxes["gemini"].model() == "gemini-2.5-pro"
    fields = again.settings.routing_fields()
    assert fields == {"backend": "gemini", "backend_model": "gemini-2.5-pro", "base_url": None,
                      "policy": c.LOCAL_THEN_CLOUD, "never_send": False}  # fmt: skip
    p.Chat(job_id="j", messages=[], **fields)  # the fields are exactly the protocol's


def test_refresh_asks_for_the_providers_models_and_fills_the_list(qtbot, view) -> None:
    box = view.boxes["openai"]
    with qtbot.waitSignal(view.models_requested) as asked:
        qtbot.mouseClick(box.refresh_button, Qt.MouseButton.LeftButton)
    assert asked.args == ["openai", ""]
    listed = p.Finished(job_id="m", reason="done", result={"provider": "openai", "default": "gpt-5.5",
                        "models": [{"id": "gpt-5.5", "label": "gpt-5.5"}, {"id": "gpt-4o", "label": "gpt-4o"}]})  # fmt: skip
    view.show_finished("openai", listed)
    assert [box.model_combo.itemText(i) for i in range(box.model_combo.count())] == [
        "gpt-5.5",
        "gpt-4o",
    ]


@pytest.mark.parametrize(
    ("policy", "phrases"),
    [
        (c.LOCAL_ONLY, ["Nothing leaves this computer"]),
        (c.LOCAL_THEN_ASK, ["asks you before sending", "Claude (claude-sonnet-5-5) at Anthropic", "never send"]),
        (c.LOCAL_THEN_CLOUD, ["without asking", "out of memory", "Claude"]),
        (c.CLOUD_ONLY, ["Every request", "is sent to Claude (claude-sonnet-5-5) at Anthropic"]),
        (c.REMOTE_SERVER, ["Nothing is sent until you enter your server's URL"]),
    ],
)  # fmt: skip
def test_the_summary_says_what_will_be_sent_where(view, policy, phrases) -> None:
    choose(view.policy_combo, policy)
    for phrase in phrases:
        assert phrase in view.sending_label.text()
    assert view.provider_combo.isEnabled() == (policy not in (c.LOCAL_ONLY, c.REMOTE_SERVER))


def test_the_remote_server_url_token_and_test(qtbot, view, keys, keyring_file) -> None:
    choose(view.policy_combo, c.REMOTE_SERVER)
    box = view.boxes["remote"]
    assert box.url_edit is not None
    qtbot.keyClicks(box.url_edit, "http://gpu-box:8000/v1")
    qtbot.keyClick(box.url_edit, Qt.Key.Key_Return)  # editing finished: stored
    assert "sent to your server at http://gpu-box:8000/v1" in view.sending_label.text()
    qtbot.keyClicks(box.key_edit, "tok-remote-secret-99")
    with qtbot.waitSignal(view.connection_test_requested) as asked:
        qtbot.mouseClick(box.test_button, Qt.MouseButton.LeftButton)
    assert asked.args == ["remote", "http://gpu-box:8000/v1"]
    assert keys.has_key("remote") and "tok-remote-secret-99" in keyring_file.read_text()
    fields = view.settings.routing_fields(never_send=True)
    assert (fields["backend"], fields["base_url"], fields["never_send"]) == (
        "remote",
        "http://gpu-box:8000/v1",
        True,
    )


def test_a_conversation_or_document_policy_overrides_the_global_one() -> None:
    assert effective_policy(c.LOCAL_ONLY) == c.LOCAL_ONLY
    assert effective_policy(c.LOCAL_ONLY, conversation=c.CLOUD_ONLY) == c.CLOUD_ONLY
    assert (
        effective_policy(c.CLOUD_ONLY, conversation=c.CLOUD_ONLY, document=c.LOCAL_ONLY)
        == c.LOCAL_ONLY
    )


def test_a_keyring_that_refuses_is_explained_and_the_key_is_not_kept(qtbot, qsettings) -> None:
    class BrokenKeyring(JsonFileKeyring):
        def set_password(self, service: str, username: str, password: str) -> None:
            raise RuntimeError("locked")

    view = SettingsView(
        CloudSettings(qsettings), KeyStore(BrokenKeyring(Path("/nonexistent/k.json")))
    )
    qtbot.addWidget(view)
    box = view.boxes["gemini"]
    qtbot.keyClicks(box.key_edit, SECRET)
    qtbot.mouseClick(box.save_key_button, Qt.MouseButton.LeftButton)
    assert "could not store the key" in box.key_status.text()
    assert "GOOGLE_API_KEY or GEMINI_API_KEY" in box.key_status.text()
    assert box.key_edit.text() == ""


def test_the_decoding_choice_persists_and_reaches_the_engines_next_start(
    qtbot, qsettings, keys, view
) -> None:
    from desktop.engine_client import EngineClient

    assert view.settings.engine_environment() == {"VISIONDESK_DECODE": "auto"}
    client = EngineClient(command=["python", "-c", "pass"])
    view.settings_changed.connect(
        lambda: client.set_environment(view.settings.engine_environment())
    )
    choose(view.decoding_combo, "generate")
    assert client._environment().value("VISIONDESK_DECODE") == "generate"
    again = SettingsView(CloudSettings(qsettings), keys)
    qtbot.addWidget(again)
    assert again.decoding_combo.currentData() == "generate"
    qsettings.setValue("engine/decoding", "warp-speed")  # a bad value reads as the default
    assert CloudSettings(qsettings).decoding == "auto"


def test_answer_settings_persist_and_shape_every_chat_request(qtbot, qsettings, keys, view) -> None:
    assert view.settings.sampling() == p.Sampling(max_new_tokens=1024)  # greedy, no penalty
    assert view.temperature_spin.text().startswith("0 (the likeliest words")
    view.length_spin.setValue(2048)
    view.temperature_spin.setValue(0.7)
    view.repetition_spin.setValue(1.15)
    qtbot.keyClicks(view.system_edit, "Answer in French.")
    again = SettingsView(CloudSettings(qsettings), keys)  # as the app opens next time
    qtbot.addWidget(again)
    assert (again.length_spin.value(), again.temperature_spin.value()) == (2048, 0.7)
    assert again.repetition_spin.value() == 1.15
    assert again.system_edit.toPlainText() == "Answer in French."
    assert again.settings.sampling() == p.Sampling(
        temperature=0.7, max_new_tokens=2048, repetition_penalty=1.15
    )
    assert again.settings.system_prompt == "Answer in French."
    qsettings.setValue("chat/max_new_tokens", "lots")  # edited by hand: the default, not a crash
    qsettings.setValue("chat/temperature", "9")
    assert again.settings.sampling().max_new_tokens == 1024
    assert again.settings.sampling().temperature == 2.0  # clamped to the range offered


def test_a_chat_carries_the_answer_settings_and_the_instructions_first(
    qtbot, make_window, command_log
) -> None:
    from tests.desktop.helpers import chats

    window = make_window()
    settings = window.settings_view
    settings.length_spin.setValue(300)
    settings.temperature_spin.setValue(0.5)
    settings.system_edit.setPlainText("  Be brief.  ")
    assert window.send_message("Describe it")
    qtbot.waitUntil(lambda: not window.session.busy, timeout=10_000)
    [chat] = chats(command_log)
    assert chat.sampling == p.Sampling(temperature=0.5, max_new_tokens=300)
    assert chat.image_max_pixels == p.CHAT_IMAGE_MAX_PIXELS  # the standard picture detail
    assert chat.messages == [
        p.ChatMessage("system", "Be brief."),
        p.ChatMessage("user", "Describe it"),
    ]
    stored = window.storage.messages(window.session.conversation_id)
    assert [m.role for m in stored] == ["user", "assistant"]  # instructions are not history


def test_the_idle_unload_choice_persists(qtbot, qsettings, keys, view) -> None:
    assert view.settings.idle_unload_minutes == 0  # off unless asked for
    view.idle_combo.setCurrentIndex(view.idle_combo.findData("15"))
    again = SettingsView(CloudSettings(qsettings), keys)
    qtbot.addWidget(again)
    assert again.idle_combo.currentData() == "15" and again.settings.idle_unload_minutes == 15
    qsettings.setValue("engine/idle_unload_minutes", "7")  # not a choice offered: off
    assert again.settings.idle_unload_minutes == 0


def test_the_picture_detail_persists_and_reaches_each_chat(
    qtbot, qsettings, keys, view, make_window, command_log
) -> None:
    from tests.desktop.helpers import chats

    assert view.settings.image_max_pixels == p.CHAT_IMAGE_MAX_PIXELS
    assert view.detail_combo.currentText().startswith("Standard: up to 1 megapixel")
    view.detail_combo.setCurrentIndex(2)
    again = SettingsView(CloudSettings(qsettings), keys)
    qtbot.addWidget(again)
    assert again.settings.image_max_pixels == 4 * p.CHAT_IMAGE_MAX_PIXELS
    assert again.detail_combo.currentText().startswith("Finest")
    qsettings.setValue("engine/image_max_pixels", "12845056")  # not a choice offered: standard
    assert again.settings.image_max_pixels == p.CHAT_IMAGE_MAX_PIXELS

    window = make_window()
    window.settings_view.detail_combo.setCurrentIndex(1)
    assert window.send_message("Read the small print")
    qtbot.waitUntil(lambda: not window.session.busy, timeout=10_000)
    [chat] = chats(command_log)
    assert chat.image_max_pixels == 2 * p.CHAT_IMAGE_MAX_PIXELS


def test_tab_leaves_the_instructions_box_instead_of_typing_a_tab(qtbot, view) -> None:
    from PySide6.QtWidgets import QApplication

    view.window().activateWindow()
    view.system_edit.setFocus()
    qtbot.waitUntil(view.system_edit.hasFocus)
    qtbot.keyClick(view.system_edit, Qt.Key.Key_Tab)
    assert view.system_edit.toPlainText() == ""
    assert QApplication.focusWidget() is not view.system_edit  # on to the next setting


def test_the_hugging_face_token_goes_to_the_keyring_entry_downloads_read(
    qtbot, view, keyring_file
) -> None:
    from engine.protocol import models as pm

    ring = JsonFileKeyring(keyring_file)
    assert view.hub_token_edit.echoMode() == QLineEdit.EchoMode.Password
    assert "No token saved" in view.hub_token_status.text()
    qtbot.keyClicks(view.hub_token_edit, "hf_gated_secret")
    qtbot.keyClick(view.hub_token_edit, Qt.Key.Key_Return)
    assert ring.get_password(pm.HUB_TOKEN_SERVICE, pm.HUB_TOKEN_USER) == "hf_gated_secret"
    assert view.hub_token_edit.text() == "" and "is saved" in view.hub_token_status.text()
    view.hub_token_remove.click()
    assert ring.get_password(pm.HUB_TOKEN_SERVICE, pm.HUB_TOKEN_USER) is None
    assert not view.hub_token_remove.isEnabled()

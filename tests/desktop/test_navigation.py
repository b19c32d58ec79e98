"""The window's pages: the rail and Ctrl+<n> switch them; chats carry the Settings' routing."""

from __future__ import annotations

import pytest
from PySide6.QtCore import Qt

from desktop.settings_store import POLICY
from tests.desktop.helpers import chats


def test_the_rail_and_ctrl_number_switch_pages(qtbot, make_window) -> None:
    window = make_window(start=False)
    assert window.current_page() == "chat"
    qtbot.mouseClick(window.navigation._buttons["settings"], Qt.MouseButton.LeftButton)
    assert window.current_page() == "settings"
    assert window.pages.currentWidget().isVisible()
    window.activateWindow()
    qtbot.waitUntil(window.isActiveWindow, timeout=5_000)
    qtbot.keyClick(window.settings_view, Qt.Key.Key_1, Qt.KeyboardModifier.ControlModifier)
    assert window.current_page() == "chat"


def test_every_page_fits_a_1024_px_screen(qtbot, make_window) -> None:
    window = make_window()
    for key in ("chat", "extract", "search", "finetune", "models", "settings"):
        window.show_page(key)
        qtbot.wait(10)
    assert window.minimumSizeHint().width() <= 960  # room for a window frame and a dock


def test_a_chat_carries_the_routing_policy_chosen_in_settings(
    qtbot, make_window, command_log
) -> None:
    window = make_window()
    window.cloud_settings.set(POLICY, "local_then_cloud")
    assert window.send_message("hello")
    qtbot.waitUntil(lambda: not window.session.busy, timeout=10_000)
    sent = chats(command_log)[-1]
    assert sent.policy == "local_then_cloud" and sent.backend == window.cloud_settings.provider
    assert sent.never_send is False


@pytest.mark.qt_log_ignore(
    "propagateSizeHints", "does not support raise"
)  # the offscreen platform has no stacking
def test_using_a_trained_adapter_switches_chat_to_it(
    qtbot, make_window, command_log, tmp_path
) -> None:
    window = make_window()
    wizard = window.finetune_page.open_wizard()
    assert wizard.isVisible()
    wizard.close()
    adapter = tmp_path / "run" / "adapter"
    window.finetune_page.session.use_adapter_requested.emit("fake-org/fake-vlm", str(adapter))
    assert window.current_page() == "chat" and window.session.adapter == str(adapter)
    assert window.send_message("Does it know my forms now?")
    qtbot.waitUntil(lambda: not window.session.busy, timeout=10_000)
    assert chats(command_log)[-1].adapter == str(adapter)


def test_a_found_image_goes_to_chat_or_to_extraction(qtbot, make_window, tmp_path) -> None:
    from tests.desktop.helpers import make_image

    window = make_window(start=False)
    image = make_image(tmp_path / "receipt.png")
    window.search_view.chat_about_image.emit(str(image))
    assert window.current_page() == "chat"
    assert [a.name for a in window.session.draft_attachments] == ["receipt.png"]
    window.search_view.extract_from_image.emit(str(image))
    assert window.current_page() == "extract"
    assert [f.path.name for f in window.extract_view.session.files()] == ["receipt.png"]

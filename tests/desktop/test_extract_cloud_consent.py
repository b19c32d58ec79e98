""" "Local, then ask before cloud" on the Extract page: the batch waits for the user's yes.

The real engine, a local model that cannot be used (not installed), and the real OpenAI SDK
against a local server that speaks its wire format (tests/engine/wire).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from PySide6.QtWidgets import QMessageBox

from desktop import paths
from desktop.engine_client import EngineClient
from desktop.extraction_queue import BatchStatus, FileStatus
from desktop.main_window import MainWindow
from desktop.settings_store import CLOUD_PROVIDER, POLICY
from desktop.state import ModelCatalog, ModelChoice
from desktop.storage import Storage
from tests.desktop.helpers import make_image
from tests.engine.wire.stack import REAL_CREDENTIALS, CloudStack

Yes, YesToAll, No = (
    QMessageBox.StandardButton.Yes,
    QMessageBox.StandardButton.YesToAll,
    QMessageBox.StandardButton.No,
)


@pytest.fixture
def cloud_window(
    qtbot, settings, tmp_path: Path, monkeypatch
) -> Iterator[tuple[MainWindow, CloudStack]]:
    stack = CloudStack(tmp_path / "stack")
    for name in REAL_CREDENTIALS:
        monkeypatch.delenv(name, raising=False)
    for name, value in stack.env().items():  # the engine inherits the servers and their keys
        if os.environ.get(name) != value:
            monkeypatch.setenv(name, value)
    storage = Storage(paths.database_path())
    client = EngineClient(restart_delay_ms=100, log_path=tmp_path / "engine.log")
    window = MainWindow(storage, client, ModelCatalog(settings), settings=settings)
    qtbot.addWidget(window)
    window.set_model_choice(ModelChoice(str(tmp_path / "not-installed"), "auto", "cpu"))
    window.cloud_settings.set(POLICY, "local_then_ask")
    window.cloud_settings.set(CLOUD_PROVIDER, "openai")
    window.show()
    window.show_page("extract")
    client.start()
    qtbot.waitUntil(client.is_ready, timeout=60_000)
    yield window, stack
    client.stop()
    storage.close()
    stack.close()


def test_a_document_goes_to_the_cloud_only_after_a_yes_and_yes_to_all_covers_the_batch(
    qtbot, cloud_window, tmp_path: Path, monkeypatch
) -> None:
    window, stack = cloud_window
    answers, asked = [Yes, No, YesToAll, No], []

    def question(parent, title, text, *args, **kwargs):
        asked.append(text)
        return answers.pop(0)

    monkeypatch.setattr(QMessageBox, "question", staticmethod(question))
    stack.openai.json_answers.extend([{"colour": "red"}] * 3)
    view = window.extract_view
    session = view.session
    session.choose_schema("key_values")
    view.two_pass_box.setChecked(False)
    files = [make_image(tmp_path / f"{name}.png") for name in ("first", "second", "third")]
    view.add_paths(files)

    def status(name: str) -> str:
        return next(f.status for f in session.files() if f.name == f"{name}.png")

    # The first is sent after its yes; the second's no leaves the batch paused, nothing sent.
    qtbot.waitUntil(lambda: len(asked) == 2, timeout=60_000)
    assert "first.png" in asked[0] and "OpenAI" in asked[0] and "needs your consent" in asked[0]
    qtbot.waitUntil(lambda: status("first") == FileStatus.DONE, timeout=60_000)
    assert len(stack.openai.requests) == 1
    assert (status("second"), session.batch.status) == (FileStatus.QUEUED, BatchStatus.PAUSED)
    qtbot.wait(50)  # what the window shows while the batch waits, not a passing notice
    assert "Paused: second.png was not sent" in view.banner.label.text()
    assert view.banner.isVisible() and view.banner.action.text() == "Resume"

    # Resume: the local model is tried again and the question comes back; "Yes to All" sends
    # it, and the rest of the batch goes without asking (the local model first, each time).
    session.resume()
    qtbot.waitUntil(lambda: status("third") == FileStatus.DONE, timeout=60_000)
    assert status("second") == FileStatus.DONE
    assert len(asked) == 3 and "second.png" in asked[2]
    assert len(stack.openai.requests) == 3

    document = next(f.document for f in session.files() if f.name == "third.png")
    [page] = document["pages"]
    assert (page["provenance"]["backend"], page["data"]) == ("openai", {"colour": "red"})

    # "Yes to All" covered the documents waiting then, not one dropped afterwards.
    batch = session.batch_id
    view.add_paths([make_image(tmp_path / "fourth.png")])
    qtbot.waitUntil(lambda: len(asked) == 4, timeout=60_000)
    assert session.batch_id == batch  # it joined the same batch
    assert "fourth.png" in asked[3] and len(stack.openai.requests) == 3

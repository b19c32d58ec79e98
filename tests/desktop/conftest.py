"""Desktop tests: offscreen Qt, a private data folder per test, windows wired to the fake engine."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")  # before any QApplication exists

import pytest
from PySide6.QtCore import QSettings

from desktop import paths
from desktop.engine_client import EngineClient
from desktop.main_window import MainWindow
from desktop.state import ModelCatalog, ModelChoice
from desktop.storage import Storage
from tests.desktop.helpers import FAKE_ENGINE, FAKE_MODEL


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Qt warnings fail desktop tests (STYLE.md), except the offscreen platform's own chatter."""
    for item in items:
        if "tests/desktop" in item.nodeid.replace("\\", "/"):
            item.add_marker(pytest.mark.qt_log_level_fail("WARNING"))
            item.add_marker(pytest.mark.qt_log_ignore("propagateSizeHints"))


@pytest.fixture(autouse=True)
def data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every test gets its own data folder, settings folder and an empty Hugging Face cache."""
    folder = tmp_path / "data"
    monkeypatch.setenv("VISIONDESK_DATA_DIR", str(folder))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf-cache"))
    for scope in (QSettings.Scope.UserScope, QSettings.Scope.SystemScope):
        QSettings.setPath(QSettings.Format.NativeFormat, scope, str(tmp_path / "qsettings"))
    return paths.data_dir()


@pytest.fixture(autouse=True)
def quit_without_asking(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests close windows mid-work on purpose; the question a person gets then has its own
    test, which turns it back on."""
    monkeypatch.setattr(MainWindow, "ask_before_quitting", False)


@pytest.fixture
def settings(tmp_path: Path) -> QSettings:
    return QSettings(str(tmp_path / "settings.ini"), QSettings.Format.IniFormat)


@pytest.fixture
def command_log(tmp_path: Path) -> Path:
    return tmp_path / "engine-commands.jsonl"


@pytest.fixture
def engine_command(command_log: Path) -> Callable[..., list[str]]:
    def make(*args: str) -> list[str]:
        return [sys.executable, str(FAKE_ENGINE), "--log", str(command_log), *args]

    return make


@pytest.fixture
def make_client(qtbot, engine_command) -> Iterator[Callable[..., EngineClient]]:
    clients: list[EngineClient] = []

    def make(*engine_args: str, **kwargs: object) -> EngineClient:
        kwargs.setdefault("restart_delay_ms", 50)
        kwargs.setdefault("handshake_timeout_ms", 15_000)
        client = EngineClient(engine_command(*engine_args), **kwargs)  # type: ignore[arg-type]
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.stop()


@pytest.fixture
def make_window(qtbot, make_client, settings) -> Iterator[Callable[..., MainWindow]]:
    """``make_window(*fake_engine_args, start=True, model=FAKE_MODEL, **client_kwargs)``."""
    opened: list[tuple[MainWindow, Storage]] = []

    def make(
        *engine_args: str, start: bool = True, model: str | None = FAKE_MODEL, **kwargs: object
    ) -> MainWindow:
        storage = Storage(paths.database_path())
        client = make_client(*engine_args, **kwargs)
        window = MainWindow(storage, client, ModelCatalog(settings), settings=settings)
        qtbot.addWidget(window)
        window.set_model_choice(ModelChoice(model))
        window.show()
        if start:
            client.start()
            qtbot.waitUntil(client.is_ready, timeout=15_000)
        opened.append((window, storage))
        return window

    yield make
    for window, storage in opened:
        window.client.stop()
        storage.close()

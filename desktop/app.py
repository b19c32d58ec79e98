"""Start the desktop application: QApplication, theme, storage, main window; the engine follows."""

from __future__ import annotations

import logging
import signal
import sys
from pathlib import Path

from PySide6.QtCore import QCoreApplication, QTimer
from PySide6.QtGui import QFont
from PySide6.QtWidgets import QApplication, QMessageBox

from desktop import paths
from desktop.engine_client import EngineClient
from desktop.main_window import MainWindow
from desktop.single_instance import SingleInstance
from desktop.state import ModelCatalog
from desktop.storage import Storage

log = logging.getLogger("visiondesk.app")

THEME_CANDIDATES = (
    Path(__file__).resolve().parents[1] / "resources" / "theme.qss",  # a checkout
    Path(__file__).resolve().parent / "resources" / "theme.qss",  # an installed package
)


def load_theme(app: QApplication) -> None:
    """The light theme; the app still works (plain Qt style) if the file is missing."""
    for path in THEME_CANDIDATES:
        if path.is_file():
            icons = (path.parent / "icons").as_posix()  # QSS urls are relative to the cwd
            app.setStyleSheet(path.read_text(encoding="utf-8").replace("@ICONS@", icons))
            return
    log.warning("theme not found; using the default style")


def create_application(argv: list[str]) -> QApplication:
    existing = QApplication.instance()
    app = existing if isinstance(existing, QApplication) else QApplication(argv)
    QCoreApplication.setOrganizationName("VisionDesk")
    QCoreApplication.setApplicationName("VisionDesk")
    app.setStyle("Fusion")  # the same look on every platform, so the theme applies evenly
    font = QFont(app.font())
    font.setPointSizeF(max(font.pointSizeF(), 10.0))
    app.setFont(font)
    load_theme(app)
    return app


def main(argv: list[str] | None = None) -> int:
    """Show the window at once; the engine and the model scan start in the background."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    app = create_application(list(sys.argv if argv is None else ["visiondesk", *argv]))
    instance = SingleInstance(paths.data_dir())
    if not instance.acquire():
        return _already_running(instance)
    storage = Storage(paths.database_path())
    storage.mark_abandoned_answers()  # no other window writes them: this one holds the folder
    client = EngineClient(log_path=paths.data_dir() / "logs" / "engine.log")
    catalog = ModelCatalog()
    window = MainWindow(storage, client, catalog)
    window.show()
    instance.activated.connect(lambda: _bring_up(window))
    QTimer.singleShot(0, client.start)
    QTimer.singleShot(0, catalog.refresh)
    app.aboutToQuit.connect(client.stop)
    # Ctrl-C in the terminal that started the app closes the window as its close button does.
    # Python runs signal handlers only between bytecodes, so a timer lets it look now and then.
    signal.signal(signal.SIGINT, lambda *_: window.close())
    wake = QTimer(interval=250)
    wake.timeout.connect(lambda: None)
    wake.start()
    try:
        return app.exec()
    finally:
        signal.signal(signal.SIGINT, signal.default_int_handler)
        app.aboutToQuit.disconnect(client.stop)
        client.stop()
        storage.close()
        instance.release()


def _already_running(instance: SingleInstance) -> int:
    """Another VisionDesk holds this data folder: show its window rather than start a second."""
    if instance.ask_owner_to_show():
        print(
            f"visiondesk: already running with the data folder {instance.data_dir}; "
            "its window was brought to the front",
            file=sys.stderr,
        )
        return 0
    pid = instance.owner_pid()
    QMessageBox.warning(
        None,
        "VisionDesk is already running",
        f"Another VisionDesk{f' (process {pid})' if pid else ''} is using the data folder "
        f"{instance.data_dir}, and it does not answer. Close it first, or start this one with "
        "another folder (VISIONDESK_DATA_DIR).",
    )
    return 1


def _bring_up(window: MainWindow) -> None:
    if window.isMinimized():
        window.showNormal()
    window.show()
    window.raise_()
    window.activateWindow()


if __name__ == "__main__":
    sys.exit(main())

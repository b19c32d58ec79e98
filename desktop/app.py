"""Start the desktop application: QApplication, theme, storage, main window; the engine follows."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

from PySide6.QtCore import QCoreApplication, QTimer
from PySide6.QtGui import QFont
from PySide6.QtWidgets import QApplication

from desktop import paths
from desktop.engine_client import EngineClient
from desktop.main_window import MainWindow
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
    storage = Storage(paths.database_path())
    storage.mark_abandoned_answers()
    client = EngineClient(log_path=paths.data_dir() / "logs" / "engine.log")
    catalog = ModelCatalog()
    window = MainWindow(storage, client, catalog)
    window.show()
    QTimer.singleShot(0, client.start)
    QTimer.singleShot(0, catalog.refresh)
    app.aboutToQuit.connect(client.stop)
    try:
        return app.exec()
    finally:
        app.aboutToQuit.disconnect(client.stop)
        client.stop()
        storage.close()


if __name__ == "__main__":
    sys.exit(main())

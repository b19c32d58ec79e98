"""One window per data folder: a second launch brings the first window to the front instead of
sharing its conversations, batch queue and GPU with a second engine."""

from __future__ import annotations

import hashlib
from pathlib import Path

from PySide6.QtCore import QLockFile, QObject, Signal, Slot
from PySide6.QtNetwork import QLocalServer, QLocalSocket

LOCK_NAME = "visiondesk.lock"


class SingleInstance(QObject):
    """Holds the data folder's lock; ``activated`` when a later launch asks for the window."""

    activated = Signal()

    def __init__(self, data_dir: Path, parent: QObject | None = None) -> None:
        super().__init__(parent)
        data_dir.mkdir(parents=True, exist_ok=True)
        self.data_dir = data_dir
        self._lock = QLockFile(str(data_dir / LOCK_NAME))
        # Never stale while its owner lives (a window stays open for days); the lock of a
        # process that is gone (a crash) is taken over, as QLockFile checks the pid.
        self._lock.setStaleLockTime(0)
        digest = hashlib.sha256(str(data_dir.resolve()).encode()).hexdigest()[:16]
        self._name = f"visiondesk-{digest}"
        self._server: QLocalServer | None = None

    def acquire(self) -> bool:
        """Take the folder; False if another live VisionDesk holds it."""
        if not self._lock.tryLock(200):
            return False
        QLocalServer.removeServer(self._name)  # a socket left by a crash
        server = QLocalServer(self)
        server.newConnection.connect(self._on_server_new_connection)
        server.listen(self._name)
        self._server = server
        return True

    def ask_owner_to_show(self) -> bool:
        """Ask the VisionDesk holding the folder to bring its window up; False if it did not
        answer (it may be hung, or starting)."""
        socket = QLocalSocket()
        socket.connectToServer(self._name)
        if not socket.waitForConnected(2000):
            return False
        socket.write(b"show\n")
        written = socket.waitForBytesWritten(2000)
        socket.disconnectFromServer()
        return written

    def owner_pid(self) -> int | None:
        info = self._lock.getLockInfo()  # (pid, host, app), or an empty one without a lock
        pid = info[0] if isinstance(info, tuple) and info else 0
        return int(pid) or None

    def release(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
        self._lock.unlock()

    @Slot()
    def _on_server_new_connection(self) -> None:
        assert self._server is not None
        while (socket := self._server.nextPendingConnection()) is not None:
            socket.disconnected.connect(socket.deleteLater)
            self.activated.emit()

"""Start-up: the window appears at once, before the engine has said anything."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from PySide6.QtGui import QImage

from tests.desktop.helpers import FAKE_ENGINE

ROOT = Path(__file__).resolve().parents[2]

# Runs desktop.app.main() in a fresh interpreter (app.exec() and quit() would end the event loop
# of the test process's shared QApplication), with an engine that never answers the handshake.
PROBE = """
import functools, json, sys, time
from PySide6.QtCore import QTimer
from PySide6.QtWidgets import QApplication
import desktop.app
from desktop.engine_client import EngineClient
from desktop.main_window import MainWindow

started = time.monotonic()
app = QApplication(["visiondesk"])  # main() reuses it; the timer below needs it to exist
desktop.app.EngineClient = functools.partial(EngineClient, [sys.executable, {engine!r}, "--hang-handshake"])

def look():
    [window] = [w for w in QApplication.topLevelWidgets() if isinstance(w, MainWindow)]
    seen = dict(visible=window.isVisible(), after_s=time.monotonic() - started,
                phase=window.client.phase, status=window.status_bar.state.text(),
                engine_pid=window.client.engine_pid())
    print("SEEN " + json.dumps(seen), flush=True)
    window.close()
    QApplication.quit()

QTimer.singleShot(300, look)
sys.exit(desktop.app.main([]))
"""


def test_main_shows_the_window_without_waiting_for_the_engine(tmp_path: Path) -> None:
    env = dict(os.environ, QT_QPA_PLATFORM="offscreen", VISIONDESK_DATA_DIR=str(tmp_path / "data"))
    env["XDG_CONFIG_HOME"] = str(tmp_path / "config")  # QSettings of this probe only
    done = subprocess.run(
        [sys.executable, "-c", PROBE.format(engine=str(FAKE_ENGINE))],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    [line] = [line for line in done.stdout.splitlines() if line.startswith("SEEN ")]
    seen = json.loads(line.removeprefix("SEEN "))
    assert seen["visible"] is True
    assert seen["after_s"] < 3.0  # imports and window together; the engine is not awaited
    assert seen["phase"] == "starting" and seen["status"] == "Starting engine…"
    assert seen["engine_pid"]  # started in the background
    assert (tmp_path / "data" / "visiondesk.sqlite3").is_file()


def test_the_screenshot_script_renders_a_conversation(tmp_path: Path) -> None:
    out = tmp_path / "window.png"
    subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "screenshot.py"), str(out)],
        check=True,
        cwd=ROOT,
        timeout=120,
        capture_output=True,
    )
    image = QImage(str(out))
    assert image.width() >= 1000 and image.height() >= 700


# The first window: says when it is up and when a later launch brought it to the front.
FIRST = """
import functools, sys
from PySide6.QtCore import QTimer
from PySide6.QtWidgets import QApplication
import desktop.app
from desktop.engine_client import EngineClient

app = QApplication(["visiondesk"])
desktop.app.EngineClient = functools.partial(EngineClient, [sys.executable, {engine!r}])
bring_up = desktop.app._bring_up
desktop.app._bring_up = lambda window: (print("BROUGHT UP", flush=True), bring_up(window))
QTimer.singleShot(300, lambda: print("UP", flush=True))
sys.exit(desktop.app.main([]))
"""


def test_a_second_launch_brings_the_first_window_up_and_ctrl_c_closes_it_cleanly(
    tmp_path: Path,
) -> None:
    import signal

    env = dict(os.environ, QT_QPA_PLATFORM="offscreen", VISIONDESK_DATA_DIR=str(tmp_path / "data"))
    env["XDG_CONFIG_HOME"] = str(tmp_path / "config")
    first = subprocess.Popen(
        [sys.executable, "-c", FIRST.format(engine=str(FAKE_ENGINE))],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert first.stdout is not None
        assert first.stdout.readline().strip() == "UP"
        second = subprocess.run(
            [sys.executable, "-m", "desktop.main"],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert second.returncode == 0, second.stderr
        assert "already running" in second.stderr and "brought to the front" in second.stderr
        assert first.stdout.readline().strip() == "BROUGHT UP"
        first.send_signal(signal.SIGINT)  # a terminal's Ctrl-C: the window closes as usual
        assert first.wait(timeout=60) == 0
    finally:
        if first.poll() is None:
            first.kill()
            first.wait()

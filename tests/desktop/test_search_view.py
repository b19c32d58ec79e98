"""The Search view with the real engine and a tiny CLIP: index a folder, query, a lazy grid."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest
from PySide6.QtCore import Qt
from PySide6.QtGui import QPixmap
from PySide6.QtWidgets import QApplication

from desktop import paths
from desktop.engine_client import EngineClient
from desktop.views.search import SearchView
from desktop.views.search_dialogs import FoldersDialog
from engine import protocol as p
from engine.protocol import search as ps
from engine.search.samples import write_samples
from engine.search.store import IndexStore

pytestmark = pytest.mark.slow


@pytest.fixture
def view(qtbot: Any, tmp_path: Path) -> Any:
    client = EngineClient(log_path=tmp_path / "engine.log")
    search = SearchView(client, paths.data_dir())
    qtbot.addWidget(search)
    search.resize(900, 640)
    search.show()
    client.start()
    qtbot.waitUntil(client.is_ready, timeout=120_000)
    yield search
    client.stop()


def requested_thumbnails(sent: list[p.Command]) -> set[int]:
    return {i for command in sent if isinstance(command, ps.GetThumbnails) for i in command.ids}


def test_index_a_folder_query_and_browse_a_lazily_filled_grid(
    qtbot: Any, view: SearchView, tiny_model: Any, tmp_path: Path
) -> None:
    folder = tmp_path / "photos"
    write_samples(folder, 60, size=(240, 180), noise=False)
    sent: list[p.Command] = []
    send = view.client.send
    view.client.send = lambda command: (sent.append(command), send(command))[1]
    progress: list[str] = []
    view.client.event_received.connect(
        lambda event: (
            progress.append(view.progress_label.text()) if isinstance(event, p.Progress) else None
        )
    )

    view.set_model(str(tiny_model("clip")))
    with qtbot.waitSignal(view.index_finished, timeout=300_000) as finished:
        assert view.index_folders([str(folder)]) is not None
        assert view.progress_row.isVisibleTo(view)
    reason, result = finished.args
    assert reason == "done" and result["embedded"] == 60
    assert any("files ·" in text and "/s" in text for text in progress)  # count, rate (and ETA)
    assert not view.progress_row.isVisibleTo(view)
    qtbot.waitUntil(lambda: view.status is not None and view.status.items == 60, timeout=60_000)
    assert view.folders_button.text() == "60 images in 1 folder"

    view.query_edit.setText("whiteboard with a bar chart")
    with qtbot.waitSignal(view.results_shown, timeout=120_000) as shown:
        view.search_button.click()
    assert shown.args == [60]
    assert view.stack.currentWidget() is view.grid
    assert "60 results for “whiteboard with a bar chart”" in view.info_label.text()
    scores = [hit.score for hit in view.results.hits]
    assert scores == sorted(scores, reverse=True)

    # Only the cells on screen ask for their thumbnails; scrolling asks for more.
    top = view.results.index(0)
    qtbot.waitUntil(
        lambda: isinstance(view.results.data(top, Qt.ItemDataRole.DecorationRole), QPixmap),
        timeout=60_000,
    )
    first_screen = requested_thumbnails(sent)
    assert 0 < len(first_screen) < 60
    view.grid.scrollToBottom()
    last = view.results.index(59)
    qtbot.waitUntil(
        lambda: isinstance(view.results.data(last, Qt.ItemDataRole.DecorationRole), QPixmap),
        timeout=60_000,
    )
    assert len(requested_thumbnails(sent)) > len(first_screen)

    hit = view.results.hits[0]
    tooltip = view.results.data(top, Qt.ItemDataRole.ToolTipRole)
    assert f"{hit.score:.3f}" in tooltip and hit.path in tooltip
    actions = {action.text(): action for action in view.hit_menu(hit, 0).actions() if action.text()}
    assert {
        "Open",
        "Show in folder",
        "Copy path",
        "Find similar images",
        "Chat about this image",
        "Extract from this image",
    } <= set(actions)
    actions["Copy path"].trigger()
    assert QApplication.clipboard().text() == hit.path
    opened: list[int] = []
    view.open_hit = opened.append  # type: ignore[method-assign]
    view.grid.setCurrentIndex(top)
    qtbot.keyClick(view.grid, Qt.Key.Key_Return)  # the keyboard opens a result too
    assert opened == [0]
    # Every row is full: the cells share the width the layout gives them, none left empty.
    columns = len({view.grid.visualRect(view.results.index(i)).x() for i in range(60)})
    assert view.grid.viewport().width() - columns * view.grid.gridSize().width() < 30
    with qtbot.waitSignal(view.chat_about_image) as chat:
        actions["Chat about this image"].trigger()
    assert chat.args == [hit.path]
    with qtbot.waitSignal(view.extract_from_image) as extract:
        actions["Extract from this image"].trigger()
    assert extract.args == [hit.path]

    # "Find similar images": an image query, whose best match is the image itself.
    with qtbot.waitSignal(view.results_shown, timeout=120_000):
        actions["Find similar images"].trigger()
    assert view.results.hits[0].path == hit.path and view.query_image == hit.path


def test_indexing_can_be_cancelled_from_the_view(
    qtbot: Any, view: SearchView, tiny_model: Any, tmp_path: Path
) -> None:
    folder = tmp_path / "many"
    write_samples(folder, 400, size=(320, 240), suffix=".png", noise=False)
    view.set_model(str(tiny_model("clip")))
    started: list[bool] = []
    view.client.event_received.connect(
        lambda event: (
            started.append(True)
            if isinstance(event, p.Progress) and event.stage == "indexing"
            else None
        )
    )
    with qtbot.waitSignal(view.index_finished, timeout=300_000) as finished:
        view.index_folders([str(folder)])
        qtbot.waitUntil(lambda: bool(started), timeout=300_000)
        view.cancel_button.click()
        assert "Stopping" in view.progress_label.text()
    reason, result = finished.args
    assert reason == "cancelled" and result["embedded"] < 400
    assert not view.progress_row.isVisibleTo(view)
    assert view.info_label.text().startswith("Stopped;")


def test_an_index_error_stays_visible_after_the_status_refresh(
    qtbot: Any, view: SearchView, tmp_path: Path
) -> None:
    with IndexStore.open(view.data_dir) as store, store.transaction():
        store.add_folder(str(tmp_path), "first")  # an index with a folder: a status to show
    view.set_model("no/such-model")
    with qtbot.waitSignal(view.index_finished, timeout=60_000) as finished:
        view.index_folders([str(tmp_path / "nope")])
    with qtbot.waitSignal(view.status_updated, timeout=60_000):  # the refresh after the run
        pass
    assert finished.args[0] == "error"
    assert f"Folder not found: {tmp_path / 'nope'}" in view.info_label.text()
    assert view.folders_button.text() == "0 images in 1 folder"


def test_update_index_leaves_out_a_gone_folder_that_the_folder_list_removes(
    qtbot: Any, view: SearchView, tiny_model: Any, tmp_path: Path
) -> None:
    kept, gone = tmp_path / "kept", tmp_path / "gone"
    write_samples(kept, 3, size=(120, 90), noise=False)
    write_samples(gone, 3, size=(120, 90), seed=1, noise=False)
    view.set_model(str(tiny_model("clip")))
    with qtbot.waitSignal(view.index_finished, timeout=300_000):
        view.index_folders([str(kept), str(gone)])
    qtbot.waitUntil(lambda: view.status is not None and view.status.items == 6, timeout=60_000)

    shutil.rmtree(gone)
    write_samples(kept / "new", 2, size=(120, 90), seed=2, noise=False)
    with qtbot.waitSignal(view.index_finished, timeout=300_000) as finished:
        view.reindex_button.click()
    with qtbot.waitSignal(view.status_updated, timeout=60_000):  # the refresh after the run
        pass
    reason, result = finished.args
    assert reason == "done" and result["embedded"] == 2
    assert result["gone"] == [{"path": str(gone), "items": 3}]
    # The run's outcome, the gone folder included, is still there after the status refresh.
    info = view.info_label.text()
    assert info.startswith("Indexed 2 new") and f"{gone} is gone" in info
    assert view.folders_button.text() == "8 images in 2 folders (1 gone)"
    # The long sentence wraps: it neither widens the view past its window nor pushes the link
    # (the way to the folder list) out of sight.
    assert view.info_label.minimumSizeHint().width() < 400
    QApplication.processEvents()
    assert view.folders_button.geometry().right() < view.width()

    view.folders_button.click()
    dialog = view.findChild(FoldersDialog)
    assert dialog is not None and dialog.isVisible()
    assert dialog.table.item(0, 2).text() == "gone from disk"  # sorted by path: gone, kept
    state = dialog.table.fontMetrics().horizontalAdvance("gone from disk")
    assert dialog.table.columnWidth(2) > state  # not cut to "gone from …"
    assert not dialog.remove_button.isEnabled()
    dialog.table.selectRow(0)
    with qtbot.waitSignal(view.status_updated, timeout=60_000) as updated:
        dialog.remove_button.click()
    status = updated.args[0]
    assert [(folder.path, folder.gone) for folder in status.folders] == [(str(kept), False)]
    assert view.info_label.text().startswith(f"Removed 3 images of {gone} from the index")
    assert view.folders_button.text() == "5 images in 1 folder"

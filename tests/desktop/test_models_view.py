"""The Models view and per-model consent, against the real engine and a local Hub server.

The view takes any object with ``send(command)`` and an ``event_received`` signal; here that is
a thin adapter over the CLI's engine process (a real ``python -m engine``), so downloads, plans,
listing and deletion all run for real.
"""

from __future__ import annotations

import shutil
import socket
import threading
from collections.abc import Iterator

import pytest
from PySide6.QtCore import QObject, QTimer, Signal
from PySide6.QtWidgets import QApplication, QInputDialog

from desktop.cli.engine_process import EngineGone, EngineProcess
from desktop.consent import (
    PICKLE,
    REMOTE_CODE,
    ConsentDialog,
    ConsentStore,
    ask_consent,
    needs_from_error,
)
from desktop.views.model_picker import quant_words
from desktop.views.models import ModelsView
from engine import protocol as p
from engine.protocol import models as pm
from tests.engine.hub_server import HubServer, Repo

MIB = 1024 * 1024


class RealEngine(QObject):
    """``send`` + ``event_received`` over a real engine subprocess."""

    event_received = Signal(object)

    def __init__(self) -> None:
        super().__init__()
        self.sent: list[p.Command] = []
        self.process = EngineProcess()
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        try:
            for event in self.process.events():
                self.event_received.emit(event)
        except (EngineGone, ValueError):
            pass

    def send(self, command: p.Command) -> None:
        self.sent.append(command)
        self.process.send(command)

    def close(self) -> None:
        self.process.close()


@pytest.fixture(scope="module")
def engine(tiny_cache, tmp_path_factory) -> Iterator[RealEngine]:
    # Module-scoped, so it starts before the per-test folders exist: give it its own, so that
    # nothing it does can reach the user's Hugging Face cache or data folder.
    home = tmp_path_factory.mktemp("engine-home")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("HF_HOME", str(home / "hf"))
        patch.setenv("HF_HUB_CACHE", str(home / "hf" / "hub"))
        patch.setenv("VISIONDESK_DATA_DIR", str(home / "data"))
        adapter = RealEngine()
    yield adapter
    adapter.close()


@pytest.fixture
def hub(tiny_model) -> Iterator[HubServer]:
    files = Repo.from_folder(tiny_model("llava")).files
    big = dict(files, **{"extra.safetensors": b"\0" * (3 * MIB)})
    repos = {"org/tiny-llava": Repo(files=dict(files)), "org/slow-llava": Repo(files=big)}
    with HubServer(repos) as server:
        yield server


def local_catalogue() -> pm.Catalogue:
    """Two real picks and the local repos, in the catalogue's own format."""
    from desktop.catalogue import load_catalogue

    real = load_catalogue()
    local = [
        pm.CatalogueEntry(
            repo_id=repo_id, name=repo_id.split("/")[1], family="llava", kind="vlm",
            params_b=0.001, licence="apache-2.0", good_at=["chat"],
            image_budget=pm.ImageBudget(64, 48), min_vram_gb={"nf4": 1, "int8": 1, "none": 1},
            cpu_ram_gb=1,
        )
        for repo_id in ("org/tiny-llava", "org/slow-llava")
    ]  # fmt: skip
    picks = dict(real.picks)
    for group in ("cpu", "8-12gb"):
        picks[group] = [entry.repo_id for entry in local] + picks[group]
    return pm.Catalogue(version=1, models=real.models + local, picks=picks)


def make_view(qtbot, engine, settings, tmp_path, hub=None) -> ModelsView:
    view = ModelsView(
        engine,
        settings=settings,
        catalogue=local_catalogue(),
        managed_root=tmp_path / "models",
        cache_dir=str(tmp_path / "hub"),
        endpoint=hub.endpoint if hub else None,
    )
    qtbot.addWidget(view)
    with qtbot.waitSignal(view.jobs.installed_changed, timeout=60_000):
        view.show()  # shown the first time: the installed list is asked for
    return view


def catalogue_rows(view: ModelsView) -> dict[str, tuple[str, str]]:
    tree = view.catalogue_tree
    return {
        tree.topLevelItem(i).data(0, 256): (tree.topLevelItem(i).text(4), tree.topLevelItem(i).data(4, 256))
        for i in range(tree.topLevelItemCount())
    }  # fmt: skip


def select_catalogue(view: ModelsView, repo_id: str) -> None:
    tree = view.catalogue_tree
    for i in range(tree.topLevelItemCount()):
        if tree.topLevelItem(i).data(0, 256) == repo_id:
            tree.setCurrentItem(tree.topLevelItem(i))
            return
    raise AssertionError(f"{repo_id} is not listed")


def installed_models(view: ModelsView) -> list[str]:
    tree = view.installed_tree
    return [tree.topLevelItem(i).text(0) for i in range(tree.topLevelItemCount())]


def select_installed(view: ModelsView, model: str) -> None:
    tree = view.installed_tree
    for i in range(tree.topLevelItemCount()):
        if tree.topLevelItem(i).text(0) == model:
            tree.setCurrentItem(tree.topLevelItem(i))
            return
    raise AssertionError(f"{model} is not installed")


# --- consent ------------------------------------------------------------------------------------


def test_consent_is_remembered_per_model_and_carried_by_the_load_command(settings) -> None:
    store = ConsentStore(settings)
    store.grant("/models/a", [PICKLE])
    again = ConsentStore(settings)
    assert again.granted("/models/a") == {PICKLE} and again.granted("/models/b") == set()
    assert again.missing("/models/a", [PICKLE, REMOTE_CODE]) == [REMOTE_CODE]
    load = again.load_command("job", "/models/a", quant="nf4")
    assert load.allow_pickle and not load.trust_remote_code and load.quant == "nf4"
    again.revoke("/models/a")
    assert not ConsentStore(settings).load_command("job", "/models/a").allow_pickle


def test_the_engines_refusals_name_the_consent_they_need(tiny_model, tmp_path) -> None:
    from engine.errors import ModelUnsafe
    from engine.models.resolve import check_remote_code, check_weights, resolve_model

    folder = tmp_path / "m"
    shutil.copytree(tiny_model("llava"), folder)
    for weights in folder.glob("*.safetensors"):
        weights.rename(folder / "pytorch_model.bin")
    (folder / "config.json").write_text(
        (folder / "config.json").read_text().replace("{", '{"auto_map": {"x": "y"},', 1)
    )
    resolved = resolve_model(str(folder))
    for check, need in ((lambda: check_weights(resolved, False), PICKLE),
                        (lambda: check_remote_code(resolved, False), REMOTE_CODE)):  # fmt: skip
        with pytest.raises(ModelUnsafe) as refused:
            check()
        finished = p.Finished(
            job_id="j", reason="error", error_code=refused.value.code, message=refused.value.message
        )
        assert needs_from_error(finished) == [need]


def test_the_consent_dialog_allows_only_after_trust_is_confirmed_and_asks_once(
    qtbot, settings
) -> None:
    store = ConsentStore(settings)
    seen: list[ConsentDialog] = []

    def confirm() -> None:
        dialog = QApplication.activeModalWidget()
        assert isinstance(dialog, ConsentDialog)
        seen.append(dialog)
        assert not dialog.allow.isEnabled()  # nothing is allowed by default
        dialog.trust.setChecked(True)
        assert dialog.allow.isEnabled()
        dialog.allow.click()

    QTimer.singleShot(0, confirm)
    assert ask_consent(store, "org/pickled", [PICKLE]) is True
    assert len(seen) == 1 and seen[0].needs == [PICKLE]
    assert store.granted("org/pickled") == {PICKLE}

    class MustNotAsk(ConsentDialog):
        def __init__(self, *args: object) -> None:
            raise AssertionError("asked again")

    assert ask_consent(store, "org/pickled", [PICKLE], dialog_factory=MustNotAsk) is True


def test_declining_consent_allows_nothing(qtbot, settings) -> None:
    store = ConsentStore(settings)
    QTimer.singleShot(0, lambda: QApplication.activeModalWidget().reject())
    assert ask_consent(store, "org/remote", [REMOTE_CODE]) is False
    assert store.granted("org/remote") == set()


# --- the view -----------------------------------------------------------------------------------


def test_badges_follow_the_gpu_and_the_catalogue_estimates(
    qtbot, engine, settings, tmp_path
) -> None:
    view = make_view(qtbot, engine, settings, tmp_path)
    gpu = p.DeviceInfo(kind="cuda", name="RTX test", total_memory=8 * pm.GIB)
    view.set_devices([gpu, p.DeviceInfo(kind="cpu", name="cpu", total_memory=16 * pm.GIB)])
    assert "RTX test" in view.device_label.text() and "8.00 GiB" in view.device_label.text()
    rows = catalogue_rows(view)
    assert "Qwen/Qwen2.5-VL-7B-Instruct" in rows  # the 8-12 GB picks
    for repo_id, (text, verdict) in rows.items():
        entry = view.catalogue.entry(repo_id)
        assert verdict in ("fits", "tight", "does_not_fit") and text.startswith(
            verdict.replace("_", " ")
        )
        quant = {quant_words(q): q for q in ("nf4", "int8", "none")}[text.split(" · ")[1]]
        assert verdict == entry.fit(quant, gpu.total_memory)
    view.set_devices([p.DeviceInfo(kind="cpu", name="cpu", total_memory=16 * pm.GIB)])
    assert "HuggingFaceTB/SmolVLM-256M-Instruct" in catalogue_rows(view)
    assert "CPU" in view.device_label.text()


def test_check_fit_plans_from_config_files_fetched_from_the_hub(
    qtbot, engine, settings, tmp_path, hub
) -> None:
    view = make_view(qtbot, engine, settings, tmp_path, hub)
    view.set_devices([p.DeviceInfo(kind="cpu", name="cpu", total_memory=16 * pm.GIB)])
    select_catalogue(view, "org/tiny-llava")
    with qtbot.waitSignal(view.jobs.plan_ready, timeout=120_000):
        view.check_button.click()
    text, verdict = catalogue_rows(view)["org/tiny-llava"]
    assert verdict == "fits" and text.endswith("(planned)")
    assert "image tokens per image" in view.details.text()
    fetched = {r.path.rsplit("/", 1)[-1] for r in hub.resolve_gets()}
    assert "config.json" in fetched and "model.safetensors" not in fetched


def test_download_then_use_the_model(qtbot, engine, settings, tmp_path, hub) -> None:
    view = make_view(qtbot, engine, settings, tmp_path, hub)
    view.set_devices([p.DeviceInfo(kind="cpu", name="cpu", total_memory=16 * pm.GIB)])
    select_catalogue(view, "org/tiny-llava")
    with qtbot.waitSignal(view.jobs.installed_changed, timeout=120_000):
        view.download_button.click()
    row = view.download_row("org/tiny-llava")
    assert row is not None and row.status == "done" and row.bar.value() == 1000
    assert view.tabs.currentIndex() == 2
    assert "org/tiny-llava" in installed_models(view)
    with qtbot.waitSignal(view.jobs.plan_ready, timeout=60_000):  # the verdict before loading
        select_installed(view, "org/tiny-llava")
    assert view.installed_tree.currentItem().text(3).startswith("complete · fits")
    assert view.use_button.isEnabled() and not view.resume_button.isEnabled()
    with qtbot.waitSignal(view.use_model_requested) as used:
        view.use_button.click()
    assert used.args == ["org/tiny-llava"]

    with qtbot.waitSignal(view.jobs.delete_finished, timeout=60_000) as deleted:
        view.delete_selected(confirm=False)
    assert deleted.args == ["org/tiny-llava", ""]
    qtbot.waitUntil(lambda: "org/tiny-llava" not in installed_models(view), timeout=60_000)


def test_any_hub_id_typed_in_can_be_checked_and_downloaded(
    qtbot, engine, settings, tmp_path, hub
) -> None:
    hub.repos["someone/unlisted-llava"] = Repo(files=dict(hub.repos["org/tiny-llava"].files))
    view = make_view(qtbot, engine, settings, tmp_path, hub)
    view.set_devices([p.DeviceInfo(kind="cpu", name="cpu", total_memory=16 * pm.GIB)])
    qtbot.keyClicks(view.find_edit, "slow")  # words find catalogue models of any group
    assert list(catalogue_rows(view)) == ["org/slow-llava"]
    view.find_edit.setText("someone/unlisted-llava")
    assert list(catalogue_rows(view)) == ["someone/unlisted-llava"]
    assert view.catalogue_tree.currentItem().text(4) == "press Check fit"
    assert "not in VisionDesk's list" in view.details.text()
    with qtbot.waitSignal(view.jobs.plan_ready, timeout=120_000):
        view.check_button.click()
    text, verdict = catalogue_rows(view)["someone/unlisted-llava"]
    assert verdict == "fits" and text.endswith("(planned)")
    assert "image tokens per image" in view.details.text()
    with qtbot.waitSignal(view.jobs.installed_changed, timeout=120_000):
        view.download_button.click()
    assert "someone/unlisted-llava" in installed_models(view)
    view.find_edit.setText("nobody here")
    assert catalogue_rows(view) == {}
    assert view.details.text() == "Choose a model to see what it needs."


def test_cancel_pauses_a_download_and_resume_fetches_only_the_rest(
    qtbot, engine, settings, tmp_path, hub
) -> None:
    hub.repos["org/slow-llava"].bytes_per_second["extra.safetensors"] = 0.5 * MIB
    view = make_view(qtbot, engine, settings, tmp_path, hub)
    select_catalogue(view, "org/slow-llava")
    view.download_button.click()
    qtbot.waitUntil(lambda: hub.bytes_sent.get("extra.safetensors", 0) > 0, timeout=60_000)
    row = view.download_row("org/slow-llava")
    assert row is not None and row.button.text() == "Cancel"
    qtbot.waitUntil(lambda: 0 < row.bar.value() < 1000, timeout=30_000)
    assert " of " in row.text.text()
    row.button.click()
    qtbot.waitUntil(lambda: row.status == "paused", timeout=30_000)
    assert row.button.text() == "Resume"

    hub.repos["org/slow-llava"].bytes_per_second.clear()
    row.button.click()
    qtbot.waitUntil(lambda: row.status == "done", timeout=60_000)
    for name in hub.repos["org/slow-llava"].files:
        assert len(hub.gets(name)) == (2 if name == "extra.safetensors" else 1), name


def test_use_asks_for_consent_once_for_a_pickle_only_model(
    qtbot, engine, settings, tmp_path, tiny_model
) -> None:
    folder = tmp_path / "models" / "pickled"
    shutil.copytree(tiny_model("llava"), folder)
    for weights in folder.glob("*.safetensors"):
        weights.rename(folder / "pytorch_model.bin")
    view = make_view(qtbot, engine, settings, tmp_path)
    with qtbot.waitSignal(view.jobs.installed_changed, timeout=60_000):
        view.refresh()
    select_installed(view, str(folder))
    assert "needs your consent" in view.installed_tree.currentItem().text(3)

    def confirm() -> None:
        dialog = QApplication.activeModalWidget()
        dialog.trust.setChecked(True)
        dialog.allow.click()

    QTimer.singleShot(0, confirm)
    with qtbot.waitSignal(view.use_model_requested) as used:
        view.use_button.click()
    assert used.args == [str(folder)]
    assert view.consent.load_command("j", str(folder)).allow_pickle
    with qtbot.waitSignal(view.use_model_requested):  # remembered: no dialog this time
        view.use_button.click()


def test_import_copies_a_folder_into_the_managed_folder(
    qtbot, engine, settings, tmp_path, tiny_model
) -> None:
    view = make_view(qtbot, engine, settings, tmp_path)
    with qtbot.waitSignal(view.jobs.installed_changed, timeout=60_000):
        view.jobs.import_folder(str(tiny_model("qwen2_vl")), "my-qwen")
    target = tmp_path / "models" / "my-qwen"
    assert str(target) in installed_models(view)
    assert "Imported" in view.status_label.text()


def test_the_hub_token_is_kept_in_the_os_keyring_where_downloads_read_it(
    qtbot, engine, settings, tmp_path, monkeypatch
) -> None:
    import keyring
    from keyring.backend import KeyringBackend

    from engine.models.download import hub_token

    class MemoryKeyring(KeyringBackend):
        priority = 1  # type: ignore[assignment]

        def __init__(self) -> None:
            super().__init__()
            self.store: dict[tuple[str, str], str] = {}

        def get_password(self, service: str, username: str) -> str | None:
            return self.store.get((service, username))

        def set_password(self, service: str, username: str, password: str) -> None:
            self.store[(service, username)] = password

        def delete_password(self, service: str, username: str) -> None:
            self.store.pop((service, username), None)

    monkeypatch.setattr("keyring.core._keyring_backend", MemoryKeyring())
    monkeypatch.delenv("HF_TOKEN", raising=False)
    view = make_view(qtbot, engine, settings, tmp_path)
    assert view.set_hub_token("hf_abc")
    assert keyring.get_password("VisionDesk", "huggingface") == "hf_abc" == hub_token()
    assert all("hf_abc" not in str(settings.value(key)) for key in settings.allKeys())
    assert "keyring" in view.status_label.text()
    assert view.set_hub_token("")
    assert hub_token() is None


# --- start-up, layout, failures and what each offers ---------------------------------------------


def test_the_installed_list_comes_with_the_engine_and_includes_added_folders(
    qtbot, engine, settings, tmp_path, tiny_model
) -> None:
    from desktop.state import ModelCatalog

    added = tmp_path / "elsewhere" / "my-llava"  # added with the picker's "Add model folder…"
    shutil.copytree(tiny_model("llava"), added)
    ModelCatalog(settings).add_folder(added)
    view = ModelsView(engine, settings=settings, catalogue=local_catalogue(),
                      managed_root=tmp_path / "models", cache_dir=str(tmp_path / "hub"))  # fmt: skip
    qtbot.addWidget(view)  # never shown: the engine's readiness alone brings the list
    with qtbot.waitSignal(view.jobs.installed_changed, timeout=60_000):
        engine.send(p.GetStatus())  # what the window's client asks as soon as the engine is ready
    assert installed_models(view) == [str(added)]


def a_plan_with_advice(model: str) -> pm.MemoryPlan:
    gib = pm.GIB
    return pm.MemoryPlan(
        model=model, model_type="llava", quant="none", device="cuda", dtype="bfloat16",
        image_width=1536, image_height=1536, images=2, context_tokens=8192,
        params_total=7_000_000_000, params_vision=300_000_000, params_projector=20_000_000,
        params_language=6_680_000_000, params_quantized=6_500_000_000, weights_bytes=14 * gib,
        vision_bytes=gib, kv_cache_bytes=4 * gib, image_tokens_per_image=2304,
        sequence_tokens=12800, cross_attention_tokens=0, activation_bytes=2 * gib,
        allocated_bytes=20 * gib, overhead_bytes=gib, total_bytes=21 * gib,
        available_bytes=8 * gib, device_name="RTX test", verdict="does_not_fit",
        advice=[f"Advice number {n}: a lighter quantisation, fewer images or less context "
                "would bring the total under the memory of this GPU." for n in range(6)],
    )  # fmt: skip


def test_a_long_plan_scrolls_in_the_page_and_the_window_keeps_its_size(
    qtbot, engine, settings, tmp_path
) -> None:
    view = make_view(qtbot, engine, settings, tmp_path)
    view.resize(1000, 600)
    select_catalogue(view, "org/tiny-llava")
    view.jobs.plan_ready.emit("org/tiny-llava", a_plan_with_advice("org/tiny-llava"))
    qtbot.waitUntil(lambda: "Advice number 5" in view.details.text())
    view.resize(1000, 600)  # what the user asked for, again, now the plan is there
    QApplication.processEvents()
    assert view.size().height() == 600 and view.minimumSizeHint().height() <= 600
    assert view.details_scroll.verticalScrollBar().maximum() > 0  # the plan scrolls instead
    assert view.catalogue_tree.viewport().height() >= 100  # and the list keeps several rows


def test_a_gated_download_offers_the_token_dialog_and_then_tries_again(
    qtbot, engine, settings, tmp_path, tiny_model, monkeypatch
) -> None:
    import keyring

    from tests.engine.test_download import _memory_keyring

    _memory_keyring(monkeypatch)
    files = Repo.from_folder(tiny_model("llava")).files
    with HubServer({"org/gated": Repo(files=files, token="hf_good")}) as hub:
        view = make_view(qtbot, engine, settings, tmp_path, hub)
        view.find_edit.setText("org/gated")
        view.download_button.click()
        row = view.download_row("org/gated")
        assert row is not None
        qtbot.waitUntil(lambda: row.status == "failed", timeout=60_000)
        assert row.button.text() == "Enter token…" and "gated" in row.text.text()

        def enter_token() -> None:
            dialog = QApplication.activeModalWidget()
            assert isinstance(dialog, QInputDialog)
            dialog.setTextValue("hf_good")
            dialog.accept()

        downloads = len([c for c in engine.sent if isinstance(c, pm.DownloadModel)])
        QTimer.singleShot(0, enter_token)
        row.button.click()
        assert keyring.get_password("VisionDesk", "huggingface") == "hf_good"
        sent = [c for c in engine.sent if isinstance(c, pm.DownloadModel)]
        assert len(sent) == downloads + 1 and sent[-1].repo_id == "org/gated"
        assert row.status == "running" and row.button.text() == "Cancel"
        qtbot.waitUntil(lambda: row.status != "running", timeout=60_000)  # its job has ended


def test_a_failure_with_nothing_to_resume_offers_try_again(
    qtbot, engine, settings, tmp_path, hub
) -> None:
    view = make_view(qtbot, engine, settings, tmp_path, hub)
    view.find_edit.setText("org/nothing")
    view.download_button.click()
    row = view.download_row("org/nothing")
    assert row is not None
    qtbot.waitUntil(lambda: row.status == "failed", timeout=60_000)
    assert "not found" in row.text.text() and row.button.text() == "Try again"


@pytest.fixture
def silent_endpoint() -> Iterator[str]:
    """A server that accepts connections and never answers (a stalled proxy or mirror)."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    held: list[socket.socket] = []

    def accept() -> None:
        while True:
            try:
                held.append(server.accept()[0])
            except OSError:
                return

    threading.Thread(target=accept, daemon=True).start()
    yield f"http://127.0.0.1:{server.getsockname()[1]}"
    server.close()
    for connection in held:
        connection.close()


def test_a_download_from_a_hub_that_never_answers_says_so_and_cancels(
    qtbot, engine, settings, tmp_path, silent_endpoint
) -> None:
    view = make_view(qtbot, engine, settings, tmp_path)
    view.jobs.endpoint = silent_endpoint
    select_catalogue(view, "org/tiny-llava")
    view.download_button.click()
    row = view.download_row("org/tiny-llava")
    assert row is not None and "Contacting the Hub" in row.text.text()
    qtbot.waitUntil(
        lambda: "Contacting the Hub for org/tiny-llava" in row.text.text(), timeout=60_000
    )
    row.button.click()
    qtbot.waitUntil(lambda: row.status == "paused", timeout=15_000)  # before the Hub's time-out


def test_the_model_answering_is_not_deleted_from_the_installed_tab(
    qtbot, engine, settings, tmp_path, tiny_model
) -> None:
    folder = tmp_path / "models" / "demo"
    shutil.copytree(tiny_model("llava"), folder)
    view = make_view(qtbot, engine, settings, tmp_path)
    with qtbot.waitSignal(view.jobs.plan_ready, timeout=60_000):  # its verdict, asked on select
        select_installed(view, str(folder))
    tried: list[str | None] = []

    def delete_while_busy(event: p.Event) -> None:
        if isinstance(event, p.EngineStatus) and event.state == "busy" and not tried:
            tried.append(view.jobs.answering)
            view.delete_selected(confirm=False)

    deletes = [c for c in engine.sent if isinstance(c, pm.DeleteModel)]
    engine.event_received.connect(delete_while_busy)  # after the view's own handler
    chat = p.Chat(
        job_id="answering", model=str(folder), quant="none", device="cpu",
        messages=[p.ChatMessage(role="user", text="A long story, please.")],
        sampling=p.Sampling(max_new_tokens=32),
    )  # fmt: skip
    try:
        with qtbot.waitSignal(engine.event_received, timeout=120_000, check_params_cb=lambda e: (
            isinstance(e, p.Finished) and e.job_id == "answering"
        )):  # fmt: skip
            engine.send(chat)
    finally:
        engine.event_received.disconnect(delete_while_busy)
        engine.send(p.Unload(job_id="unload-demo"))
    assert tried == [str(folder)]
    assert [c for c in engine.sent if isinstance(c, pm.DeleteModel)] == deletes  # none sent
    assert "is answering right now" in view.status_label.text()
    assert folder.is_dir()

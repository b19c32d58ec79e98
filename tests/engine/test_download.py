"""Downloads through huggingface_hub against a local server that speaks the Hub's endpoints.

Progress, cancel, resume (after a cancel, a killed engine and a dropped connection), the free-
disk check before any byte, gated repos with a token from the environment or the keyring, and
the planner fetching only config files.
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from engine import protocol as p
from engine.core import Job
from engine.errors import EngineError, Unsupported
from engine.models import download as download_module
from engine.models.download import Cancelled, download, select_files
from engine.protocol.models import DownloadModel, ModelsErrorCode, PlanMemory
from tests.engine.harness import EngineHarness, job_id
from tests.engine.hub_server import HubServer, Repo

MIB = 1024 * 1024


@pytest.fixture(scope="module")
def tiny_files(tiny_model) -> dict[str, bytes]:
    return Repo.from_folder(tiny_model("llava")).files


def repo_with_shards(tiny_files: dict[str, bytes], **kwargs: object) -> Repo:
    """The tiny model plus two extra weight shards big enough to watch a transfer happen."""
    files = dict(tiny_files)
    files["extra-1.safetensors"] = os.urandom(2 * MIB)
    files["extra-2.safetensors"] = os.urandom(4 * MIB)
    return Repo(files=files, **kwargs)  # type: ignore[arg-type]


def command(hub: HubServer, cache: Path, repo_id: str = "org/tiny", **kwargs: object):
    return DownloadModel(
        job_id=job_id(),
        repo_id=repo_id,
        cache_dir=str(cache),
        endpoint=hub.endpoint,
        min_free_bytes=0,
        **kwargs,  # type: ignore[arg-type]
    )


def snapshot_bytes(path: str, name: str) -> bytes:
    return (Path(path) / name).read_bytes()


def test_a_download_reports_bytes_rate_and_eta_and_fills_the_standard_cache(
    tiny_files, tmp_path
) -> None:
    repo = repo_with_shards(tiny_files, bytes_per_second={"extra-2.safetensors": 8 * MIB})
    events: list[p.Event] = []
    job = Job("dl", "download_model", events.append)
    with HubServer({"org/tiny": repo}) as hub:
        from engine.capabilities.models_manager import run_download

        result = run_download(job, command(hub, tmp_path), runtime=None)  # type: ignore[arg-type]
    assert isinstance(result, dict)
    progress = [e for e in events if isinstance(e, p.Progress)]
    partial = [e.data["download"] for e in events if isinstance(e, p.PartialResult)]
    assert len(progress) >= 3 and all(e.stage == "download" for e in progress)
    assert progress[-1].current == progress[-1].total == sum(len(d) for d in repo.files.values())
    assert [e.current for e in progress] == sorted(e.current for e in progress)  # never backwards
    moving = [d for d in partial if 0 < d["bytes_done"] < d["bytes_total"]]
    assert moving and all(d["rate_bps"] > 0 and d["eta_s"] is not None for d in moving)
    assert "MB/s" in progress[-1].message or "kB/s" in progress[-1].message
    # The standard cache layout: found offline by huggingface_hub (and so by the engine).
    from huggingface_hub import snapshot_download

    snapshot = snapshot_download("org/tiny", cache_dir=tmp_path, local_files_only=True)
    assert snapshot == result["path"]
    for name, data in repo.files.items():
        assert snapshot_bytes(snapshot, name) == data


def test_cancel_stops_the_transfer_and_the_next_download_fetches_only_what_is_missing(
    tiny_files, tmp_path
) -> None:
    slow = 1 * MIB  # the 4 MiB shard takes 4 s: plenty of time to cancel in the middle
    repo = repo_with_shards(tiny_files, bytes_per_second={"extra-2.safetensors": slow})
    seen: list[dict] = []
    cancel = threading.Event()

    def on_progress(data: dict) -> None:
        seen.append(data)
        if data["file"] == "extra-2.safetensors" and data["bytes_done"] > 0:
            started = [d for d in seen if d["file"] == "extra-2.safetensors"]
            if len(started) > 1:
                cancel.set()

    with HubServer({"org/tiny": repo}) as hub:
        began = time.monotonic()
        with pytest.raises(Cancelled):
            download(command(hub, tmp_path), on_progress, cancel.is_set)
        assert time.monotonic() - began < 4, "cancel did not stop the slow file"
        assert hub.bytes_sent["extra-2.safetensors"] < 4 * MIB
        blobs = tmp_path / "models--org--tiny" / "blobs"
        assert not list(blobs.glob("*.incomplete")), "a cancelled file leaves no partial file"
        assert len(hub.gets("extra-1.safetensors")) == 1

        repo.bytes_per_second.clear()
        result = download(command(hub, tmp_path), lambda _d: None, lambda: False)
    assert result["files_skipped"] == len(repo.files) - 1
    for name in repo.files:
        expected = 2 if name == "extra-2.safetensors" else 1
        assert len(hub.gets(name)) == expected, name
    assert (
        snapshot_bytes(result["path"], "extra-2.safetensors") == repo.files["extra-2.safetensors"]
    )


def test_a_dropped_connection_resumes_the_file_with_a_range_request(tiny_files, tmp_path) -> None:
    repo = repo_with_shards(tiny_files, cut_first_transfer={"extra-2.safetensors"})
    with HubServer({"org/tiny": repo}) as hub:
        result = download(command(hub, tmp_path), lambda _d: None, lambda: False)
        transfers = hub.gets("extra-2.safetensors")
    assert [r.range is not None for r in transfers] == [False, True]
    start = int(transfers[1].range.removeprefix("bytes=").rstrip("-"))
    assert 0 < start <= 2 * MIB  # what arrived before the cut (in whole chunks) is kept
    assert hub.bytes_sent["extra-2.safetensors"] == 2 * MIB + (4 * MIB - start)
    assert (
        snapshot_bytes(result["path"], "extra-2.safetensors") == repo.files["extra-2.safetensors"]
    )


def test_a_download_interrupted_by_a_killed_engine_resumes_without_refetching_finished_files(
    tiny_files, tmp_path, monkeypatch
) -> None:
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))  # the engines never see ~/.cache
    repo = repo_with_shards(tiny_files, bytes_per_second={"extra-2.safetensors": 0.5 * MIB})
    with HubServer({"org/tiny": repo}) as hub:
        engine = EngineHarness()
        try:
            first = command(hub, tmp_path)
            engine.send(first)
            for event in engine.job_events(first.job_id, timeout=120):
                if isinstance(event, p.PartialResult):
                    if event.data["download"]["file"] == "extra-2.safetensors":
                        break
                assert not isinstance(event, p.Finished), event
            deadline = time.monotonic() + 30
            while hub.bytes_sent.get("extra-2.safetensors", 0) == 0:  # mid-transfer
                assert time.monotonic() < deadline, "the big file never started"
                time.sleep(0.05)
        finally:
            engine.proc.kill()  # kill -9: no cleanup, no Finished
            engine.proc.wait()
        finished_before = {name for name in repo.files if name != "extra-2.safetensors"}
        assert all(len(hub.gets(name)) == 1 for name in finished_before)

        repo.bytes_per_second.clear()
        engine = EngineHarness()
        try:
            second = command(hub, tmp_path)
            finished, _ = engine.run(second, timeout=120)
        finally:
            engine.close()
    assert finished.reason == "done", finished.message
    assert finished.result is not None and finished.result["files_skipped"] == len(finished_before)
    assert all(len(hub.gets(name)) == 1 for name in finished_before)
    assert len(hub.gets("extra-2.safetensors")) == 2
    assert not list(tmp_path.rglob("*.incomplete")), "the killed transfer's partial file is gone"


def test_not_enough_disk_is_refused_before_any_byte_is_written(tiny_files, tmp_path) -> None:
    free = __import__("shutil").disk_usage(tmp_path).free
    repo = Repo(files=dict(tiny_files), reported_sizes={"model.safetensors": free * 2})
    with HubServer({"org/tiny": repo}) as hub:
        with pytest.raises(EngineError) as raised:
            download(command(hub, tmp_path / "cache"), lambda _d: None, lambda: False)
        assert raised.value.code == ModelsErrorCode.NOT_ENOUGH_DISK
        assert "Not enough disk space" in raised.value.message
        assert hub.resolve_gets() == [] and [r.method for r in hub.requests] == ["GET"]
    assert not (tmp_path / "cache").exists() or not any((tmp_path / "cache").rglob("*.*"))


def test_the_minimum_free_space_is_kept_spare(tiny_files, tmp_path) -> None:
    free = __import__("shutil").disk_usage(tmp_path).free
    with HubServer({"org/tiny": Repo(files=dict(tiny_files))}) as hub:
        request = DownloadModel(
            job_id="x", repo_id="org/tiny", cache_dir=str(tmp_path), endpoint=hub.endpoint,
            min_free_bytes=free,
        )  # fmt: skip
        with pytest.raises(EngineError, match="keeping"):
            download(request, lambda _d: None, lambda: False)
        assert hub.resolve_gets() == []


def test_a_gated_repo_needs_a_token_and_takes_it_from_the_environment(
    tiny_files, tmp_path, monkeypatch
) -> None:
    monkeypatch.delenv("HF_TOKEN", raising=False)
    _no_keyring(monkeypatch)
    repo = Repo(files=dict(tiny_files), token="hf_secret")
    with HubServer({"org/gated": repo}) as hub:
        with pytest.raises(EngineError) as raised:
            download(command(hub, tmp_path, "org/gated"), lambda _d: None, lambda: False)
        assert raised.value.code == ModelsErrorCode.GATED
        assert "licence" in raised.value.message and "token" in raised.value.message
        monkeypatch.setenv("HF_TOKEN", "hf_secret")
        result = download(command(hub, tmp_path, "org/gated"), lambda _d: None, lambda: False)
    assert result["files"] == len(repo.files)


def test_a_gated_repo_takes_the_token_from_the_os_keyring(
    tiny_files, tmp_path, monkeypatch
) -> None:
    import keyring

    monkeypatch.delenv("HF_TOKEN", raising=False)
    store = _memory_keyring(monkeypatch)
    keyring.set_password("VisionDesk", "huggingface", "hf_from_keyring")
    repo = Repo(files=dict(tiny_files), token="hf_from_keyring")
    with HubServer({"org/gated": repo}) as hub:
        result = download(command(hub, tmp_path, "org/gated"), lambda _d: None, lambda: False)
        assert {r.authorization for r in hub.resolve_gets()} == {"Bearer hf_from_keyring"}
    assert result["files"] == len(repo.files)
    assert keyring.get_keyring() is store


def test_an_unknown_repo_is_model_not_found(tmp_path) -> None:
    with HubServer({}) as hub:
        with pytest.raises(EngineError) as raised:
            download(command(hub, tmp_path, "org/nothing"), lambda _d: None, lambda: False)
    assert raised.value.code == p.ErrorCode.MODEL_NOT_FOUND


def test_the_default_selection_skips_pickles_next_to_safetensors_and_other_formats() -> None:
    files = {
        "config.json": 10,
        "model.safetensors": 100,
        "pytorch_model.bin": 100,
        "original/consolidated.pth": 100,
        "model.gguf": 100,
        "onnx/model.onnx": 100,
        "tokenizer.json": 10,
    }
    assert sorted(select_files(files, None)) == [
        "config.json",
        "model.safetensors",
        "tokenizer.json",
    ]
    pickle_only = {"config.json": 10, "pytorch_model.bin": 100}
    assert sorted(select_files(pickle_only, None)) == ["config.json", "pytorch_model.bin"]
    assert sorted(select_files(files, ["*.json"])) == ["config.json", "tokenizer.json"]


def test_the_planner_fetches_only_config_and_processor_files_from_the_hub(
    tiny_files, tmp_path, monkeypatch
) -> None:
    from engine.models.planner import plan_memory

    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    import huggingface_hub.constants as hub_constants

    monkeypatch.setattr(hub_constants, "HF_HUB_CACHE", str(tmp_path))
    with HubServer({"org/tiny": Repo(files=dict(tiny_files))}) as hub:
        plan = plan_memory(
            PlanMemory(
                job_id="x", model="org/tiny", fetch_config=True, endpoint=hub.endpoint,
                device="cpu", image_width=64, image_height=48,
            ),
            [p.DeviceInfo(kind="cpu", name="cpu", total_memory=8 * 1024**3)],
        )  # fmt: skip
        fetched = {r.path.rsplit("/", 1)[-1] for r in hub.resolve_gets()}
    assert plan.params_total > 0 and plan.image_tokens_per_image > 0
    assert "config.json" in fetched and not any(name.endswith(".safetensors") for name in fetched)
    assert "no weights are present" in " ".join(plan.notes)


def _no_keyring(monkeypatch) -> None:
    """No OS keyring (as on a headless machine): the token must come from elsewhere."""
    from keyring.backends import fail

    monkeypatch.setattr("keyring.core._keyring_backend", fail.Keyring())


def _memory_keyring(monkeypatch):
    """A keyring backend through keyring's own plug-in API, restored after the test."""
    from keyring.backend import KeyringBackend

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

    store = MemoryKeyring()
    monkeypatch.setattr("keyring.core._keyring_backend", store)
    return store


# --- a Hub that never answers, a repo VisionDesk cannot use, a rejected token, orphans ---------


@pytest.fixture
def silent_hub() -> Iterator[tuple[str, threading.Event]]:
    """A server that accepts connections and never answers (a stalled proxy or mirror), and
    an event set once a request has reached it."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    reached = threading.Event()
    held: list[socket.socket] = []

    def accept() -> None:
        while True:
            try:
                connection, _ = server.accept()
            except OSError:
                return
            held.append(connection)  # read nothing, say nothing
            reached.set()

    threading.Thread(target=accept, daemon=True).start()
    yield f"http://127.0.0.1:{server.getsockname()[1]}", reached
    server.close()
    for connection in held:
        connection.close()


def test_a_hub_that_never_answers_is_cancelled_at_once(silent_hub, tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(download_module, "REPO_INFO_TIMEOUT_S", 3600.0)  # only cancel ends it
    endpoint, reached = silent_hub
    said: list[str] = []
    request = DownloadModel(job_id="x", repo_id="org/tiny", cache_dir=str(tmp_path),
                            endpoint=endpoint)  # fmt: skip

    def cancelled() -> bool:
        return reached.is_set()  # the user presses Cancel while the Hub says nothing

    with pytest.raises(Cancelled):
        download(request, lambda _d: None, cancelled, said.append)
    assert said == ["Contacting the Hub for org/tiny…"]
    assert not any(tmp_path.iterdir())


def test_a_hub_that_never_answers_times_out_with_one_sentence(
    silent_hub, tmp_path, monkeypatch
) -> None:
    monkeypatch.setattr(download_module, "REPO_INFO_TIMEOUT_S", 0.5)
    endpoint, _ = silent_hub
    request = DownloadModel(job_id="x", repo_id="org/tiny", cache_dir=str(tmp_path),
                            endpoint=endpoint)  # fmt: skip
    with pytest.raises(EngineError) as raised:
        download(request, lambda _d: None, lambda: False)
    assert raised.value.code == ModelsErrorCode.NETWORK
    assert "did not answer" in raised.value.message and "\n" not in raised.value.message


def test_check_fit_against_a_hub_that_never_answers_can_be_cancelled(
    silent_hub, monkeypatch
) -> None:
    from engine.capabilities.models_manager import run_plan

    monkeypatch.setattr(download_module, "REPO_INFO_TIMEOUT_S", 3600.0)
    endpoint, reached = silent_hub
    job = Job("plan", "plan_memory", lambda _event: None)
    threading.Thread(target=lambda: reached.wait(60) and job.cancel(), daemon=True).start()

    class Devices:
        def devices(self) -> list[p.DeviceInfo]:
            return [p.DeviceInfo(kind="cpu", name="cpu", total_memory=8 * 1024**3)]

    command = PlanMemory(job_id="plan", model="org/not-here", fetch_config=True, endpoint=endpoint)
    outcome = run_plan(job, command, Devices())  # type: ignore[arg-type]
    assert outcome == ("cancelled", {"model": "org/not-here"})


def text_model_files() -> dict[str, bytes]:
    config = {"model_type": "gpt2", "architectures": ["GPT2LMHeadModel"]}
    return {
        "config.json": json.dumps(config).encode(),
        "model.safetensors": os.urandom(MIB),
        "tokenizer.json": b"{}",
    }


def test_a_repo_that_is_not_an_image_model_is_refused_before_its_weights(tmp_path) -> None:
    repos = {
        "org/text-only": Repo(files=text_model_files()),
        "org/no-config": Repo(files={"model.gguf": b"x", "README.md": b"# weights elsewhere"}),
    }
    with HubServer(repos) as hub:
        with pytest.raises(Unsupported) as raised:
            download(command(hub, tmp_path, "org/text-only"), lambda _d: None, lambda: False)
        assert "is a 'gpt2' model, not an image-text-to-text" in raised.value.message
        assert [r.path.rsplit("/", 1)[-1] for r in hub.resolve_gets()] == ["config.json"]
        with pytest.raises(Unsupported, match="has no config.json"):
            download(command(hub, tmp_path, "org/no-config"), lambda _d: None, lambda: False)
        assert len(hub.resolve_gets()) == 1
    assert not (tmp_path / "models--org--text-only").exists(), "nothing of it stays behind"
    assert not (tmp_path / "models--org--no-config").exists()


def test_a_rejected_token_is_left_out_for_a_public_repo_and_the_user_is_told(
    tiny_files, tmp_path, monkeypatch
) -> None:
    monkeypatch.setenv("HF_TOKEN", "hf_revoked")
    warned: list[str] = []
    with HubServer({"org/tiny": Repo(files=dict(tiny_files))}, tokens={"hf_good"}) as hub:
        result = download(command(hub, tmp_path), lambda _d: None, lambda: False,
                          warn=warned.append)  # fmt: skip
        assert {r.authorization for r in hub.resolve_gets()} == {None}
    assert result["files"] == len(tiny_files)
    assert len(warned) == 1 and "token in HF_TOKEN was rejected" in warned[0]


def test_a_rejected_token_from_the_keyring_is_named_with_how_to_replace_it(
    tiny_files, tmp_path, monkeypatch
) -> None:
    import keyring

    monkeypatch.delenv("HF_TOKEN", raising=False)
    _memory_keyring(monkeypatch)
    keyring.set_password("VisionDesk", "huggingface", "hf_mistyped")
    repo = Repo(files=dict(tiny_files), token="hf_good")  # gated: without a token, no access
    with HubServer({"org/gated": repo}, tokens={"hf_good"}) as hub:
        with pytest.raises(EngineError) as raised:
            download(command(hub, tmp_path, "org/gated"), lambda _d: None, lambda: False)
        assert hub.resolve_gets() == []
    message = raised.value.message
    assert raised.value.code == ModelsErrorCode.TOKEN_REJECTED
    assert "token that VisionDesk keeps in the system keyring was rejected" in message
    assert "Hugging Face token…" in message and "\n" not in message


def test_partial_files_of_no_live_transfer_are_removed_and_a_live_one_is_kept(
    tiny_files, tmp_path
) -> None:
    from filelock import FileLock

    with HubServer({"org/tiny": Repo(files=dict(tiny_files))}) as hub:
        download(command(hub, tmp_path), lambda _d: None, lambda: False)
        blobs = tmp_path / "models--org--tiny" / "blobs"
        orphan = blobs / f"{'1' * 64}.0badf00d.incomplete"  # a killed engine's
        live = blobs / f"{'2' * 64}.c0ffee00.incomplete"  # another process is writing it
        orphan.write_bytes(b"x" * 1000)
        live.write_bytes(b"y" * 1000)
        with FileLock(str(tmp_path / ".locks" / "models--org--tiny" / f"{'2' * 64}.lock")):
            download(command(hub, tmp_path), lambda _d: None, lambda: False)
            assert live.exists()
    assert not orphan.exists()


def test_the_disk_sentence_counts_large_sizes_in_tb_and_keeps_1_gb_spare(
    tiny_files, tmp_path
) -> None:
    repo = Repo(files=dict(tiny_files), reported_sizes={"model.safetensors": 50 * 10**12})
    with HubServer({"org/huge": repo}) as hub:
        request = DownloadModel(job_id="x", repo_id="org/huge", cache_dir=str(tmp_path),
                                endpoint=hub.endpoint)  # fmt: skip
        with pytest.raises(EngineError) as raised:
            download(request, lambda _d: None, lambda: False)
    assert raised.value.code == ModelsErrorCode.NOT_ENOUGH_DISK
    assert "needs 50.00 TB" in raised.value.message
    assert "(keeping 1.00 GB spare)" in raised.value.message

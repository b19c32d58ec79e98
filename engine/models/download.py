"""Downloads from the Hugging Face Hub into its standard cache, as a job: progress, cancel, resume.

Files come one by one through ``huggingface_hub.hf_hub_download`` at the commit the repo info
names, so every file of a download belongs to one revision. A file already in the cache is
skipped, which is how a cancelled or interrupted download resumes; a file cut off mid-way by a
network error is resumed by huggingface_hub with an HTTP Range request, while a file whose
download was cancelled or killed starts again (huggingface_hub keeps no partial files, and the
ones a killed engine leaves are removed). Before the first byte, the repo's file sizes are
compared with the free space of the cache's disk; a full download then fetches ``config.json``
first, so a repo VisionDesk cannot use is refused before its weights. The repo-info request is
bounded in time and can be cancelled: a stalled proxy or mirror may accept the connection and
never answer.
"""

from __future__ import annotations

import fnmatch
import json
import logging
import os
import shutil
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from engine.errors import EngineError, ModelNotFound, Unsupported
from engine.protocol.models import (
    HUB_TOKEN_SERVICE,
    HUB_TOKEN_USER,
    DownloadModel,
    ModelsErrorCode,
    format_bytes,
)

log = logging.getLogger(__name__)

CHUNK_BYTES = 1024 * 1024  # progress and cancel are checked once per chunk
PROGRESS_INTERVAL_S = 0.25
# The Hub answers repo info within seconds; a proxy or mirror that accepted the connection and
# then stalled would otherwise be waited on for ever.
REPO_INFO_TIMEOUT_S = 20.0
CANCEL_POLL_S = 0.1  # how often the wait for a request in flight looks at the cancel flag
# Weights in formats VisionDesk does not load, and originals some repos add next to them.
SKIPPED_FORMATS = (
    "*.h5", "*.msgpack", "*.onnx", "*.onnx_data", "*.gguf", "*.ot", "*.tflite", "*.mlmodel",
    "original/*", "onnx/*", "openvino/*", "coreml/*", "flax_model*", "tf_model*",
)  # fmt: skip
PICKLE_PATTERNS = ("*.bin", "*.pt", "*.pth", "*.ckpt", "*.pkl")
# What the planner needs: configs, processor and tokenizer files, chat templates; no weights.
SMALL_FILES = ("*.json", "*.jinja", "*.txt", "*.model", "*.tiktoken", "tokenizer*")

T = TypeVar("T")


class Cancelled(Exception):
    """Raised from the progress callback to stop huggingface_hub between two chunks."""


ProgressSink = Callable[[dict[str, Any]], None]


# --- the token ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class HubToken:
    """The token requests carry, and where it came from (named when the Hub rejects it)."""

    value: str | bool | None  # None: huggingface_hub's own (`hf auth login`); False: none
    source: str  # "HF_TOKEN" | "keyring" | "login" | "" (none)


NO_TOKEN = HubToken(False, "")


def hub_token() -> str | None:
    """``HF_TOKEN``, else the token VisionDesk keeps in the OS keyring, else None (then
    huggingface_hub uses a token saved by ``hf auth login``, if any)."""
    value = find_token().value
    return value if isinstance(value, str) else None


def find_token() -> HubToken:
    """The token downloads send: ``HF_TOKEN``, the keyring's, or huggingface_hub's login."""
    token = os.environ.get("HF_TOKEN")
    if token:
        return HubToken(token, "HF_TOKEN")
    try:
        import keyring

        token = keyring.get_password(HUB_TOKEN_SERVICE, HUB_TOKEN_USER)
    except Exception as exc:  # no keyring backend on this system: not an error, just no token
        log.info("no token from the keyring: %s", exc)
        token = None
    if token:
        return HubToken(token, "keyring")
    from huggingface_hub import get_token

    return HubToken(None, "login") if get_token() else NO_TOKEN


def token_rejected(token: HubToken) -> EngineError:
    """One sentence: which token the Hub refused, where it came from, how to replace it."""
    where, fix = {
        "HF_TOKEN": ("in HF_TOKEN", "set HF_TOKEN to a valid token, or unset it"),
        "keyring": (
            "that VisionDesk keeps in the system keyring",
            "enter a new one with Models → Installed → Hugging Face token… (empty removes it), "
            f"or remove it with `keyring del {HUB_TOKEN_SERVICE} {HUB_TOKEN_USER}`",
        ),
        "login": (
            "saved by `hf auth login`",
            "log in again with `hf auth login`, or log out with `hf auth logout`",
        ),
    }.get(token.source, ("sent", "use a valid token"))
    return EngineError(
        f"The Hugging Face token {where} was rejected by the Hub (wrong, expired or revoked): "
        f"{fix}.",
        ModelsErrorCode.TOKEN_REJECTED,
    )


# --- choosing files -----------------------------------------------------------------------------


def select_files(
    files: dict[str, int | None], allow_patterns: Iterable[str] | None
) -> dict[str, int]:
    """The files to fetch: the given patterns, or weights + configs + tokenizer by default;
    pickle checkpoints only when the repo has no safetensors at all."""
    if allow_patterns is not None:
        patterns = list(allow_patterns)
        return {
            name: size or 0
            for name, size in files.items()
            if any(fnmatch.fnmatch(name, pattern) for pattern in patterns)
        }
    has_safetensors = any(name.endswith(".safetensors") for name in files)
    skipped = SKIPPED_FORMATS + (PICKLE_PATTERNS if has_safetensors else ())
    return {
        name: size or 0
        for name, size in files.items()
        if not any(fnmatch.fnmatch(name, pattern) for pattern in skipped)
    }


def check_disk(folder: Path, needed: int, min_free: int) -> int:
    """Refuse (before anything is written) when ``needed`` bytes would leave < ``min_free``."""
    probe = folder
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    free = shutil.disk_usage(probe).free
    if needed and free - needed < min_free:
        raise EngineError(
            f"Not enough disk space: the download needs {format_bytes(needed)} and "
            f"{format_bytes(free)} is free on the disk of {folder} (keeping "
            f"{format_bytes(min_free)} spare). Free some space or choose another cache folder.",
            ModelsErrorCode.NOT_ENOUGH_DISK,
        )
    return free


class Tracker:
    """Bytes, rate and ETA over a whole download; hands huggingface_hub a progress-bar class."""

    def __init__(
        self,
        total: int,
        files_total: int,
        emit: ProgressSink,
        cancelled: Callable[[], bool],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.total = total
        self.files_total = files_total
        self.files_done = 0
        self.done = 0
        self.file = ""
        self._emit = emit
        self._cancelled = cancelled
        self._clock = clock
        self._started = clock()
        self._last_emit = 0.0

    def bar_class(self) -> type:
        tracker = self

        class Bar:
            """The subset of tqdm that huggingface_hub calls while it streams a file."""

            def __init__(self, *args: Any, **kwargs: Any) -> None:
                pass

            def update(self, n: float | None = 1) -> None:
                tracker.add(int(n or 0))

            def update_transfer(self, n: float | None = 1) -> None:
                pass  # the same bytes as update(); counted once

            def set_postfix_str(self, *args: Any, **kwargs: Any) -> None:
                pass

            def close(self) -> None:
                pass

            def __enter__(self) -> Bar:
                return self

            def __exit__(self, *exc: object) -> None:
                return None

        return Bar

    def add(self, n: int) -> None:
        self.done += n  # negative when huggingface_hub restarts a file whose resume failed
        if self._cancelled():
            raise Cancelled
        self.report()

    def start_file(self, name: str) -> None:
        self.file = name
        self.report(force=True)

    def finish_file(self) -> None:
        self.files_done += 1
        self.report(force=True)

    def report(self, force: bool = False) -> None:
        now = self._clock()
        if not force and now - self._last_emit < PROGRESS_INTERVAL_S:
            return
        self._last_emit = now
        elapsed = max(now - self._started, 1e-6)
        rate = self.done / elapsed
        remaining = max(self.total - self.done, 0)
        self._emit(
            {
                "bytes_done": self.done,
                "bytes_total": self.total,
                "rate_bps": rate,
                "eta_s": remaining / rate if rate > 0 else None,
                "file": self.file,
                "files_done": self.files_done,
                "files_total": self.files_total,
            }
        )


def describe_progress(data: dict[str, Any]) -> str:
    """'3 of 7 files · 1.2 GB of 4.8 GB · 35 MB/s · about 2 min left'."""
    parts = [
        f"{data['files_done']} of {data['files_total']} files",
        f"{format_bytes(data['bytes_done'])} of {format_bytes(data['bytes_total'])}",
    ]
    if data.get("rate_bps"):
        parts.append(f"{format_bytes(int(data['rate_bps']))}/s")
    eta = data.get("eta_s")
    if eta is not None:
        parts.append(f"about {eta / 60:.0f} min left" if eta >= 90 else f"about {eta:.0f} s left")
    return " · ".join(parts)


# --- downloading --------------------------------------------------------------------------------


def download(
    command: DownloadModel,
    emit: ProgressSink,
    cancelled: Callable[[], bool],
    say: Callable[[str], None] = lambda _message: None,
    warn: Callable[[str], None] = lambda _message: None,
) -> dict[str, Any]:
    """Fetch the repo's selected files into the cache; raises ``Cancelled`` when stopped.

    ``say`` hears what happens before the first byte (contacting the Hub); ``warn`` what the
    user should know although the download goes on (a token the Hub rejected)."""
    from huggingface_hub import constants

    cache_dir = Path(command.cache_dir or constants.HF_HUB_CACHE)
    storage = _storage_folder(cache_dir, command.repo_id)
    existed = storage.exists()
    say(f"Contacting the Hub for {command.repo_id}…")
    commit, files, token = _repo_files(command, cancelled, warn)
    chosen = select_files(files, command.allow_patterns)
    if not chosen:
        raise ModelNotFound(f"{command.repo_id} has no files that VisionDesk can use.")
    # A whole model must be one VisionDesk lists (and so can delete); patterns fetch anything.
    check = command.allow_patterns is None
    if check and "config.json" not in chosen:
        raise Unsupported(
            f"{command.repo_id} has no config.json, so it is not a transformers model that "
            "VisionDesk can use; nothing was downloaded."
        )
    fetch = Fetch(command.repo_id, commit, cache_dir, command.endpoint, token)
    cached = {name for name in chosen if fetch.cached_path(name) is not None}
    needed = sum(size for name, size in chosen.items() if name not in cached)
    remove_orphan_partials(cache_dir, command.repo_id)  # their space counts as free
    check_disk(cache_dir, needed, command.min_free_bytes)
    tracker = Tracker(needed, len(chosen), emit, cancelled)
    tracker.files_done = len(cached)
    try:
        if check and "config.json" in cached:
            refuse_unusable(command.repo_id, fetch.cached_path("config.json"))
        # config.json first, so that a repo VisionDesk cannot use is refused before its weights.
        for name in sorted(chosen, key=lambda n: (n != "config.json", chosen[n], n)):
            if name in cached:
                continue
            if cancelled():
                raise Cancelled
            tracker.start_file(name)
            path = fetch.file(name, tracker)
            tracker.finish_file()
            if check and name == "config.json":
                refuse_unusable(command.repo_id, path)
    except Unsupported:
        if not existed:  # nothing of a refused repo stays behind
            shutil.rmtree(storage, ignore_errors=True)
            shutil.rmtree(cache_dir / ".locks" / storage.name, ignore_errors=True)
        raise
    snapshot = _write_ref(cache_dir, command.repo_id, command.revision, commit)
    remove_orphan_partials(cache_dir, command.repo_id)  # and any a transfer left meanwhile
    return {
        "repo_id": command.repo_id,
        "revision": commit,
        "path": str(snapshot),
        "bytes_downloaded": tracker.done,
        "bytes_total": sum(chosen.values()),
        "files": len(chosen),
        "files_skipped": len(cached),
        "pickle_only": not any(name.endswith(".safetensors") for name in chosen)
        and any(fnmatch.fnmatch(name, p) for name in chosen for p in PICKLE_PATTERNS),
    }


def refuse_unusable(repo_id: str, config_path: Path | None) -> None:
    """Raise ``Unsupported`` unless the config is of a model VisionDesk lists and runs."""
    from engine.models.installed import check_usable

    try:
        config = json.loads(Path(str(config_path)).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise Unsupported(f"{repo_id}: its config.json cannot be read ({exc}).") from exc
    if not isinstance(config, dict):
        raise Unsupported(f"{repo_id}: its config.json is not a model configuration.")
    check_usable(repo_id, config, "it was not downloaded")


def fetch_small_files(
    repo_id: str,
    endpoint: str | None = None,
    cache_dir: str | None = None,
    cancelled: Callable[[], bool] = lambda: False,
) -> Path:
    """Only the config, processor and tokenizer files of a repo (a few MB), for the planner."""
    command = DownloadModel(
        job_id="fetch-config",
        repo_id=repo_id,
        allow_patterns=list(SMALL_FILES),
        cache_dir=cache_dir,
        endpoint=endpoint,
        min_free_bytes=0,
    )
    result = download(command, lambda _data: None, cancelled)
    return Path(result["path"])


# --- huggingface_hub ----------------------------------------------------------------------------


def _repo_files(
    command: DownloadModel, cancelled: Callable[[], bool], warn: Callable[[str], None]
) -> tuple[str, dict[str, int | None], HubToken]:
    """The commit, the files and their sizes, and the token to fetch the files with."""
    repo_id = command.repo_id
    token = find_token()
    try:
        info = _model_info(command, token, cancelled)
    except Cancelled:
        raise
    except Exception as exc:
        if not _is_token_rejected(exc, token):
            raise _hub_error(exc, repo_id, token) from exc
        # Every request carries the token, so a bad one breaks public repos too: they need none.
        try:
            info = _model_info(command, NO_TOKEN, cancelled)
        except Cancelled:
            raise
        except Exception as retry_exc:
            if _is_network_error(retry_exc):
                raise _hub_error(retry_exc, repo_id, NO_TOKEN) from retry_exc
            raise token_rejected(token) from exc
        log.warning("the Hugging Face token (%s) was rejected; %s is public", token.source, repo_id)
        warn(f"{token_rejected(token).message} {repo_id} is public, so it is fetched without one.")
        token = NO_TOKEN
    if not info.sha:
        raise EngineError(
            f"The Hub gave no revision for {repo_id}.", ModelsErrorCode.NETWORK
        )  # pragma: no cover - the Hub always sends one
    files = {sibling.rfilename: sibling.size for sibling in info.siblings or []}
    return info.sha, files, token


def _model_info(command: DownloadModel, token: HubToken, cancelled: Callable[[], bool]) -> Any:
    from huggingface_hub import HfApi

    api = HfApi(endpoint=command.endpoint, token=token.value)
    return _cancellable(
        lambda: api.model_info(
            command.repo_id,
            revision=command.revision,
            files_metadata=True,
            timeout=REPO_INFO_TIMEOUT_S,
        ),
        cancelled,
    )


def _cancellable(call: Callable[[], T], cancelled: Callable[[], bool]) -> T:
    """Run a blocking request on its own thread, so that a cancel ends the wait at once (the
    request itself ends at its timeout, unheard)."""
    outcome: dict[str, Any] = {}
    done = threading.Event()

    def run() -> None:
        try:
            outcome["value"] = call()
        except BaseException as exc:  # handed over to the waiting thread
            outcome["error"] = exc
        finally:
            done.set()

    threading.Thread(target=run, name="hub-request", daemon=True).start()
    while not done.wait(CANCEL_POLL_S):
        if cancelled():
            raise Cancelled
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]


@dataclass(frozen=True)
class Fetch:
    """Where the files of one download come from, at which commit, with which token."""

    repo_id: str
    commit: str
    cache_dir: Path
    endpoint: str | None
    token: HubToken

    def cached_path(self, name: str) -> Path | None:
        from huggingface_hub import try_to_load_from_cache

        found = try_to_load_from_cache(
            self.repo_id, name, cache_dir=self.cache_dir, revision=self.commit
        )
        return Path(found) if isinstance(found, str) else None

    def file(self, name: str, tracker: Tracker) -> Path:
        from huggingface_hub import constants, hf_hub_download

        # Plain HTTP (not the Xet protocol): its chunks pass through our progress callback, so
        # progress and cancel work the same for every repo. Small chunks keep cancel prompt.
        constants.HF_HUB_DISABLE_XET = True
        constants.DOWNLOAD_CHUNK_SIZE = CHUNK_BYTES
        try:
            path = hf_hub_download(
                self.repo_id,
                name,
                revision=self.commit,
                cache_dir=self.cache_dir,
                endpoint=self.endpoint,
                token=self.token.value,
                tqdm_class=tracker.bar_class(),  # duck-typed: only update() and close() are used
            )
        except Cancelled:
            raise
        except Exception as exc:
            raise _hub_error(exc, self.repo_id, self.token) from exc
        return Path(path)


def _is_token_rejected(exc: BaseException, token: HubToken) -> bool:
    """A 401 that is not about the repo (gated, private or missing): the token itself is bad."""
    from huggingface_hub.errors import GatedRepoError, HfHubHTTPError, RepositoryNotFoundError

    if token.value is False or not isinstance(exc, HfHubHTTPError):
        return False
    if isinstance(exc, (GatedRepoError, RepositoryNotFoundError)):
        return False
    return getattr(exc.response, "status_code", None) == 401


def _hub_error(exc: Exception, repo_id: str, token: HubToken = NO_TOKEN) -> EngineError:
    from huggingface_hub.errors import (
        GatedRepoError,
        HfHubHTTPError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    if isinstance(exc, EngineError):
        return exc
    if _is_token_rejected(exc, token):
        return token_rejected(token)
    if isinstance(exc, GatedRepoError):
        return EngineError(
            f"{repo_id} is gated: accept its licence on its Hugging Face page, then add your "
            "Hugging Face token in VisionDesk (it is kept in the system keyring) or set HF_TOKEN.",
            ModelsErrorCode.GATED,
        )
    if isinstance(exc, RevisionNotFoundError):
        return ModelNotFound(f"{repo_id}: that revision does not exist on the Hub.")
    if isinstance(exc, RepositoryNotFoundError):
        return ModelNotFound(
            f"{repo_id} was not found on the Hub (or it is private and no token was given)."
        )
    if _is_network_error(exc) and "Timeout" in type(exc).__name__:
        return EngineError(
            f"The Hub did not answer about {repo_id} in time. Check the connection (and any "
            "proxy, or the HF_ENDPOINT mirror) and try again; files already downloaded are kept.",
            ModelsErrorCode.NETWORK,
        )
    if isinstance(exc, HfHubHTTPError) or _is_network_error(exc):
        return EngineError(
            f"Could not download {repo_id}: {_first_line(exc)}. Check the connection and try "
            "again; files already downloaded are kept.",
            ModelsErrorCode.NETWORK,
        )
    if isinstance(exc, OSError):
        return EngineError(f"Could not write the download: {exc}", ModelsErrorCode.NETWORK)
    return EngineError(f"Download of {repo_id} failed ({type(exc).__name__}): {exc}")


def _is_network_error(exc: BaseException) -> bool:
    return type(exc).__module__.split(".")[0] in ("httpx", "httpcore", "httpx2")


def _first_line(exc: Exception) -> str:
    """huggingface_hub's messages run over several lines (a URL, a docs link): one is enough."""
    return next((line for line in str(exc).splitlines() if line.strip()), type(exc).__name__)


def _storage_folder(cache_dir: Path, repo_id: str) -> Path:
    return cache_dir / f"models--{repo_id.replace('/', '--')}"


def _write_ref(cache_dir: Path, repo_id: str, revision: str, commit: str) -> Path:
    """Files were fetched by commit; record the branch too so `repo@main` finds them offline."""
    storage = _storage_folder(cache_dir, repo_id)
    if revision != commit:
        ref = storage / "refs" / revision
        ref.parent.mkdir(parents=True, exist_ok=True)
        if not ref.is_file() or ref.read_text().strip() != commit:
            partial = ref.with_name(f".{ref.name}.tmp")
            partial.write_text(commit)
            os.replace(partial, ref)
    snapshot = storage / "snapshots" / commit
    snapshot.mkdir(parents=True, exist_ok=True)
    return snapshot


def remove_orphan_partials(cache_dir: Path, repo_id: str) -> None:
    """Remove the repo's partial files that no transfer is writing (a killed engine's): their
    names are unique per transfer, so nothing would ever resume or remove them.

    huggingface_hub writes a blob's partial file only while it holds that blob's lock, so a
    partial whose lock is free belongs to no live transfer, in this process or another."""
    from filelock import FileLock, Timeout

    storage = _storage_folder(cache_dir, repo_id)
    blobs = storage / "blobs"
    if not blobs.is_dir():
        return
    by_blob: dict[str, list[Path]] = {}
    for partial in blobs.glob("*.incomplete"):  # <blob>.<random>.incomplete
        by_blob.setdefault(partial.name.split(".", 1)[0], []).append(partial)
    locks = cache_dir / ".locks" / storage.name
    for blob, partials in by_blob.items():
        lock = FileLock(str(locks / f"{blob}.lock"))
        try:
            locks.mkdir(parents=True, exist_ok=True)
            lock.acquire(timeout=0)
        except (Timeout, OSError, NotImplementedError):
            continue  # being written right now (or this disk has no locks): leave it
        try:
            for partial in partials:
                partial.unlink(missing_ok=True)
                log.info("removed %s, left by a transfer that was killed", partial.name)
        except OSError as exc:
            log.info("could not remove a partial file: %s", exc)
        finally:
            lock.release()

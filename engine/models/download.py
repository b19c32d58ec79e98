"""Downloads from the Hugging Face Hub into its standard cache, as a job: progress, cancel, resume.

Files come one by one through ``huggingface_hub.hf_hub_download`` at the commit the repo info
names, so every file of a download belongs to one revision. A file already in the cache is
skipped, which is how a cancelled or interrupted download resumes; a file cut off mid-way by a
network error is resumed by huggingface_hub with an HTTP Range request, while a file whose
download was cancelled or killed starts again (huggingface_hub keeps no partial files). Before
the first byte, the repo's file sizes are compared with the free space of the cache's disk.
"""

from __future__ import annotations

import fnmatch
import logging
import os
import shutil
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from engine.errors import EngineError, ModelNotFound
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
STALE_PARTIAL_S = 120  # a partial file untouched this long belongs to a killed download
# Weights in formats VisionDesk does not load, and originals some repos add next to them.
SKIPPED_FORMATS = (
    "*.h5", "*.msgpack", "*.onnx", "*.onnx_data", "*.gguf", "*.ot", "*.tflite", "*.mlmodel",
    "original/*", "onnx/*", "openvino/*", "coreml/*", "flax_model*", "tf_model*",
)  # fmt: skip
PICKLE_PATTERNS = ("*.bin", "*.pt", "*.pth", "*.ckpt", "*.pkl")
# What the planner needs: configs, processor and tokenizer files, chat templates; no weights.
SMALL_FILES = ("*.json", "*.jinja", "*.txt", "*.model", "*.tiktoken", "tokenizer*")


class Cancelled(Exception):
    """Raised from the progress callback to stop huggingface_hub between two chunks."""


ProgressSink = Callable[[dict[str, Any]], None]


def hub_token() -> str | None:
    """``HF_TOKEN``, else the token VisionDesk keeps in the OS keyring, else None (then
    huggingface_hub uses a token saved by ``hf auth login``, if any)."""
    token = os.environ.get("HF_TOKEN")
    if token:
        return token
    try:
        import keyring

        return keyring.get_password(HUB_TOKEN_SERVICE, HUB_TOKEN_USER) or None
    except Exception as exc:  # no keyring backend on this system: not an error, just no token
        log.info("no token from the keyring: %s", exc)
        return None


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


def download(
    command: DownloadModel,
    emit: ProgressSink,
    cancelled: Callable[[], bool],
) -> dict[str, Any]:
    """Fetch the repo's selected files into the cache; raises ``Cancelled`` when stopped."""
    from huggingface_hub import constants

    cache_dir = Path(command.cache_dir or constants.HF_HUB_CACHE)
    commit, files = _repo_files(command.repo_id, command.revision, command.endpoint)
    chosen = select_files(files, command.allow_patterns)
    if not chosen:
        raise ModelNotFound(f"{command.repo_id} has no files that VisionDesk can use.")
    cached = {name for name in chosen if _is_cached(command.repo_id, name, commit, cache_dir)}
    needed = sum(size for name, size in chosen.items() if name not in cached)
    check_disk(cache_dir, needed, command.min_free_bytes)
    _remove_stale_partials(cache_dir, command.repo_id)
    tracker = Tracker(needed, len(chosen), emit, cancelled)
    tracker.files_done = len(cached)
    for name in sorted(chosen, key=lambda n: (chosen[n], n)):  # small files first
        if name in cached:
            continue
        if cancelled():
            raise Cancelled
        tracker.start_file(name)
        _fetch_file(command.repo_id, name, commit, cache_dir, command.endpoint, tracker)
        tracker.finish_file()
    snapshot = _write_ref(cache_dir, command.repo_id, command.revision, commit)
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


def fetch_small_files(
    repo_id: str, endpoint: str | None = None, cache_dir: str | None = None
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
    result = download(command, lambda _data: None, lambda: False)
    return Path(result["path"])


# --- huggingface_hub ----------------------------------------------------------------------------


def _repo_files(
    repo_id: str, revision: str, endpoint: str | None
) -> tuple[str, dict[str, int | None]]:
    from huggingface_hub import HfApi

    api = HfApi(endpoint=endpoint, token=hub_token())
    try:
        info = api.model_info(repo_id, revision=revision, files_metadata=True)
    except Exception as exc:
        raise _hub_error(exc, repo_id) from exc
    if not info.sha:
        raise EngineError(
            f"The Hub gave no revision for {repo_id}.", ModelsErrorCode.NETWORK
        )  # pragma: no cover - the Hub always sends one
    files = {sibling.rfilename: sibling.size for sibling in info.siblings or []}
    return info.sha, files


def _fetch_file(
    repo_id: str, name: str, commit: str, cache_dir: Path, endpoint: str | None, tracker: Tracker
) -> None:
    from huggingface_hub import constants, hf_hub_download

    # Plain HTTP (not the Xet protocol): its chunks pass through our progress callback, so
    # progress and cancel work the same for every repo. Small chunks keep cancel prompt.
    constants.HF_HUB_DISABLE_XET = True
    constants.DOWNLOAD_CHUNK_SIZE = CHUNK_BYTES
    try:
        hf_hub_download(
            repo_id,
            name,
            revision=commit,
            cache_dir=cache_dir,
            endpoint=endpoint,
            token=hub_token(),
            tqdm_class=tracker.bar_class(),  # duck-typed: only update() and close() are used
        )
    except Cancelled:
        raise
    except Exception as exc:
        raise _hub_error(exc, repo_id) from exc


def _hub_error(exc: Exception, repo_id: str) -> EngineError:
    from huggingface_hub.errors import (
        GatedRepoError,
        HfHubHTTPError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    if isinstance(exc, EngineError):
        return exc
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
    if isinstance(exc, HfHubHTTPError) or _is_network_error(exc):
        return EngineError(
            f"Could not download {repo_id}: {exc}. Check the connection and try again; files "
            "already downloaded are kept.",
            ModelsErrorCode.NETWORK,
        )
    if isinstance(exc, OSError):
        return EngineError(f"Could not write the download: {exc}", ModelsErrorCode.NETWORK)
    return EngineError(f"Download of {repo_id} failed ({type(exc).__name__}): {exc}")


def _is_network_error(exc: Exception) -> bool:
    return type(exc).__module__.split(".")[0] in ("httpx", "httpcore", "httpx2")


def _is_cached(repo_id: str, name: str, commit: str, cache_dir: Path) -> bool:
    from huggingface_hub import try_to_load_from_cache

    found = try_to_load_from_cache(repo_id, name, cache_dir=cache_dir, revision=commit)
    return isinstance(found, str)


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


def _remove_stale_partials(cache_dir: Path, repo_id: str) -> None:
    """Partial files left by a killed engine can never be reused (their names are unique)."""
    blobs = _storage_folder(cache_dir, repo_id) / "blobs"
    if not blobs.is_dir():
        return
    now = time.time()
    for partial in blobs.glob("*.incomplete"):
        try:
            if now - partial.stat().st_mtime > STALE_PARTIAL_S:
                partial.unlink()
        except OSError:
            pass

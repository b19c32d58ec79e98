"""What the engine holds between jobs: the resident backend and the devices it runs on."""

from __future__ import annotations

import gc
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass

from engine import protocol as p
from engine.backends.base import Backend

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LoadSpec:
    """Everything that decides whether a resident model can be reused for a request."""

    model: str
    quant: str = "auto"
    device: str = "auto"
    allow_pickle: bool = False
    trust_remote_code: bool = False
    adapter: str | None = None  # a fine-tuned adapter over the base: another adapter reloads

    @classmethod
    def from_command(cls, command: p.LoadModel | p.Chat) -> LoadSpec:
        assert command.model is not None
        return cls(
            model=command.model,
            quant=command.quant,
            device=command.device,
            allow_pickle=getattr(command, "allow_pickle", False),
            trust_remote_code=getattr(command, "trust_remote_code", False),
            adapter=getattr(command, "adapter", None),
        )


class Runtime:
    """The resident model. Only the core's worker thread loads or unloads; status reads are safe."""

    def __init__(self) -> None:
        self.backend: Backend | None = None
        self.spec: LoadSpec | None = None
        self._state: str = "idle"
        self._devices: list[p.DeviceInfo] | None = None
        self._lock = threading.Lock()
        self._listener: Callable[[], None] = lambda: None

    def bind(self, listener: Callable[[], None]) -> None:
        """Called on every state change (the core turns it into an ``EngineStatus`` event)."""
        self._listener = listener

    # --- devices -----------------------------------------------------------------------------
    def devices(self, refresh: bool = False) -> list[p.DeviceInfo]:
        if self._devices is None or refresh:
            from engine.devices import detect_devices

            self._devices = detect_devices()
        return self._devices

    # --- models ------------------------------------------------------------------------------
    def ensure_loaded(self, spec: LoadSpec, on_progress: Callable[[str], None]) -> Backend:
        """Return the resident backend for ``spec``, loading (and replacing) it if needed."""
        if self.backend is not None and self._matches(spec):
            return self.backend
        self._check_fit(spec)
        self.unload(notify=False)
        from engine.backends.local_hf import LocalHFBackend

        self._set_state("loading")
        try:
            on_progress(f"Loading {spec.model}")
            backend = LocalHFBackend.load(spec)
            try:
                backend.warm_up(on_progress)
            except Exception:  # the first request captures the step instead
                log.exception("decode warm-up failed for %s", spec.model)
        except BaseException:
            self._set_state("idle")  # the window stops saying "Loading model…"
            raise
        self._state = "idle"  # the window is told below, with the new model
        with self._lock:
            self.backend, self.spec = backend, spec
        self._devices = None  # free memory changed
        self._listener()
        return backend

    def _check_fit(self, spec: LoadSpec) -> None:
        """Refuse, with the planner's advice, a model that cannot fit (rather than crash)."""
        from engine.errors import EngineError, OutOfMemory
        from engine.models.planner import refuse_if_too_big

        try:
            refuse_if_too_big(
                spec.model, spec.quant, spec.device, self.devices(), spec.trust_remote_code
            )
        except OutOfMemory:
            raise
        except EngineError as error:  # not found, unsafe…: the load says so in its own words
            log.info("fit check skipped for %s: %s", spec.model, error.message)
        except Exception:  # the check must never be why a model that fits does not load
            log.exception("fit check failed for %s; loading anyway", spec.model)

    def _matches(self, spec: LoadSpec) -> bool:
        if self.spec is None or self.backend is None:
            return False
        if spec.model != self.spec.model or spec.adapter != self.spec.adapter:
            return False
        info = self.backend.info()
        # "auto" matches whatever auto resolved to when the resident model was loaded.
        return spec.quant in ("auto", info.quant) and spec.device in ("auto", info.device)

    def require_backend(self) -> Backend:
        from engine.errors import NoModelLoaded

        if self.backend is None:
            raise NoModelLoaded("No model is loaded. Choose a model first.")
        return self.backend

    def unload(self, notify: bool = True) -> bool:
        with self._lock:
            backend, self.backend, self.spec = self.backend, None, None
        if backend is None:
            return False
        backend.close()
        del backend
        gc.collect()
        _empty_device_cache()
        self._devices = None
        if notify:
            self._listener()
        return True

    def busy(self, busy: bool) -> None:
        self._set_state("busy" if busy else "idle")

    def _set_state(self, state: str) -> None:
        if state != self._state:
            self._state = state
            self._listener()

    def status(self, running: list[str]) -> p.EngineStatus:
        with self._lock:
            backend = self.backend
        return p.EngineStatus(
            state=self._state,  # type: ignore[arg-type]
            loaded=backend.info() if backend else None,
            devices=self.devices(),
            running_jobs=running,
        )

    def close(self) -> None:
        self.unload(notify=False)


def _empty_device_cache() -> None:
    import sys

    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available():
        torch.cuda.empty_cache()

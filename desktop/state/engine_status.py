"""What the status bar shows about the engine: phase, device, resident model, GPU memory."""

from __future__ import annotations

from PySide6.QtCore import QObject, Signal, Slot

from desktop.engine_client import EngineClient, EngineExit, EnginePhase
from engine import protocol as p

_GB = 1024**3


def short_model_name(model: str) -> str:
    """``/home/a/models/llava-1.5-7b`` and ``llava-hf/llava-1.5-7b-hf`` both read well shortened."""
    name = model.rstrip("/\\")
    return name.replace("\\", "/").rsplit("/", 1)[-1] if ("/" in name or "\\" in name) else name


class EngineStatusModel(QObject):
    """Follows an ``EngineClient`` and turns what it says into short sentences."""

    changed = Signal()

    def __init__(self, client: EngineClient, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.phase = client.phase
        self.engine_state = "idle"  # the engine's own idle | busy | loading
        self.devices: list[p.DeviceInfo] = []
        self.loaded: p.ModelInfo | None = None
        self.problem = ""  # why it stopped or failed, as a sentence
        client.phase_changed.connect(self._on_client_phase_changed)
        client.welcome_received.connect(self._on_client_welcome_received)
        client.status_received.connect(self._on_client_status_received)
        client.engine_died.connect(self._on_client_engine_died)
        client.engine_failed.connect(self._on_client_engine_failed)

    # -- sentences ------------------------------------------------------------------------

    def state_text(self) -> str:
        if self.phase == EnginePhase.READY:
            return {"busy": "Generating…", "loading": "Loading model…"}.get(
                self.engine_state, "Ready"
            )
        return {
            EnginePhase.STARTING: "Starting engine…",
            EnginePhase.RESTARTING: "Engine stopped — restarting…",
            EnginePhase.FAILED: "Engine failed",
            EnginePhase.STOPPED: "Engine stopped",
        }.get(self.phase, self.phase)

    def state_level(self) -> str:
        """ok | busy | warning | error | idle: the colour of the status dot."""
        if self.phase == EnginePhase.READY:
            return "ok" if self.engine_state == "idle" else "busy"
        return {
            EnginePhase.FAILED: "error",
            EnginePhase.RESTARTING: "warning",
            EnginePhase.STARTING: "busy",
        }.get(self.phase, "idle")

    def gpu(self) -> p.DeviceInfo | None:
        return next((d for d in self.devices if d.kind in ("cuda", "mps")), None)

    def has_cuda(self) -> bool:
        return any(d.kind == "cuda" for d in self.devices)

    def device_text(self) -> str:
        if not self.devices:
            return ""
        gpu = self.gpu()
        return gpu.name if gpu else "CPU only (no CUDA GPU found)"

    def model_text(self) -> str:
        if self.loaded is None:
            return "No model loaded"
        quant = "" if self.loaded.quant in ("", "none") else f" · {self.loaded.quant}"
        fast = " · CUDA graphs" if self.loaded.decoding == "cuda-graphs" else ""
        return f"{short_model_name(self.loaded.model)}{quant}{fast}"

    def vram_text(self) -> str:
        gpu = self.gpu()
        if gpu is None or not gpu.total_memory or gpu.free_memory is None:
            return ""
        used = gpu.total_memory - gpu.free_memory
        return f"VRAM {used / _GB:.1f} / {gpu.total_memory / _GB:.1f} GB"

    # -- slots ----------------------------------------------------------------------------

    @Slot(str)
    def _on_client_phase_changed(self, phase: str) -> None:
        self.phase = phase
        if phase == EnginePhase.READY:
            self.problem = ""
        if phase != EnginePhase.READY:
            self.engine_state = "idle"
        self.changed.emit()

    @Slot(object)
    def _on_client_welcome_received(self, welcome: p.Welcome) -> None:
        self.devices = list(welcome.devices)
        self.loaded = None  # a fresh process holds no model
        self.changed.emit()

    @Slot(object)
    def _on_client_status_received(self, status: p.EngineStatus) -> None:
        self.engine_state = status.state
        self.loaded = status.loaded
        if status.devices:
            self.devices = list(status.devices)
        self.changed.emit()

    @Slot(object)
    def _on_client_engine_died(self, outcome: EngineExit) -> None:
        self.problem = outcome.sentence()
        self.loaded = None
        self.changed.emit()

    @Slot(str)
    def _on_client_engine_failed(self, sentence: str) -> None:
        self.problem = sentence
        self.changed.emit()

"""Which compute devices this machine has, and how a device choice resolves."""

from __future__ import annotations

import os
import platform

from engine.errors import Unsupported
from engine.protocol import DeviceInfo


def _host_memory() -> tuple[int | None, int | None]:
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
        free = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES")
        return total, free
    except (ValueError, OSError, AttributeError):
        return None, None


def detect_devices() -> list[DeviceInfo]:
    """CUDA devices with free/total memory, MPS if present, and always the CPU last."""
    import torch

    devices: list[DeviceInfo] = []
    if torch.cuda.is_available():
        for index in range(torch.cuda.device_count()):
            free, total = torch.cuda.mem_get_info(index)
            devices.append(
                DeviceInfo(
                    kind="cuda",
                    name=torch.cuda.get_device_name(index),
                    index=index,
                    total_memory=int(total),
                    free_memory=int(free),
                )
            )
    if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        devices.append(DeviceInfo(kind="mps", name="Apple GPU (MPS)"))
    host_total, host_free = _host_memory()
    cpu_name = platform.processor() or platform.machine() or "CPU"
    devices.append(
        DeviceInfo(
            kind="cpu",
            name=f"{cpu_name} ({os.cpu_count()} cores)",
            total_memory=host_total,
            free_memory=host_free,
        )
    )
    return devices


def resolve_device(choice: str) -> str:
    """``auto`` picks CUDA when there is one, else the CPU; a missing device is refused clearly."""
    import torch

    if choice == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if choice == "cuda" and not torch.cuda.is_available():
        raise Unsupported("No CUDA GPU was found on this machine; choose the CPU (small models).")
    if choice == "mps" and not (torch.backends.mps.is_available()):
        raise Unsupported("Apple's MPS device is not available on this machine.")
    return choice


def resolve_quant(choice: str, device: str) -> str:
    """``auto`` is NF4 on CUDA; elsewhere full precision, since bitsandbytes is CUDA-first."""
    if choice == "auto":
        return "nf4" if device == "cuda" else "none"
    if choice in ("nf4", "int8") and device == "mps":
        raise Unsupported("bitsandbytes quantisation does not run on Apple MPS; choose 'none'.")
    return choice

"""The process boundary: the engine never imports Qt; the desktop never imports ML libraries."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("torch", "transformers", "bitsandbytes", "peft", "accelerate", "torchvision")


def loaded_modules(code: str) -> set[str]:
    """Modules present in ``sys.modules`` after running ``code`` in a fresh interpreter."""
    probe = f"{code}\nimport sys, json\nprint(json.dumps(sorted(sys.modules)))"
    out = subprocess.run(
        [sys.executable, "-c", probe],
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
        env={"QT_QPA_PLATFORM": "offscreen", "PATH": "/usr/bin:/bin"},
    ).stdout
    return set(json.loads(out.splitlines()[-1]))


def top_level(names: set[str]) -> set[str]:
    return {name.split(".")[0] for name in names}


def test_running_the_engine_code_paths_imports_no_qt() -> None:
    modules = loaded_modules(
        "import engine.server, engine.core, engine.capabilities, engine.backends.local_hf, "
        "engine.devices; engine.devices.detect_devices()"
    )
    assert not {"PySide6", "shiboken6", "desktop"} & top_level(modules)
    assert "torch" in top_level(modules)  # the probe really did reach the heavy paths


def test_no_engine_source_file_imports_qt_or_desktop() -> None:
    offenders = []
    for path in (ROOT / "engine").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module]
            offenders += [
                f"{path}: {n}" for n in names if n.split(".")[0] in ("PySide6", "desktop")
            ]
    assert offenders == []


def test_importing_the_desktop_app_imports_no_ml_library() -> None:
    modules = loaded_modules("import desktop.app, desktop.main, desktop.cli")
    assert not set(HEAVY) & top_level(modules)
    assert "PySide6" in top_level(modules)


def test_desktop_imports_only_the_protocol_from_the_engine() -> None:
    offenders = []
    for path in (ROOT / "desktop").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                # `from engine import protocol` names the submodule in the alias
                names = [
                    f"{node.module}.{a.name}" if node.module == "engine" else node.module
                    for a in node.names
                ]
            for name in names:
                root = name.split(".")[0]
                if (root == "engine" and not name.startswith("engine.protocol")) or root in HEAVY:
                    offenders.append(f"{path.relative_to(ROOT)}: {name}")
    assert offenders == []

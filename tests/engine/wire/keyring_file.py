"""A keyring backend for tests: a JSON file named by ``VISIONDESK_TEST_KEYRING``.

Selected with ``PYTHON_KEYRING_BACKEND=tests.engine.wire.keyring_file.JsonFileKeyring`` so that an
engine subprocess and the test see the same keys, and the user's real keyring is never touched.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from jaraco.classes import properties
from keyring.backend import KeyringBackend
from keyring.errors import PasswordDeleteError

ENV = "VISIONDESK_TEST_KEYRING"


class JsonFileKeyring(KeyringBackend):
    @properties.classproperty
    def priority(cls) -> float:
        # Viable only where a test named its file, so it never wins keyring's own detection.
        if ENV not in os.environ:
            raise RuntimeError("a keyring for tests only")
        return 0.1

    def __init__(self, path: str | os.PathLike[str] | None = None) -> None:
        super().__init__()
        self.path = Path(path or os.environ.get(ENV, "keyring-for-tests.json"))

    def _load(self) -> dict[str, str]:
        if not self.path.is_file():
            return {}
        data = json.loads(self.path.read_text(encoding="utf-8"))
        return data if isinstance(data, dict) else {}

    def get_password(self, service: str, username: str) -> str | None:
        return self._load().get(f"{service}/{username}")

    def set_password(self, service: str, username: str, password: str) -> None:
        data = self._load()
        data[f"{service}/{username}"] = password
        self.path.write_text(json.dumps(data), encoding="utf-8")

    def delete_password(self, service: str, username: str) -> None:
        data = self._load()
        if data.pop(f"{service}/{username}", None) is None:
            raise PasswordDeleteError(f"no entry for {service}/{username}")
        self.path.write_text(json.dumps(data), encoding="utf-8")

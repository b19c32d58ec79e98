"""API keys, read from the OS keyring (or the SDKs' environment variables) only when a job needs one.

A key lives in this process's memory for the length of one request. Every key read is also
registered with a log filter that blanks it from any log record, so that neither our logs nor a
library's (SDK debug output, tracebacks) can carry it to stderr or the log file.
"""

from __future__ import annotations

import logging
import os
import threading
from dataclasses import dataclass

from engine.protocol.cloud import KEY_ENVIRONMENT, KEYRING_SERVICE, PROVIDER_LABELS

log = logging.getLogger(__name__)

MASK = "[redacted]"
_MIN_SECRET_LENGTH = 6  # shorter strings would blank ordinary words; no real key is this short


@dataclass(frozen=True)
class Key:
    """A secret and where it came from (the source is safe to show; the value never is)."""

    value: str
    source: str  # "keyring" or the name of the environment variable

    def __repr__(self) -> str:  # a key printed by accident shows nothing
        return f"Key(source={self.source!r})"


def read_key(provider: str) -> Key | None:
    """The provider's key from the keyring, else from its environment variables, else None."""
    value = _from_keyring(provider)
    if value:
        remember_secret(value)
        return Key(value, "keyring")
    for name in KEY_ENVIRONMENT.get(provider, ()):
        value = os.environ.get(name, "").strip()
        if value:
            remember_secret(value)
            return Key(value, name)
    return None


def missing_key_message(provider: str) -> str:
    label = PROVIDER_LABELS.get(provider, provider)
    names = " or ".join(KEY_ENVIRONMENT.get(provider, ()))
    where = f", or set {names}" if names else ""
    return f"No key for {label}: add one in Settings → Providers{where}."


def _from_keyring(provider: str) -> str | None:
    try:
        import keyring
        from keyring.errors import KeyringError
    except ImportError:
        return None
    try:
        value = keyring.get_password(KEYRING_SERVICE, provider)
    except KeyringError as exc:  # no backend, locked collection, …: fall back to the environment
        log.info("keyring unavailable for %s: %s", provider, type(exc).__name__)
        return None
    except Exception as exc:  # a broken third-party backend must not end the job
        log.warning("keyring backend failed for %s: %s", provider, type(exc).__name__)
        return None
    return value.strip() if value else None


# --- redaction -----------------------------------------------------------------------------------

_secrets: set[str] = set()
_secrets_lock = threading.Lock()


def remember_secret(value: str) -> None:
    """Blank ``value`` from every log record from now on (idempotent)."""
    if len(value) < _MIN_SECRET_LENGTH:
        return
    with _secrets_lock:
        _secrets.add(value)
    _install_filter()


def redact(text: str) -> str:
    """``text`` with every known secret replaced by a mask."""
    with _secrets_lock:
        secrets = sorted(_secrets, key=len, reverse=True)
    for secret in secrets:
        if secret in text:
            text = text.replace(secret, MASK)
    return text


class RedactingFilter(logging.Filter):
    """Rewrites a record's message and traceback text with the secrets masked."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not _secrets:
            return True
        message = record.getMessage()
        cleaned = redact(message)
        if cleaned != message:
            record.msg, record.args = cleaned, None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
            record.exc_info = None  # the formatter uses exc_text; the raw traceback is gone
        if record.stack_info:
            record.stack_info = redact(record.stack_info)
        return True


_FILTER = RedactingFilter()


def _install_filter() -> None:
    """On every handler of the root logger: records of all loggers pass through those."""
    root = logging.getLogger()
    for handler in root.handlers:
        if _FILTER not in handler.filters:
            handler.addFilter(_FILTER)
    if _FILTER not in root.filters:
        root.addFilter(_FILTER)

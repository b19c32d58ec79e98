"""JSON Schemas for extraction: the built-in ones, user files, validation and a version per schema."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engine.errors import BadInput

SCHEMA_DIR = Path(__file__).resolve().parents[2] / "resources" / "schemas"
BUILTIN_NAMES = ("invoice", "receipt", "table", "chart", "form", "key_values")
MAX_SCHEMA_BYTES = 2 * 1024 * 1024


@dataclass(frozen=True)
class LoadedSchema:
    """A schema ready for extraction: where it came from, the schema itself and its version."""

    name: str  # a built-in name, the file's stem, or "custom" for an inline schema
    schema: dict[str, Any]
    version: str  # the first 16 hex digits of the SHA-256 of its canonical JSON
    source: str  # "builtin", a file path, or "inline"

    @property
    def title(self) -> str:
        return str(self.schema.get("title") or self.name)


def schema_version(schema: dict[str, Any]) -> str:
    """A content hash: the same schema has the same version wherever it is stored."""
    canonical = json.dumps(schema, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()[:16]


def check_schema(schema: Any, origin: str) -> dict[str, Any]:
    """Raise ``BadInput`` unless ``schema`` is a JSON Schema for an object or array result."""
    from jsonschema import exceptions, validators

    if not isinstance(schema, dict):
        raise BadInput(f"{origin} is not a JSON Schema: its top level must be an object.")
    validator = validators.validator_for(schema, default=validators.Draft202012Validator)
    try:
        validator.check_schema(schema)
    except exceptions.SchemaError as exc:
        where = "/".join(str(part) for part in exc.absolute_path) or "the top level"
        raise BadInput(f"{origin} is not a valid JSON Schema ({where}: {exc.message}).") from exc
    kind = schema.get("type")
    if kind not in ("object", "array") and not any(k in schema for k in ("anyOf", "oneOf")):
        raise BadInput(
            f'{origin} must describe an object or an array (its "type" is {kind!r}), '
            "so that the extracted values have names."
        )
    return schema


def load_builtin(name: str) -> LoadedSchema:
    if name not in BUILTIN_NAMES:
        raise BadInput(
            f"Unknown schema {name!r}. Built-in schemas: {', '.join(BUILTIN_NAMES)}; "
            "or give the path of a JSON Schema file."
        )
    schema = json.loads((SCHEMA_DIR / f"{name}.json").read_text(encoding="utf-8"))
    return LoadedSchema(name, schema, schema_version(schema), "builtin")


def load_file(path: Path) -> LoadedSchema:
    if not path.is_file():
        raise BadInput(f"Schema file not found: {path}")
    if path.stat().st_size > MAX_SCHEMA_BYTES:
        raise BadInput(f"Schema file {path.name} is larger than 2 MiB; is it really a schema?")
    try:
        schema = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BadInput(f"Schema file {path.name} is not valid JSON ({exc}).") from exc
    check_schema(schema, f"Schema file {path.name}")
    return LoadedSchema(path.stem, schema, schema_version(schema), str(path))


def resolve_schema(name_or_path: str, inline: dict[str, Any] | None = None) -> LoadedSchema:
    """An inline schema if given, else a built-in name, else a schema file path."""
    if inline is not None:
        check_schema(inline, "The schema")
        return LoadedSchema(
            str(inline.get("title") or "custom"), inline, schema_version(inline), "inline"
        )
    if name_or_path in BUILTIN_NAMES:
        return load_builtin(name_or_path)
    path = Path(name_or_path).expanduser()
    if path.suffix.lower() == ".json" or path.exists() or "/" in name_or_path:
        return load_file(path)
    return load_builtin(name_or_path)  # raises with the list of names


def builtin_schemas() -> list[LoadedSchema]:
    return [load_builtin(name) for name in BUILTIN_NAMES]


def validation_errors(data: Any, schema: dict[str, Any]) -> list[tuple[str, str]]:
    """Every way ``data`` breaks ``schema``, as (JSON pointer, message) pairs, in a stable order."""
    from jsonschema import validators

    validator_class = validators.validator_for(schema, default=validators.Draft202012Validator)
    validator = validator_class(schema)
    found = []
    for error in validator.iter_errors(data):
        pointer = "".join(f"/{_escape(part)}" for part in error.absolute_path)
        found.append((pointer, error.message))
    return sorted(found)


def _escape(part: object) -> str:
    return str(part).replace("~", "~0").replace("/", "~1")

"""The shared cloud pieces on their own: error mapping, retry-after, schema adaptation, image and
PDF encoding, keys from the keyring or the environment, and the log filter that hides them."""

from __future__ import annotations

import base64
import email.utils
import io
import json
import logging
import time

import jsonschema
import pytest
from PIL import Image

from engine import keys
from engine.backends import cloud_common as cc
from engine.backends.openai_backend import normalise_base_url
from engine.errors import BadInput
from engine.protocol import ErrorCode
from engine.protocol import cloud as c
from tests.engine.wire.keyring_file import JsonFileKeyring


@pytest.mark.parametrize(
    ("status", "message", "kind", "retry_after", "code", "retryable"),
    [
        (401, "Incorrect API key provided: sk-ab***", "invalid_api_key", None, c.INVALID_KEY, False),
        (400, "API key not valid.", "INVALID_ARGUMENT API_KEY_INVALID", None, c.INVALID_KEY, False),
        (403, "Permission denied", "", None, c.INVALID_KEY, False),
        (429, "Rate limit reached", "rate_limit_exceeded", 0.5, c.RATE_LIMITED, True),
        (429, "Resource has been exhausted (e.g. check quota).", "RESOURCE_EXHAUSTED", 1.0,
         c.RATE_LIMITED, True),
        (429, "You exceeded your current quota", "RESOURCE_EXHAUSTED", None, c.QUOTA_EXHAUSTED, False),
        (429, "check your plan and billing details", "insufficient_quota", 2.0, c.QUOTA_EXHAUSTED, False),
        (400, "Your credit balance is too low", "invalid_request_error", None, c.QUOTA_EXHAUSTED, False),
        (402, "Payment required", "", None, c.QUOTA_EXHAUSTED, False),
        (400, "flagged by our content policy", "", None, c.CONTENT_REFUSED, False),
        (500, "boom", "api_error", None, c.SERVER_ERROR, True),
        (529, "Overloaded", "overloaded_error", None, c.SERVER_ERROR, True),
        (404, "model not found", "", None, ErrorCode.MODEL_NOT_FOUND, False),
        (400, "max_tokens too large", "invalid_request_error", None, ErrorCode.CLOUD_FAILED, False),
    ],
)  # fmt: skip
def test_http_failures_map_to_distinct_actionable_codes(
    status, message, kind, retry_after, code, retryable
) -> None:
    error = cc.error_for_status("Claude", status, message, kind, retry_after)
    assert (error.code, error.retryable) == (code, retryable)
    assert error.message.startswith("Claude") or error.message.startswith("The Claude")
    if code == c.INVALID_KEY and status != 403:
        assert message not in error.message  # the provider's text may quote the key


def test_retry_after_in_milliseconds_seconds_and_as_an_http_date() -> None:
    assert cc.parse_retry_after({"retry-after-ms": "250"}) == 0.25
    assert cc.parse_retry_after({"Retry-After": "3"}) == 3.0
    later = email.utils.formatdate(time.time() + 30, usegmt=True)
    assert 25 < (cc.parse_retry_after({"retry-after": later}) or 0) <= 30
    assert cc.parse_retry_after({"retry-after": "soon"}) is None
    assert cc.parse_retry_after({}) is None


def test_retries_are_bounded_and_never_repeat_text_already_shown() -> None:
    calls = []

    def failing() -> str:
        calls.append(time.monotonic())
        raise cc.CloudError("busy", c.SERVER_ERROR, retryable=True)

    config = cc.CloudConfig(max_retries=2, backoff_s=0.01)
    with pytest.raises(cc.CloudError):
        cc.with_retries(
            failing, lambda e: e, config, cancelled=lambda: False, started_output=lambda: False
        )  # type: ignore[arg-type]
    assert len(calls) == 3
    calls.clear()
    with pytest.raises(cc.CloudError):
        cc.with_retries(
            failing, lambda e: e, config, cancelled=lambda: False, started_output=lambda: True
        )  # type: ignore[arg-type]
    assert len(calls) == 1


def test_timeouts_are_recognised_through_wrapping_exceptions() -> None:
    class ReadTimeout(Exception):
        pass

    try:
        try:
            raise ReadTimeout("slow")
        except ReadTimeout as inner:
            raise RuntimeError("request failed") from inner
    except RuntimeError as outer:
        assert cc.is_timeout(outer)
    assert cc.connection_error("Gemini", ReadTimeout(), 2).code == c.TIMEOUT
    assert cc.connection_error("Gemini", ConnectionRefusedError(), 2).code == c.NETWORK_DOWN


# --- schemas -------------------------------------------------------------------------------------

SCHEMA = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object",
    "properties": {
        "name": {"type": "string", "default": "x", "minLength": 1},
        "kind": {"oneOf": [{"type": "string"}, {"type": "integer"}]},
        "tags": {"type": "array", "items": {"$ref": "#/$defs/tag"}, "uniqueItems": True},
        "size": {"type": "string", "enum": ["S", "M"]},
    },
    "required": ["name"],
    "$defs": {
        "tag": {"type": "object", "properties": {"t": {"type": "string"}}, "required": ["t"]}
    },
}


def test_strict_adaptation_requires_everything_makes_optional_nullable_and_drops_the_rest() -> None:
    strict = cc.strict_schema(SCHEMA)
    assert strict["required"] == ["name", "kind", "tags", "size"]
    assert strict["additionalProperties"] is False
    assert strict["properties"]["name"] == {"type": "string"}  # default, minLength dropped
    assert strict["properties"]["kind"] == {
        "anyOf": [{"anyOf": [{"type": "string"}, {"type": "integer"}]}, {"type": "null"}]
    }
    assert strict["properties"]["tags"]["type"] == ["array", "null"]
    assert "uniqueItems" not in strict["properties"]["tags"]
    assert strict["properties"]["size"] == {
        "anyOf": [{"type": "string", "enum": ["S", "M"]}, {"type": "null"}]
    }
    assert strict["$defs"]["tag"]["additionalProperties"] is False and "$schema" not in strict
    jsonschema.Draft202012Validator.check_schema(strict)


def test_what_strict_mode_cannot_express_is_reported() -> None:
    with pytest.raises(cc.NotStrict):
        cc.strict_schema({"type": "object", "additionalProperties": {"type": "string"}})
    with pytest.raises(cc.NotStrict):
        cc.strict_schema({"allOf": [{"type": "object"}]})


def test_nulls_added_by_strict_mode_are_dropped_where_the_field_was_optional() -> None:
    answer = {"name": "a", "kind": None, "size": None, "tags": [{"t": "x"}]}
    assert cc.drop_added_nulls(answer, SCHEMA) == {"name": "a", "tags": [{"t": "x"}]}
    required_null = {
        "type": "object",
        "properties": {"a": {"type": ["string", "null"]}},
        "required": ["a"],
    }
    assert cc.drop_added_nulls({"a": None}, required_null) == {"a": None}


def test_a_non_object_root_is_wrapped_with_its_definitions() -> None:
    rows = {
        "type": "array",
        "items": {"$ref": "#/$defs/row"},
        "$defs": {"row": {"type": "integer"}},
    }
    wrapped, changed = cc.object_root(rows)
    assert changed and wrapped["required"] == ["value"] and wrapped["$defs"] == rows["$defs"]
    jsonschema.validate({"value": [1, 2]}, wrapped)
    assert cc.object_root(SCHEMA) == (SCHEMA, False)


def test_gemini_schema_keeps_json_schema_but_drops_what_gemini_refuses() -> None:
    adapted = cc.gemini_schema(SCHEMA)
    assert "$schema" not in adapted and "default" not in adapted["properties"]["name"]
    assert "anyOf" in adapted["properties"]["kind"] and adapted["required"] == ["name"]


def test_validation_tolerates_a_code_fence_and_names_where_the_problem_is() -> None:
    data, problem = cc.validate_json('```json\n{"name": "a"}\n```', SCHEMA)
    assert (data, problem) == ({"name": "a"}, None)
    _, problem = cc.validate_json('{"name": 3}', SCHEMA)
    assert problem is not None and problem.startswith("at name:")
    _, problem = cc.validate_json("{nope", SCHEMA)
    assert problem is not None and problem.startswith("not valid JSON")
    with pytest.raises(BadInput):
        cc.check_schema({"type": 12})


# --- attachments ---------------------------------------------------------------------------------


def _decode(attachment: cc.Attachment) -> Image.Image:
    return Image.open(io.BytesIO(base64.b64decode(attachment.data)))


def test_images_keep_their_aspect_ratio_within_the_providers_limit(tmp_path) -> None:
    tall = tmp_path / "receipt.png"
    Image.new("RGB", (400, 3000), "white").save(tall)
    [png] = cc.encode_attachments(str(tall), max_edge=1568)
    assert (png.media_type, png.width, png.height) == ("image/png", 209, 1568)
    assert _decode(png).size == (209, 1568)
    photo = tmp_path / "photo.jpg"
    Image.new("RGB", (50, 40), "red").save(photo)
    [jpeg] = cc.encode_attachments(str(photo), max_edge=1568)
    assert jpeg.media_type == "image/jpeg" and jpeg.data_url.startswith("data:image/jpeg;base64,")


def test_a_pdf_becomes_one_image_per_page_or_goes_natively(tmp_path) -> None:
    pdf = tmp_path / "two-pages.pdf"
    pages = [Image.new("RGB", (200, 100), "white"), Image.new("RGB", (100, 200), "white")]
    pages[0].save(pdf, save_all=True, append_images=pages[1:], resolution=72)
    rendered = cc.encode_attachments(str(pdf), max_edge=2048)
    assert [(a.width, a.height) for a in rendered] == [(400, 200), (200, 400)]  # 144 DPI
    [native] = cc.encode_attachments(str(pdf), max_edge=2048, native_pdf=True)
    assert native.is_pdf and base64.b64decode(native.data).startswith(b"%PDF")
    assert cc.check_pdf(pdf) == 2


def test_bad_attachments_are_bad_input(tmp_path) -> None:
    fake = tmp_path / "fake.pdf"
    fake.write_bytes(b"not a pdf")
    with pytest.raises(BadInput):
        cc.check_pdf(fake)
    with pytest.raises(BadInput):
        cc.encode_attachments(str(tmp_path / "missing.png"), max_edge=100)


def test_remote_urls_are_normalised_to_the_v1_root() -> None:
    assert normalise_base_url("http://box:8000") == "http://box:8000/v1"
    assert normalise_base_url("http://box:8000/v1/") == "http://box:8000/v1"
    assert normalise_base_url("localhost:11434") == "http://localhost:11434/v1"


# --- keys ----------------------------------------------------------------------------------------


@pytest.fixture
def file_keyring(tmp_path):
    import keyring

    previous = keyring.get_keyring()
    ring = JsonFileKeyring(tmp_path / "keys.json")
    keyring.set_keyring(ring)
    yield ring
    keyring.set_keyring(previous)


def test_a_key_comes_from_the_keyring_first_then_the_environment(file_keyring, monkeypatch) -> None:
    monkeypatch.setenv("GEMINI_API_KEY", "from-the-environment-1")
    assert keys.read_key("gemini").source == "GEMINI_API_KEY"
    monkeypatch.setenv("GOOGLE_API_KEY", "from-the-environment-2")
    assert keys.read_key("gemini").value == "from-the-environment-2"  # as the SDK prefers
    file_keyring.set_password(c.KEYRING_SERVICE, "gemini", "from-the-keyring-3")
    key = keys.read_key("gemini")
    assert (key.value, key.source) == ("from-the-keyring-3", "keyring")
    assert "from-the-keyring" not in repr(key)
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    assert keys.read_key("openai") is None


def test_a_key_once_read_is_blanked_from_every_log_record_and_traceback(file_keyring) -> None:
    secret = "sk-test-never-logged-0123456789"
    file_keyring.set_password(c.KEYRING_SERVICE, "openai", secret)
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        keys.read_key("openai")  # registers the secret and the filter on the root handlers
        logging.getLogger("openai._base_client").warning(
            "headers: %s", {"Authorization": f"Bearer {secret}"}
        )
        try:
            raise RuntimeError(f"failed with {secret}")
        except RuntimeError:
            logging.getLogger("engine.core").exception("job failed")
    finally:
        root.removeHandler(handler)
    output = stream.getvalue()
    assert secret not in output
    assert output.count(keys.MASK) >= 2 and "Bearer [redacted]" in output
    assert json.dumps(cc.CloudError(f"oops {secret}").message).count(keys.MASK) == 1

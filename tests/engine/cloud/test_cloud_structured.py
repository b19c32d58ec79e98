"""Structured output on every cloud backend (what extraction calls): the provider's JSON-schema
mode on the wire, jsonschema validation of the answer, one repair retry, then a clear error."""

from __future__ import annotations

import json

import jsonschema
import pytest
from PIL import Image

from engine.backends.anthropic_backend import AnthropicBackend
from engine.backends.cloud_common import CloudBackend, CloudConfig, CloudError
from engine.backends.gemini_backend import GeminiBackend
from engine.backends.openai_backend import OpenAIBackend, RemoteBackend
from engine.errors import BadInput
from engine.keys import Key
from engine.protocol import ChatMessage, Sampling
from engine.protocol import cloud as c
from tests.engine.wire.anthropic_server import tool_input
from tests.engine.wire.stack import KEYS, CloudStack

PROVIDERS = ["anthropic", "openai", "gemini", "remote"]

INVOICE = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object",
    "properties": {
        "number": {"type": "string"},
        "total": {"type": "number", "minimum": 0},
        "currency": {"type": "string", "enum": ["EUR", "USD"]},
        "note": {"type": "string"},
        "lines": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {"item": {"type": "string"}, "amount": {"type": "number"}},
                "required": ["item", "amount"],
            },
        },
    },
    "required": ["number", "total", "lines"],
}
GOOD = {
    "number": "INV-7",
    "total": 12.5,
    "currency": "EUR",
    "lines": [{"item": "tea", "amount": 12.5}],
}
BAD = {"number": "INV-7", "total": "twelve", "lines": []}


@pytest.fixture(scope="module")
def scan(tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("scan") / "invoice.png"
    Image.new("RGB", (120, 160), (250, 250, 250)).save(path)
    return str(path)


def backend(stack: CloudStack, provider: str) -> CloudBackend:
    config = CloudConfig(timeout_s=2, max_retries=2, backoff_s=0.05)
    key = Key(KEYS[provider], "test")
    if provider == "anthropic":
        return AnthropicBackend(None, base_url=stack.anthropic.origin, key=key, config=config)
    if provider == "openai":
        return OpenAIBackend(None, base_url=f"{stack.openai.origin}/v1", key=key, config=config)
    if provider == "gemini":
        return GeminiBackend(None, base_url=stack.gemini.origin, key=key, config=config)
    return RemoteBackend(None, base_url=stack.remote.origin, key=key, config=config)


def extract(model: CloudBackend, scan: str, schema: dict) -> tuple[str, list[str]]:
    streamed: list[str] = []
    result = model.chat(
        [ChatMessage(role="user", text="Extract the invoice.", images=[scan])],
        Sampling(max_new_tokens=256),
        on_text=streamed.append,
        cancelled=lambda: False,
        json_schema=schema,
    )
    assert result.reason == "done"
    return result.text, streamed


def schema_sent(stack: CloudStack, provider: str) -> dict:
    """The schema as it went over the wire in the provider's own JSON-schema mode."""
    request = stack.servers[provider].requests[-1]
    if provider == "anthropic":
        return tool_input(request)
    if provider == "gemini":
        config = request.body["generationConfig"]
        assert config["responseMimeType"] == "application/json"
        return config["responseJsonSchema"]
    response_format = request.body["response_format"]
    assert response_format["type"] == "json_schema" and response_format["json_schema"]["strict"]
    return response_format["json_schema"]["schema"]


@pytest.mark.parametrize("provider", PROVIDERS)
def test_extraction_returns_schema_valid_json_through_the_providers_schema_mode(
    stack, scan, provider
) -> None:
    stack.servers[provider].json_answers.append(GOOD)
    text, streamed = extract(backend(stack, provider), scan, INVOICE)
    assert json.loads(text) == GOOD
    jsonschema.validate(json.loads(text), INVOICE)
    assert streamed == [text]  # one delta: the validated JSON
    sent = schema_sent(stack, provider)
    assert sent["properties"]["lines"]["items"]["required"] == ["item", "amount"]
    if provider in ("openai", "remote"):  # strict subset: all required, optional ones nullable
        assert sent["required"] == ["number", "total", "currency", "note", "lines"]
        assert sent["properties"]["note"]["type"] == ["string", "null"]
        assert sent["additionalProperties"] is False and "$schema" not in sent
    if provider == "gemini":
        assert "$schema" not in sent


def test_strict_mode_nulls_for_optional_fields_are_removed_before_validation(stack, scan) -> None:
    stack.openai.json_answers.append({**GOOD, "note": None})  # what strict mode makes models do
    text, _ = extract(backend(stack, "openai"), scan, INVOICE)
    assert json.loads(text) == GOOD


@pytest.mark.parametrize("provider", PROVIDERS)
def test_an_invalid_answer_gets_one_repair_retry_that_names_the_problem(
    stack, scan, provider
) -> None:
    server = stack.servers[provider]
    server.json_answers.extend([BAD, GOOD])
    text, _ = extract(backend(stack, provider), scan, INVOICE)
    assert json.loads(text) == GOOD
    repair = json.dumps(server.requests[-1].body)
    assert "does not match the required JSON Schema" in repair and "at total" in repair


@pytest.mark.parametrize("provider", ["anthropic", "gemini"])
def test_two_invalid_answers_end_with_malformed_response_after_exactly_one_retry(
    stack, scan, provider
) -> None:
    server = stack.servers[provider]
    server.json_answers.extend([BAD, "not json at all"])
    with pytest.raises(CloudError) as failure:
        extract(backend(stack, provider), scan, INVOICE)
    assert failure.value.code == c.MALFORMED_RESPONSE
    assert "not valid JSON" in failure.value.message
    assert len([r for r in server.requests if r.method == "POST"]) == 2


@pytest.mark.parametrize("provider", PROVIDERS)
def test_a_non_object_root_schema_is_wrapped_for_the_provider_and_unwrapped_after(
    stack, scan, provider
) -> None:
    rows = {"type": "array", "items": {"type": "object", "properties": {"a": {"type": "integer"}},
                                        "required": ["a"]}}  # fmt: skip
    # Anthropic and OpenAI see the wrapper {"value": …}; Gemini takes an array root as it is.
    answer = [{"a": 1}, {"a": 2}]
    stack.servers[provider].json_answers.append(
        answer if provider == "gemini" else {"value": answer}
    )
    text, _ = extract(backend(stack, provider), scan, rows)
    assert json.loads(text) == answer


def test_a_free_form_map_falls_back_to_non_strict_mode_and_is_still_validated(stack, scan) -> None:
    tags = {"type": "object", "additionalProperties": {"type": "string"}}
    stack.openai.json_answers.append({"colour": "red"})
    text, _ = extract(backend(stack, "openai"), scan, tags)
    assert json.loads(text) == {"colour": "red"}
    assert stack.openai.requests[-1].body["response_format"]["json_schema"]["strict"] is False


def test_an_invalid_schema_is_bad_input_before_any_request(stack, scan) -> None:
    with pytest.raises(BadInput, match="not valid JSON Schema"):
        extract(backend(stack, "anthropic"), scan, {"type": "no-such-type"})
    assert stack.anthropic.requests == []

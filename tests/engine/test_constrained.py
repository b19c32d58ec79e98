"""Schema-constrained decoding: random-weight models still answer with valid, closed JSON."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import torch
from PIL import Image

from engine.backends.local_hf import LocalHFBackend
from engine.errors import BadInput
from engine.extraction import bounds, constrained, schemas
from engine.protocol import ChatMessage, Sampling
from engine.runtime import LoadSpec

FAMILIES = ["llava", "qwen2_vl"]

# Hand-written schemas, each exercising what the grammar must get right.
HAND_WRITTEN: dict[str, dict[str, Any]] = {
    "nesting": {
        "type": "object",
        "properties": {
            "order": {
                "type": "object",
                "properties": {
                    "customer": {
                        "type": "object",
                        "properties": {"name": {"type": "string", "maxLength": 12}},
                        "required": ["name"],
                        "additionalProperties": False,
                    },
                    "lines": {
                        "type": "array",
                        "maxItems": 2,
                        "items": {
                            "type": "object",
                            "properties": {"sku": {"type": "string"}, "qty": {"type": "integer"}},
                            "required": ["sku", "qty"],
                            "additionalProperties": False,
                        },
                    },
                },
                "required": ["customer", "lines"],
                "additionalProperties": False,
            }
        },
        "required": ["order"],
        "additionalProperties": False,
    },
    "arrays": {
        "type": "object",
        "properties": {
            "tags": {"type": "array", "items": {"type": "string"}, "minItems": 1, "maxItems": 4},
            "matrix": {
                "type": "array",
                "maxItems": 3,
                "items": {"type": "array", "maxItems": 3, "items": {"type": "number"}},
            },
            "anything": {"type": "array", "maxItems": 2, "items": {}},
        },
        "required": ["tags", "matrix", "anything"],
        "additionalProperties": False,
    },
    "enums": {
        "type": "object",
        "properties": {
            "colour": {"enum": ["red", "green", "blue"]},
            "size": {"type": "integer", "enum": [1, 2, 3]},
            "kind": {"const": "fixed"},
            "state": {"type": ["string", "null"], "enum": ["open", "closed", None]},
        },
        "required": ["colour", "size", "kind", "state"],
        "additionalProperties": False,
    },
    "bounded_numbers": {
        "type": "object",
        "properties": {
            "percent": {"type": "number", "minimum": 0, "maximum": 100},
            "count": {"type": "integer", "minimum": -5, "maximum": 5},
            "open_interval": {"type": "number", "exclusiveMinimum": 0, "exclusiveMaximum": 1},
            "unbounded": {"type": "number"},
        },
        "required": ["percent", "count", "open_interval", "unbounded"],
        "additionalProperties": False,
    },
    "optional_fields": {
        "type": "object",
        "properties": {
            "id": {"type": "string", "maxLength": 8},
            "note": {"type": "string"},
            "flag": {"type": "boolean"},
            "score": {"type": ["number", "null"]},
        },
        "required": ["id"],
        "additionalProperties": False,
    },
}

ALL_SCHEMAS = {
    **{f"builtin:{s.name}": s.schema for s in schemas.builtin_schemas()},
    **{f"custom:{name}": schema for name, schema in HAND_WRITTEN.items()},
}


@pytest.fixture(scope="module")
def page(tmp_path_factory: pytest.TempPathFactory) -> str:
    path = tmp_path_factory.mktemp("constrained") / "page.png"
    Image.new("RGB", (96, 128), (250, 250, 245)).save(path)
    return str(path)


@pytest.fixture(scope="module")
def backends(tiny_model) -> dict[str, LocalHFBackend]:
    # Full precision keeps this matrix quick on the CPU; the NF4 path is covered end to end.
    return {
        family: LocalHFBackend.load(LoadSpec(str(tiny_model(family)), quant="none", device="cpu"))
        for family in FAMILIES
    }


def ask(backend: LocalHFBackend, page: str, schema: dict[str, Any], max_new_tokens: int) -> Any:
    message = ChatMessage(role="user", text="Extract the data as JSON.", images=[page])
    return backend.chat(
        [message],
        Sampling(max_new_tokens=max_new_tokens),
        on_text=lambda text: None,
        cancelled=lambda: False,
        json_schema=schema,
    )


def whitespace_runs_outside_strings(text: str) -> list[int]:
    without_strings = re.sub(r'"(?:[^"\\]|\\.)*"', '""', text)
    return [len(run) for run in re.findall(r"\s+", without_strings)]


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("name", sorted(ALL_SCHEMAS))
def test_every_schema_gives_valid_json_that_closes_before_the_token_limit(
    backends, page, family, name
) -> None:
    """The pipeline's guaranteed setting: limits fitted to the budget, compact JSON."""
    schema = ALL_SCHEMAS[name]
    generation = bounds.generation_schema(schema)
    smallest = bounds.worst_case_bytes(bounds.scaled(bounds.without_optional(generation), 0), 0)
    budget = int(smallest) + 160  # room for content beyond the smallest answer
    fitted, worst = bounds.fit_to_budget(generation, budget, whitespace=0)
    assert worst < budget
    result = ask(backends[family], page, {**fitted, bounds.WHITESPACE_KEY: 0}, budget)

    assert result.reason == "done", result.text
    assert result.completion_tokens < budget
    data = json.loads(result.text)  # strict: no raw control characters in strings
    jsonschema.validate(data, schema)
    assert result.text == result.text.strip()


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("name", sorted(HAND_WRITTEN))
def test_generous_limits_give_valid_json_or_a_length_stop_never_a_whitespace_run(
    backends, page, family, name
) -> None:
    """The first attempt's setting: whitespace bounded to two characters per place."""
    schema = HAND_WRITTEN[name]
    result = ask(backends[family], page, bounds.generation_schema(schema), 128)

    assert max(whitespace_runs_outside_strings(result.text), default=0) <= bounds.MAX_WHITESPACE
    if result.reason == "length":
        # Cut off by the limit: the pipeline never takes this as a result (it retries).
        assert not result.text[-3:].isspace()
    else:
        jsonschema.validate(json.loads(result.text), schema)


def test_each_call_gets_a_fresh_processor_so_repeated_calls_stay_valid(backends, page) -> None:
    backend = backends["llava"]
    schema = {**bounds.generation_schema(HAND_WRITTEN["enums"]), bounds.WHITESPACE_KEY: 0}
    assert backend._json_processor(schema) is not backend._json_processor(schema)
    answers = [ask(backend, page, schema, 64) for _ in range(2)]
    for answer in answers:  # a reused matcher would have ended the second answer at once
        assert answer.reason == "done"
        jsonschema.validate(json.loads(answer.text), HAND_WRITTEN["enums"])


# --- the guards, driven token by token with logits that push against closing -----------------


def drive(processor: Any, preference: torch.Tensor, steps: int = 400) -> list[int]:
    """Greedy decoding with fixed logits ``preference`` through the processor."""
    ids: list[int] = [0]
    for _ in range(steps):
        scores = processor(torch.tensor([ids]), preference.clone().unsqueeze(0))
        token = int(torch.argmax(scores[0]))
        ids.append(token)
        if processor.completed:
            break
    return ids[1:]


@pytest.fixture(scope="module")
def tokenizer(tiny_model):
    from transformers import AutoProcessor

    return AutoProcessor.from_pretrained(tiny_model("llava")).tokenizer


def vocabulary_bytes(tokenizer) -> list[bytes]:
    _, vocabulary = constrained.compile_schema(tokenizer, 512, {"type": "object"}, (2,))
    return vocabulary.token_bytes


def text_of(tokenizer, ids: list[int]) -> str:
    return b"".join(vocabulary_bytes(tokenizer)[i] for i in ids).decode("utf-8")


def test_a_pattern_string_without_a_limit_is_closed_by_the_guard(tokenizer) -> None:
    schema = {
        "type": "object",
        "properties": {"code": {"type": "string", "pattern": "^[a-z]+$"}},
        "required": ["code"],
        "additionalProperties": False,
    }
    compiled, vocabulary = constrained.compile_schema(tokenizer, 512, schema, (2,))
    processor = constrained.JsonSchemaLogitsProcessor(compiled, vocabulary, max_string_chars=30)
    # Letters are always preferred over the closing quote: without the guard this never ends.
    preference = torch.tensor(
        [5.0 if t.isalpha() else -5.0 if t[:1] == b'"' else 0.0 for t in vocabulary.token_bytes]
    )
    ids = drive(processor, preference)

    assert processor.completed
    data = json.loads(text_of(tokenizer, ids[:-1]))
    assert re.fullmatch("[a-z]+", data["code"]) and len(data["code"]) <= 30 + 16
    assert processor.guard_steps >= 1


def test_a_number_without_bounds_stops_growing_after_twenty_digits(tokenizer) -> None:
    schema = {"type": "object", "properties": {"n": {"type": "number"}}, "required": ["n"]}
    compiled, vocabulary = constrained.compile_schema(tokenizer, 512, schema, (2,))
    processor = constrained.JsonSchemaLogitsProcessor(compiled, vocabulary, max_string_chars=50)
    preference = torch.tensor([5.0 if t[:1].isdigit() else 0.0 for t in vocabulary.token_bytes])
    ids = drive(processor, preference)

    assert processor.completed
    digits = re.findall(r"\d+", text_of(tokenizer, ids[:-1]))
    assert digits and max(len(run) for run in digits) <= constrained.MAX_DIGIT_RUN + 8


def test_control_characters_never_appear_raw_inside_strings(tokenizer) -> None:
    schema = {
        "type": "object",
        "properties": {"text": {"type": "string", "maxLength": 20}},
        "required": ["text"],
    }
    compiled, vocabulary = constrained.compile_schema(tokenizer, 512, schema, (2,))
    processor = constrained.JsonSchemaLogitsProcessor(compiled, vocabulary, max_string_chars=400)
    # Tabs are the most wanted token: the bounded-string rule alone would let them in.
    preference = torch.tensor(
        [9.0 if b"\t" in t else 1.0 if t.isalpha() else 0.0 for t in vocabulary.token_bytes]
    )
    ids = drive(processor, preference)

    text = text_of(tokenizer, ids[:-1])
    data = json.loads(text)  # json.loads rejects raw control characters in strings
    assert "\t" not in data["text"]


# --- limits and sizes ----------------------------------------------------------------------


def test_generation_schema_bounds_every_string_array_map_and_number() -> None:
    schema = {
        "type": "object",
        "properties": {
            "s": {"type": "string"},
            "a": {"type": "array", "items": {"type": "integer"}},
            "m": {"type": "object", "additionalProperties": {"type": "string"}},
            "any": {},
        },
    }
    bounded = bounds.generation_schema(schema)
    props = bounded["properties"]
    assert props["s"]["maxLength"] == bounds.Limits().max_string
    assert props["a"]["maxItems"] == bounds.Limits().max_items
    assert props["a"]["items"]["maximum"] == int(bounds.Limits().max_number)
    assert props["m"]["maxProperties"] and props["m"]["propertyNames"]["maxLength"]
    assert "string" in props["any"]["type"] and "maxLength" in props["any"]
    assert bounded["additionalProperties"] is False
    assert bounds.worst_case_bytes(bounded) < float("inf")
    assert bounds.worst_case_bytes(schema) == float("inf")
    assert "maxLength" not in schema["properties"]["s"]  # the user's schema is left alone


def test_fitting_shrinks_limits_until_the_worst_case_fits_or_says_it_cannot() -> None:
    invoice = bounds.generation_schema(schemas.load_builtin("invoice").schema)
    fitted, worst = bounds.fit_to_budget(invoice, 2000)
    assert worst <= 1999
    assert bounds.worst_case_bytes(fitted) == worst
    with pytest.raises(BadInput, match="token limit"):
        bounds.fit_to_budget(invoice, 50)
    tree = {
        "type": "object",
        "properties": {"children": {"type": "array", "items": {"$ref": "#"}}},
        "required": ["children"],
    }
    # A recursive schema fits by giving up recursion: every child list is empty.
    fitted, worst = bounds.fit_to_budget(bounds.generation_schema(tree), 400)
    assert fitted["properties"]["children"]["maxItems"] == 0 and worst < 400
    remote = {
        "type": "object",
        "properties": {"x": {"$ref": "https://example.com/elsewhere.json"}},
        "required": ["x"],
    }
    with pytest.raises(BadInput, match="unbounded size"):
        bounds.fit_to_budget(bounds.generation_schema(remote), 4000)


def test_every_builtin_schema_is_a_valid_schema_and_compiles(tokenizer) -> None:
    for schema in schemas.builtin_schemas():
        schemas.check_schema(schema.schema, schema.name)
        constrained.compile_schema(tokenizer, 512, bounds.generation_schema(schema.schema), (2,))
        assert len(schema.version) == 16


def test_user_schema_files_are_loaded_checked_and_versioned_by_content(tmp_path: Path) -> None:
    good = tmp_path / "mine.json"
    good.write_text(json.dumps(HAND_WRITTEN["enums"]))
    loaded = schemas.resolve_schema(str(good))
    assert loaded.name == "mine" and loaded.version == schemas.schema_version(HAND_WRITTEN["enums"])
    broken = tmp_path / "broken.json"
    broken.write_text('{"type": "object", "properties": {"a": {"type": "strin"}}}')
    with pytest.raises(BadInput, match="not a valid JSON Schema"):
        schemas.resolve_schema(str(broken))
    with pytest.raises(BadInput, match="Unknown schema"):
        schemas.resolve_schema("recipe")
    scalar = tmp_path / "scalar.json"
    scalar.write_text('{"type": "string"}')
    with pytest.raises(BadInput, match="object or an array"):
        schemas.resolve_schema(str(scalar))


def test_a_schema_built_from_field_names_and_types_is_valid_and_enforceable(tokenizer) -> None:
    from engine.protocol.extract import FieldSpec, schema_from_fields

    built = schema_from_fields(
        [FieldSpec("Customer"), FieldSpec("Total", "number"), FieldSpec("Paid on", "date"),
         FieldSpec("Items", "text_list", "every item bought")],
        title="Order",
    )  # fmt: skip
    loaded = schemas.resolve_schema("", inline=built)
    assert loaded.name == "Order" and loaded.source == "inline"
    constrained.compile_schema(tokenizer, 512, bounds.generation_schema(built), (2,))
    jsonschema.validate({"Customer": None, "Total": 3.5, "Paid on": None, "Items": []}, built)
    with pytest.raises(ValueError, match="different"):
        schema_from_fields([FieldSpec("a"), FieldSpec("a ")])

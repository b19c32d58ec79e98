"""Bounded generation schemas: every string, array and number gets a limit, and a size guarantee.

A grammar makes the output parse, but only limits make it end: an unbounded string or number can
run to the token limit. ``generation_schema`` adds limits where the user's schema has none (the
result is still validated against the user's own schema). ``worst_case_bytes`` says how long an
answer under a bounded schema can possibly be, and ``fit_to_budget`` tightens the limits until
that worst case fits a token budget, which guarantees that the JSON closes before the limit:
a token is at least one byte, so an answer of at most N bytes needs at most N tokens.
"""

from __future__ import annotations

import copy
import json
import math
from dataclasses import dataclass
from typing import Any

from engine.errors import BadInput

# Whitespace characters allowed at each place between JSON tokens (xgrammar's
# max_whitespace_cnt); an unbounded run is a known failure mode of grammar-constrained decoding.
MAX_WHITESPACE = 2
# A schema may carry its own whitespace allowance under this key (0 = compact JSON); the local
# backend reads and removes it before compiling, other backends never see it.
WHITESPACE_KEY = "x-visiondesk-max-whitespace"
# Every byte of a string character may be its own token, and UTF-8 needs up to four.
BYTES_PER_CHAR = 4
# Bounded numbers get at most this many decimals from xgrammar's range grammar.
NUMBER_DECIMALS = 6
_MAX_REF_DEPTH = 8


@dataclass(frozen=True)
class Limits:
    """Limits added where a schema sets none."""

    max_string: int = 400
    max_items: int = 100
    max_key: int = 80
    max_number: float = 1e12


def generation_schema(schema: dict[str, Any], limits: Limits | None = None) -> dict[str, Any]:
    """A copy of ``schema`` whose strings, arrays, maps and numbers are all bounded."""
    return _Bounder(limits or Limits()).bound(copy.deepcopy(schema))


class _Bounder:
    def __init__(self, limits: Limits) -> None:
        self.limits = limits

    def bound(self, node: Any) -> Any:
        if node is True or node == {}:
            return self._any_scalar()
        if not isinstance(node, dict):
            return node
        for key in ("$defs", "definitions"):
            if isinstance(node.get(key), dict):
                node[key] = {name: self.bound(sub) for name, sub in node[key].items()}
        for key in ("anyOf", "oneOf", "allOf", "prefixItems"):
            if isinstance(node.get(key), list):
                node[key] = [self.bound(sub) for sub in node[key]]
        types = _types(node)
        if "string" in types and not _fixed_string(node):
            node.setdefault("maxLength", self.limits.max_string)
        if types & {"number", "integer"} and "enum" not in node and "const" not in node:
            if "maximum" not in node and "exclusiveMaximum" not in node:
                node["maximum"] = _number(self.limits.max_number, types)
            if "minimum" not in node and "exclusiveMinimum" not in node:
                node["minimum"] = _number(-self.limits.max_number, types)
        if "array" in types:
            node.setdefault("maxItems", self.limits.max_items)
            if "items" in node and node["items"] is not False:
                node["items"] = self.bound(node["items"])
        if "object" in types:
            self._bound_object(node)
        return node

    def _bound_object(self, node: dict[str, Any]) -> None:
        properties = node.get("properties")
        if isinstance(properties, dict):
            node["properties"] = {name: self.bound(sub) for name, sub in properties.items()}
        extra = node.get("additionalProperties")
        # Decoding is strict: an object has the properties it names and no others, unless the
        # schema opens it explicitly (then extra values are bounded scalars).
        if extra is True and not properties:
            node["additionalProperties"] = self._any_scalar()
        elif extra is None or extra is True:
            node["additionalProperties"] = False
        if isinstance(node.get("additionalProperties"), dict):
            node["additionalProperties"] = self.bound(node["additionalProperties"])
            node.setdefault("maxProperties", self.limits.max_items)
            names = node.setdefault("propertyNames", {})
            if isinstance(names, dict) and not _fixed_string(names):
                names.setdefault("maxLength", self.limits.max_key)

    def _any_scalar(self) -> dict[str, Any]:
        return {
            "type": ["string", "number", "boolean", "null"],
            "maxLength": self.limits.max_string,
            "minimum": -self.limits.max_number,
            "maximum": self.limits.max_number,
        }


def _types(node: dict[str, Any]) -> set[str]:
    kind = node.get("type")
    if isinstance(kind, str):
        return {kind}
    if isinstance(kind, list):
        return {str(k) for k in kind}
    if "properties" in node or "additionalProperties" in node:
        return {"object"}
    if "items" in node:
        return {"array"}
    return set()


def _fixed_string(node: dict[str, Any]) -> bool:
    """Strings whose length the schema already fixes (enum, const) or that a limit would break."""
    return any(key in node for key in ("enum", "const", "pattern", "format"))


def _number(value: float, types: set[str]) -> float | int:
    return int(value) if "number" not in types else value


# ---------------------------------------------------------------------------------------------
# Worst-case size
# ---------------------------------------------------------------------------------------------


def worst_case_bytes(schema: dict[str, Any], whitespace: int = MAX_WHITESPACE) -> float:
    """The most UTF-8 bytes any JSON text the grammar of ``schema`` allows can have (or inf)."""
    return _Sizer(schema, whitespace).size(schema, 0)


class _Sizer:
    def __init__(self, root: dict[str, Any], whitespace: int) -> None:
        self.root = root
        self.ws = whitespace
        # A string without a limit (pattern, format) is closed by the decoding guard at this many
        # characters when its pattern allows it (see constrained.py).
        self.guard = guard_length(root)

    def size(self, node: Any, depth: int) -> float:
        if depth > _MAX_REF_DEPTH:
            return math.inf
        if node is True or not isinstance(node, dict):
            return math.inf if node is True else 0.0
        if "$ref" in node:
            return self.size(self._resolve(node["$ref"]), depth + 1)
        if "const" in node:
            return _json_bytes(node["const"])
        if "enum" in node:
            return max((_json_bytes(v) for v in node["enum"]), default=0.0)
        branches = [node[k] for k in ("anyOf", "oneOf") if isinstance(node.get(k), list)]
        if branches:
            return max(self.size(sub, depth + 1) for group in branches for sub in group)
        if isinstance(node.get("allOf"), list):
            return max((self.size(sub, depth + 1) for sub in node["allOf"]), default=0.0)
        types = _types(node)
        if not types:
            return math.inf
        return max(self._typed(node, kind, depth) for kind in types)

    def _typed(self, node: dict[str, Any], kind: str, depth: int) -> float:
        if kind == "null":
            return 4
        if kind == "boolean":
            return 5
        if kind in ("number", "integer"):
            return self._number(node, kind)
        if kind == "string":
            return self._string(node)
        if kind == "array":
            return self._array(node, depth)
        if kind == "object":
            return self._object(node, depth)
        return math.inf

    def _number(self, node: dict[str, Any], kind: str) -> float:
        bounds = [
            node.get(k) for k in ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum")
        ]
        given = [abs(float(b)) for b in bounds if isinstance(b, (int, float))]
        has_low = any(
            isinstance(node.get(k), (int, float)) for k in ("minimum", "exclusiveMinimum")
        )
        has_high = any(
            isinstance(node.get(k), (int, float)) for k in ("maximum", "exclusiveMaximum")
        )
        if not (has_low and has_high):
            return math.inf
        digits = len(str(int(max(given)))) + 1  # sign
        return digits + (0 if kind == "integer" else 1 + NUMBER_DECIMALS)

    def _string(self, node: dict[str, Any]) -> float:
        if node.get("format") == "date":
            return 12
        if "pattern" in node or "format" in node:
            return 2 + BYTES_PER_CHAR * self.guard
        limit = node.get("maxLength")
        if not isinstance(limit, int):
            return math.inf
        return 2 + BYTES_PER_CHAR * limit

    def _array(self, node: dict[str, Any], depth: int) -> float:
        prefix = node.get("prefixItems") or []
        total = 2.0 + 2 * self.ws
        for sub in prefix:
            total += self.size(sub, depth + 1) + 1 + 2 * self.ws
        items = node.get("items", True if not prefix else False)
        limit = node.get("maxItems")
        if items is False:
            return total
        if not isinstance(limit, int):
            return math.inf
        count = max(0, limit - len(prefix))
        if count == 0:
            return total
        return total + count * (self.size(items, depth + 1) + 1 + 2 * self.ws)

    def _object(self, node: dict[str, Any], depth: int) -> float:
        total = 2.0 + 2 * self.ws
        properties = node.get("properties") or {}
        for name, sub in properties.items():
            total += _json_bytes(name) + self.size(sub, depth + 1) + 2 + 4 * self.ws
        extra = node.get("additionalProperties", False)
        if extra is False or extra is None:
            return total
        limit = node.get("maxProperties")
        if not isinstance(limit, int):
            return math.inf
        names = node.get("propertyNames")
        key = self._string(names) if isinstance(names, dict) else math.inf
        count = max(0, limit - len(properties))
        if count == 0:
            return total
        return total + count * (key + self.size(extra, depth + 1) + 2 + 4 * self.ws)

    def _resolve(self, ref: str) -> Any:
        if not ref.startswith("#/"):
            return True  # remote references are not followed: unknown size
        node: Any = self.root
        for part in ref[2:].split("/"):
            part = part.replace("~1", "/").replace("~0", "~")
            if not isinstance(node, dict) or part not in node:
                return True
            node = node[part]
        return node


def guard_length(schema: Any) -> int:
    """Characters after which the decoding guard closes a string: beyond any maxLength in it."""
    longest = Limits().max_string
    stack = [schema]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            if isinstance(node.get("maxLength"), int):
                longest = max(longest, node["maxLength"])
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)
    return longest


def _json_bytes(value: Any) -> float:
    return float(len(json.dumps(value, ensure_ascii=False).encode("utf-8")))


# ---------------------------------------------------------------------------------------------
# Fitting a token budget
# ---------------------------------------------------------------------------------------------


def scaled(schema: dict[str, Any], factor: float) -> dict[str, Any]:
    """A copy with every maxLength/maxItems/maxProperties scaled by ``factor`` (not below minima)."""
    result = copy.deepcopy(schema)
    _scale(result, factor)
    return result


def _scale(node: Any, factor: float) -> None:
    if isinstance(node, list):
        for item in node:
            _scale(item, factor)
        return
    if not isinstance(node, dict):
        return
    for key, low_key in (
        ("maxLength", "minLength"),
        ("maxItems", "minItems"),
        ("maxProperties", "minProperties"),
    ):
        if isinstance(node.get(key), int):
            low = node.get(low_key, 0)
            if key == "maxProperties":
                low = max(low, len(node.get("required") or []))
            node[key] = max(int(low), math.floor(node[key] * factor))
    for value in node.values():
        if isinstance(value, (dict, list)):
            _scale(value, factor)


def without_optional(schema: dict[str, Any]) -> dict[str, Any]:
    """A copy in which objects keep only their required properties (still valid output)."""
    result = copy.deepcopy(schema)
    _drop_optional(result)
    return result


def _drop_optional(node: Any) -> None:
    if isinstance(node, list):
        for item in node:
            _drop_optional(item)
        return
    if not isinstance(node, dict):
        return
    properties = node.get("properties")
    if isinstance(properties, dict):
        required = set(node.get("required") or [])
        node["properties"] = {k: v for k, v in properties.items() if k in required}
    for value in node.values():
        if isinstance(value, (dict, list)):
            _drop_optional(value)


def fit_to_budget(
    schema: dict[str, Any], max_tokens: int, whitespace: int = MAX_WHITESPACE
) -> tuple[dict[str, Any], int]:
    """Tighten a bounded schema until its worst case fits ``max_tokens`` (one is kept for EOS).

    Returns the schema and its worst-case size in bytes. Raises ``BadInput`` if even the
    smallest answer the schema allows does not fit.
    """
    budget = max_tokens - 1
    if worst_case_bytes(schema, whitespace) <= budget:
        return schema, int(worst_case_bytes(schema, whitespace))
    for candidate in (schema, without_optional(schema)):
        if worst_case_bytes(scaled(candidate, 0.0), whitespace) > budget:
            continue
        low, high = 0.0, 1.0
        for _ in range(24):  # bisection on the scale factor; the size grows with it
            middle = (low + high) / 2
            if worst_case_bytes(scaled(candidate, middle), whitespace) <= budget:
                low = middle
            else:
                high = middle
        fitted = scaled(candidate, low)
        return fitted, int(worst_case_bytes(fitted, whitespace))
    smallest = worst_case_bytes(scaled(without_optional(schema), 0.0), whitespace)
    if math.isinf(smallest):
        raise BadInput(
            "The schema allows answers of unbounded size (a recursive or remote $ref), so no "
            "token limit can be guaranteed; give it a fixed depth."
        )
    raise BadInput(
        f"The schema's smallest possible answer needs up to {smallest:.0f} tokens, more than "
        f"the {max_tokens}-token limit; raise the token limit or simplify the schema."
    )

"""A local server speaking the Anthropic Messages API: ``POST /v1/messages`` (streamed as
server-sent events, tool use included) and ``GET /v1/models``, with Anthropic's error bodies."""

from __future__ import annotations

import json
from typing import Any

from tests.engine.wire.server import (
    Recorded,
    Reply,
    WireServer,
    as_json_text,
    describe,
    image_size,
    pieces,
    sse,
)

MODELS = [
    {"type": "model", "id": "claude-sonnet-5-5", "display_name": "Claude Sonnet 5.5"},
    {"type": "model", "id": "claude-haiku-4-5", "display_name": "Claude Haiku 4.5"},
]


def error(status: int, kind: str, message: str, headers: dict[str, str] | None = None) -> Reply:
    body = {"type": "error", "error": {"type": kind, "message": message}, "request_id": "req_1"}
    return Reply(status, body, headers or {})


class AnthropicServer(WireServer):
    def presented_key(self, request: Recorded) -> str | None:
        # The SDK sends the key as x-api-key or, in newer versions, as a bearer token.
        bearer = request.headers.get("authorization", "").removeprefix("Bearer ")
        return request.headers.get("x-api-key") or bearer or None

    def auth_error(self) -> Reply:
        return error(401, "authentication_error", "invalid x-api-key")

    def rate_limit(self, seconds: float) -> Reply:
        return error(429, "rate_limit_error", "Number of requests has exceeded your rate limit",
                     {"retry-after": f"{seconds}"})  # fmt: skip

    def garbage(self) -> Reply:
        return Reply(events=[b"event: message_start\ndata: {this is not json\n\n"])

    def route(self, request: Recorded) -> Reply:
        if request.method == "GET" and request.path == "/v1/models":
            return Reply(
                body={"data": MODELS, "has_more": False, "first_id": None, "last_id": None}
            )
        if request.method == "POST" and request.path == "/v1/messages":
            return self._messages(request.body)
        return error(404, "not_found_error", f"no route {request.path}")

    def _messages(self, body: dict[str, Any]) -> Reply:
        sizes = [
            image_size(block["source"]["data"])
            for message in body["messages"]
            for block in message["content"]
            if isinstance(block, dict) and block.get("type") == "image"
        ]
        question = next(
            block["text"]
            for block in reversed(body["messages"][-1]["content"])
            if block.get("type") == "text"
        )
        start = {
            "type": "message_start",
            "message": {
                "id": "msg_1", "type": "message", "role": "assistant", "model": body["model"],
                "content": [], "stop_reason": None, "stop_sequence": None,
                "usage": {"input_tokens": 37, "output_tokens": 1},
            },
        }  # fmt: skip
        events = [sse(start, "message_start"), sse({"type": "ping"}, "ping")]
        if body.get("tools"):
            block = {
                "type": "tool_use",
                "id": "toolu_1",
                "name": body["tools"][0]["name"],
                "input": {},
            }
            text = as_json_text(self.answer_json())
            deltas = [{"type": "input_json_delta", "partial_json": text[i : i + 7]}
                      for i in range(0, len(text), 7)]  # fmt: skip
            stop = "tool_use"
        else:
            block = {"type": "text", "text": ""}
            deltas = [{"type": "text_delta", "text": p} for p in pieces(describe(sizes, question))]
            stop = "end_turn"
        events.append(sse({"type": "content_block_start", "index": 0, "content_block": block},
                          "content_block_start"))  # fmt: skip
        for delta in deltas:
            events.append(sse({"type": "content_block_delta", "index": 0, "delta": delta},
                              "content_block_delta"))  # fmt: skip
        events.append(sse({"type": "content_block_stop", "index": 0}, "content_block_stop"))
        events.append(
            sse(
                {"type": "message_delta", "delta": {"stop_reason": stop, "stop_sequence": None},
                 "usage": {"output_tokens": len(deltas)}},
                "message_delta",
            )
        )  # fmt: skip
        events.append(sse({"type": "message_stop"}, "message_stop"))
        return Reply(events=events)


def tool_input(request: Recorded) -> dict[str, Any]:
    """The forced tool of a schema-mode request, for assertions."""
    tools = request.body["tools"]
    assert request.body["tool_choice"] == {"type": "tool", "name": tools[0]["name"]}
    return json.loads(json.dumps(tools[0]["input_schema"]))

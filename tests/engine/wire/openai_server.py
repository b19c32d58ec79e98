"""A local server speaking OpenAI Chat Completions as vLLM serves it: ``POST /v1/chat/completions``
(streamed chunks, usage in the last one, ``[DONE]``) and ``GET /v1/models``, with OpenAI's error
bodies and ``retry-after-ms`` on a rate limit."""

from __future__ import annotations

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


def error(
    status: int, kind: str, code: str, message: str, headers: dict[str, str] | None = None
) -> Reply:
    body = {"error": {"message": message, "type": kind, "param": None, "code": code}}
    return Reply(status, body, headers or {})


class OpenAIServer(WireServer):
    """Serves ``models`` (ids); as vLLM does, the first is the one model it serves."""

    def __init__(
        self, key: str, models: tuple[str, ...] = ("gpt-5.5", "gpt-4o", "text-embedding-3-small")
    ) -> None:
        super().__init__(key)
        self.models = models

    def presented_key(self, request: Recorded) -> str | None:
        return request.headers.get("authorization", "").removeprefix("Bearer ") or None

    def auth_error(self) -> Reply:
        # OpenAI quotes the key's ends back; the engine must not repeat it.
        return error(401, "invalid_request_error", "invalid_api_key",
                     f"Incorrect API key provided: {self.key[:3]}***. You can find your API key …")  # fmt: skip

    def rate_limit(self, seconds: float) -> Reply:
        return error(429, "requests", "rate_limit_exceeded", "Rate limit reached for requests",
                     {"retry-after-ms": str(int(seconds * 1000))})  # fmt: skip

    def garbage(self) -> Reply:
        return Reply(events=[b'data: {"id": "c1", "choices": [ broken\n\n'])

    def route(self, request: Recorded) -> Reply:
        if request.method == "GET" and request.path == "/v1/models":
            data = [{"id": m, "object": "model", "created": 1, "owned_by": "vllm", "root": m,
                     "parent": None, "max_model_len": 4096} for m in self.models]  # fmt: skip
            return Reply(body={"object": "list", "data": data})
        if request.method == "POST" and request.path == "/v1/chat/completions":
            return self._completions(request.body)
        return error(404, "invalid_request_error", "not_found", f"no route {request.path}")

    def _completions(self, body: dict[str, Any]) -> Reply:
        if body["model"] not in self.models:
            return error(404, "invalid_request_error", "model_not_found",
                         f"The model `{body['model']}` does not exist.")  # fmt: skip
        sizes = []
        for message in body["messages"]:
            content = message["content"]
            for part in content if isinstance(content, list) else []:
                if part["type"] == "image_url":
                    sizes.append(image_size(part["image_url"]["url"].split(",", 1)[1]))
        last = body["messages"][-1]["content"]
        question = (
            last if isinstance(last, str) else [p for p in last if p["type"] == "text"][-1]["text"]
        )
        if body.get("response_format", {}).get("type") == "json_schema":
            text = as_json_text(self.answer_json())
            deltas = [text[i : i + 7] for i in range(0, len(text), 7)]
        else:
            deltas = pieces(describe(sizes, question))
        events = [_chunk(body, {"role": "assistant", "content": ""})]
        events += [_chunk(body, {"content": piece}) for piece in deltas]
        events.append(_chunk(body, {}, finish="stop"))
        if body.get("stream_options", {}).get("include_usage"):
            usage = {"prompt_tokens": 41, "completion_tokens": len(deltas),
                     "total_tokens": 41 + len(deltas)}  # fmt: skip
            events.append(sse({"id": "c1", "object": "chat.completion.chunk", "created": 1,
                               "model": body["model"], "choices": [], "usage": usage}))  # fmt: skip
        events.append(b"data: [DONE]\n\n")
        return Reply(events=events)


def _chunk(body: dict[str, Any], delta: dict[str, Any], finish: str | None = None) -> bytes:
    return sse(
        {
            "id": "c1",
            "object": "chat.completion.chunk",
            "created": 1,
            "model": body["model"],
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
        }
    )

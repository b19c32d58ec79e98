"""A local server speaking the Gemini API: ``models/{m}:streamGenerateContent?alt=sse`` and
``:generateContent``, ``GET models``, with google.rpc error bodies (ErrorInfo, RetryInfo)."""

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

MODELS = [
    {"name": "models/gemini-3.8-flash", "displayName": "Gemini 3.8 Flash",
     "supportedGenerationMethods": ["generateContent", "countTokens"]},
    {"name": "models/text-embedding-004", "displayName": "Text Embedding 004",
     "supportedGenerationMethods": ["embedContent"]},
]  # fmt: skip


def error(
    status: int, rpc_status: str, message: str, details: list[dict[str, Any]] | None = None
) -> Reply:
    body = {
        "error": {
            "code": status,
            "message": message,
            "status": rpc_status,
            "details": details or [],
        }
    }
    return Reply(status, body)


class GeminiServer(WireServer):
    def presented_key(self, request: Recorded) -> str | None:
        return request.headers.get("x-goog-api-key") or (request.query.get("key") or [None])[0]

    def auth_error(self) -> Reply:
        # What Gemini really answers for a wrong key: 400 with reason API_KEY_INVALID.
        info = {"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "API_KEY_INVALID",
                "domain": "googleapis.com"}  # fmt: skip
        return error(
            400, "INVALID_ARGUMENT", "API key not valid. Please pass a valid API key.", [info]
        )

    def unauthenticated(self) -> Reply:
        return error(401, "UNAUTHENTICATED", "Request had invalid authentication credentials.")

    def rate_limit(self, seconds: float) -> Reply:
        retry = {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": f"{seconds}s"}
        return error(
            429, "RESOURCE_EXHAUSTED", "Resource has been exhausted (e.g. check quota).", [retry]
        )

    def quota_exhausted(self) -> Reply:
        failure = {"@type": "type.googleapis.com/google.rpc.QuotaFailure",
                   "violations": [{"quotaMetric": "generate_content_free_tier_requests"}]}  # fmt: skip
        return error(429, "RESOURCE_EXHAUSTED",
                     "You exceeded your current quota, please check your plan and billing details.",
                     [failure])  # fmt: skip

    def garbage(self) -> Reply:
        return Reply(events=[b'data: {"candidates": [{"content": oops\r\n\r\n'])

    def route(self, request: Recorded) -> Reply:
        path = request.path
        if request.method == "GET" and path.endswith("/models"):
            return Reply(body={"models": MODELS})
        if request.method == "POST" and ":streamGenerateContent" in path:
            return Reply(events=self._chunks(request.body))
        if request.method == "POST" and ":generateContent" in path:
            return Reply(body=self._response(request.body, self._text(request.body), "STOP"))
        return error(404, "NOT_FOUND", f"no route {path}")

    def _text(self, body: dict[str, Any]) -> str:
        if body.get("generationConfig", {}).get("responseJsonSchema") is not None:
            return as_json_text(self.answer_json())
        sizes = [
            image_size(part["inlineData"]["data"])
            for content in body["contents"]
            for part in content["parts"]
            if "inlineData" in part
        ]
        question = [part["text"] for part in body["contents"][-1]["parts"] if "text" in part][-1]
        return describe(sizes, question)

    def _chunks(self, body: dict[str, Any]) -> list[bytes]:
        words = pieces(self._text(body))
        return [
            sse(self._response(body, word, "STOP" if i == len(words) - 1 else None))
            for i, word in enumerate(words)
        ]

    def _response(self, body: dict[str, Any], text: str, finish: str | None) -> dict[str, Any]:
        candidate: dict[str, Any] = {
            "content": {"parts": [{"text": text}], "role": "model"},
            "index": 0,
        }
        if finish:
            candidate["finishReason"] = finish
        return {
            "candidates": [candidate],
            "usageMetadata": {
                "promptTokenCount": 29,
                "candidatesTokenCount": 11,
                "totalTokenCount": 40,
            },
            "modelVersion": "gemini-3.8-flash",
        }

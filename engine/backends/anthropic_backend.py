"""Claude through the official ``anthropic`` SDK: Messages API, base64 images, streaming.

Structured output uses tool use: one tool whose ``input_schema`` is the requested schema, forced
with ``tool_choice``; the tool's input is the answer.
"""

from __future__ import annotations

import json
import time
from typing import Any

from engine.backends.base import CancelCheck, TextSink
from engine.backends.cloud_common import (
    CloudBackend,
    CloudError,
    Streamed,
    classify_other,
    connection_error,
    error_for_status,
    malformed,
    object_root,
    parse_retry_after,
)
from engine.protocol import ChatMessage, Sampling
from engine.protocol import cloud as c

TOOL_NAME = "record_answer"

# An error event inside a stream arrives with HTTP 200; its type says what it means.
_ERROR_TYPE_STATUS = {
    "invalid_request_error": 400,
    "authentication_error": 401,
    "billing_error": 402,
    "permission_error": 403,
    "not_found_error": 404,
    "rate_limit_error": 429,
    "api_error": 500,
    "timeout_error": 504,
    "overloaded_error": 529,
}


class AnthropicBackend(CloudBackend):
    name = c.ANTHROPIC
    provider = c.ANTHROPIC
    max_image_edge = 1568  # Anthropic's advice: larger images are scaled down server-side anyway

    def _make_client(self) -> Any:
        import anthropic

        assert self.key is not None
        return anthropic.Anthropic(
            api_key=self.key.value,
            base_url=self.base_url,  # None: ANTHROPIC_BASE_URL or the public endpoint
            timeout=self.config.timeout_s,
            max_retries=0,  # retries are ours: bounded, honouring retry-after, cancellable
        )

    # --- request -------------------------------------------------------------------------------
    def _request(
        self, messages: list[ChatMessage], sampling: Sampling, schema: dict[str, Any] | None
    ) -> tuple[dict[str, Any], bool]:
        system = "\n\n".join(m.text for m in messages if m.role == "system" and m.text)
        turns = [self._turn(m) for m in messages if m.role != "system"]
        request: dict[str, Any] = {
            "model": self.model,
            "max_tokens": sampling.max_new_tokens,
            "messages": turns,
            "stream": True,
        }
        if system:
            request["system"] = system
        wrapped = False
        if schema is not None:
            root, wrapped = object_root(schema)
            request["tools"] = [
                {
                    "name": TOOL_NAME,
                    "description": "Record the answer as JSON that matches the input schema.",
                    "input_schema": root,
                }
            ]
            request["tool_choice"] = {"type": "tool", "name": TOOL_NAME}
        return request, wrapped

    def _turn(self, message: ChatMessage) -> dict[str, Any]:
        content: list[dict[str, Any]] = []
        for part in self.attachments(message):
            kind = "document" if part.is_pdf else "image"
            content.append(
                {
                    "type": kind,
                    "source": {"type": "base64", "media_type": part.media_type, "data": part.data},
                }
            )
        if message.text or not content:  # the API refuses empty text blocks
            content.append({"type": "text", "text": message.text or " "})
        return {"role": message.role, "content": content}

    def _stream(
        self,
        messages: list[ChatMessage],
        sampling: Sampling,
        on_text: TextSink,
        cancelled: CancelCheck,
        schema: dict[str, Any] | None,
    ) -> Streamed:
        request, wrapped = self._request(messages, sampling, schema)
        out = Streamed(text="")
        texts: list[str] = []
        tool_json: list[str] = []
        started = stopped = False
        stop_reason: str | None = None
        stream = self._client().messages.create(**request)
        try:
            for event in stream:
                if cancelled():
                    out.reason = "cancelled"
                    break
                kind = event.type
                if kind == "message_start":
                    started = True
                    out.input_tokens = int(event.message.usage.input_tokens or 0)
                elif kind == "content_block_start" and event.content_block.type == "tool_use":
                    initial = getattr(event.content_block, "input", None)
                    if initial:
                        tool_json.append(json.dumps(initial))
                elif kind == "content_block_delta":
                    delta = event.delta
                    if delta.type == "text_delta":
                        out.first_token_at = out.first_token_at or time.perf_counter()
                        texts.append(delta.text)
                        on_text(delta.text)
                    elif delta.type == "input_json_delta":
                        out.first_token_at = out.first_token_at or time.perf_counter()
                        tool_json.append(delta.partial_json)
                elif kind == "message_delta":
                    stop_reason = event.delta.stop_reason
                    out.output_tokens = int(event.usage.output_tokens or 0)
                elif kind == "message_stop":
                    stopped = True
        finally:
            stream.close()
        if out.reason == "cancelled":
            out.text = "".join(texts)
            return out
        if not started or not stopped:
            raise malformed(self.label, "the stream ended before the message was complete")
        if stop_reason == "refusal":
            raise CloudError(f"{self.label} declined to answer this request.", c.CONTENT_REFUSED)
        if stop_reason in ("max_tokens", "model_context_window_exceeded"):
            out.reason = "length"
        out.text = "".join(texts)
        if schema is not None and tool_json:
            out.text = _tool_answer("".join(tool_json), wrapped)
        return out

    # --- errors and models ---------------------------------------------------------------------
    def _classify(self, exc: BaseException) -> CloudError:
        import anthropic

        if isinstance(exc, anthropic.APIStatusError):
            body = exc.body if isinstance(exc.body, dict) else {}
            error = body.get("error", body) if isinstance(body, dict) else {}
            kind = str(error.get("type", "")) if isinstance(error, dict) else ""
            message = str(error.get("message", "")) if isinstance(error, dict) else str(exc)
            status = exc.status_code
            if status < 400:
                status = _ERROR_TYPE_STATUS.get(kind, 500)
            return error_for_status(
                self.label,
                status,
                message,
                kind,
                parse_retry_after(exc.response.headers),
                key_hint=self.key_hint,
            )
        if isinstance(exc, anthropic.APIConnectionError):
            return connection_error(self.label, exc, self.config.timeout_s)
        if isinstance(exc, anthropic.APIResponseValidationError):
            return malformed(self.label, exc)
        return classify_other(self.label, exc, self.config)

    def list_models(self) -> list[dict[str, str]]:
        page = self._client().models.list(limit=100)
        return [{"id": m.id, "label": getattr(m, "display_name", None) or m.id} for m in page]


def _tool_answer(raw: str, wrapped: bool) -> str:
    """The forced tool's input as JSON text (unwrapped when the schema's root was wrapped)."""
    try:
        data = json.loads(raw)
    except json.JSONDecodeError:
        return raw  # validation reports it, and the repair turn gets a chance
    if wrapped and isinstance(data, dict) and "value" in data:
        data = data["value"]
    return json.dumps(data, ensure_ascii=False)

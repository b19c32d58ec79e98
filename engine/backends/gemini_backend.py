"""Gemini through the official ``google-genai`` SDK: inline image parts, streaming.

Structured output uses ``response_mime_type="application/json"`` with ``response_json_schema``
(the schema, lightly adapted); the answer is validated like every other backend's.
"""

from __future__ import annotations

import base64
import json
import time
from typing import Any

from engine.backends.base import CancelCheck, TextSink
from engine.backends.cloud_common import (
    CloudBackend,
    CloudError,
    Streamed,
    classify_other,
    error_for_status,
    gemini_schema,
    malformed,
    parse_retry_after,
)
from engine.protocol import ChatMessage, Sampling
from engine.protocol import cloud as c

_REFUSALS = frozenset(
    {
        "SAFETY", "RECITATION", "BLOCKLIST", "PROHIBITED_CONTENT", "SPII", "IMAGE_SAFETY",
        "IMAGE_PROHIBITED_CONTENT", "MODEL_ARMOR", "JAILBREAK",
    }
)  # fmt: skip


class GeminiBackend(CloudBackend):
    name = c.GEMINI
    provider = c.GEMINI
    max_image_edge = 3072

    def _make_client(self) -> Any:
        from google import genai
        from google.genai import types

        assert self.key is not None
        options = types.HttpOptions(
            base_url=self.base_url,  # None: GOOGLE_GEMINI_BASE_URL or the public endpoint
            timeout=int(self.config.timeout_s * 1000),  # milliseconds
            retry_options=None,  # retries are ours: bounded, honouring retry-after, cancellable
        )
        return genai.Client(api_key=self.key.value, http_options=options)

    # --- request -------------------------------------------------------------------------------
    def _request(
        self, messages: list[ChatMessage], sampling: Sampling, schema: dict[str, Any] | None
    ) -> tuple[list[Any], Any]:
        from google.genai import types

        system = "\n\n".join(m.text for m in messages if m.role == "system" and m.text)
        contents = [self._content(m) for m in messages if m.role != "system"]
        config: dict[str, Any] = {
            "max_output_tokens": sampling.max_new_tokens,
            "temperature": sampling.temperature,
        }
        if system:
            config["system_instruction"] = system
        if sampling.top_p < 1.0:
            config["top_p"] = sampling.top_p
        if sampling.seed is not None:
            config["seed"] = sampling.seed
        if schema is not None:
            config["response_mime_type"] = "application/json"
            config["response_json_schema"] = gemini_schema(schema)
        return contents, types.GenerateContentConfig(**config)

    def _content(self, message: ChatMessage) -> Any:
        from google.genai import types

        parts = [
            types.Part.from_bytes(data=base64.b64decode(part.data), mime_type=part.media_type)
            for part in self.attachments(message)
        ]
        if message.text or not parts:
            parts.append(types.Part.from_text(text=message.text or " "))
        return types.Content(role="model" if message.role == "assistant" else "user", parts=parts)

    def _stream(
        self,
        messages: list[ChatMessage],
        sampling: Sampling,
        on_text: TextSink,
        cancelled: CancelCheck,
        schema: dict[str, Any] | None,
    ) -> Streamed:
        contents, config = self._request(messages, sampling, schema)
        out = Streamed(text="")
        texts: list[str] = []
        finish: str | None = None
        stream = self._client().models.generate_content_stream(
            model=self.model, contents=contents, config=config
        )
        try:
            for chunk in stream:
                if cancelled():
                    out.reason = "cancelled"
                    break
                feedback = chunk.prompt_feedback
                if feedback is not None and feedback.block_reason:
                    raise CloudError(
                        f"{self.label} blocked this request ({_name(feedback.block_reason)}).",
                        c.CONTENT_REFUSED,
                    )
                usage = chunk.usage_metadata
                if usage is not None:
                    out.input_tokens = int(usage.prompt_token_count or 0) or out.input_tokens
                    out.output_tokens = int(usage.candidates_token_count or 0) or out.output_tokens
                for candidate in chunk.candidates or []:
                    for part in (candidate.content.parts if candidate.content else None) or []:
                        if part.text and not part.thought:
                            out.first_token_at = out.first_token_at or time.perf_counter()
                            texts.append(part.text)
                            on_text(part.text)
                    if candidate.finish_reason:
                        finish = _name(candidate.finish_reason)
        finally:
            close = getattr(stream, "close", None)
            if close is not None:
                close()
        out.text = "".join(texts)
        if out.reason == "cancelled":
            return out
        if finish in _REFUSALS:
            raise CloudError(f"{self.label} declined to answer ({finish}).", c.CONTENT_REFUSED)
        if finish is None:
            raise malformed(self.label, "the stream ended without a finish reason")
        if finish == "MAX_TOKENS":
            out.reason = "length"
        return out

    # --- errors and models ---------------------------------------------------------------------
    def _classify(self, exc: BaseException) -> CloudError:
        from google.genai import errors

        if isinstance(exc, errors.APIError):
            details = exc.details if isinstance(exc.details, dict) else {}
            error = details.get("error", details) if isinstance(details, dict) else {}
            reasons, retry_delay = _detail_info(
                error.get("details") if isinstance(error, dict) else None
            )
            headers = getattr(getattr(exc, "response", None), "headers", None)
            retry_after = retry_delay if retry_delay is not None else parse_retry_after(headers)
            kind = " ".join([str(exc.status or ""), *reasons])
            return error_for_status(
                self.label,
                int(exc.code or 500),
                str(exc.message or ""),
                kind,
                retry_after,
                key_hint=self.key_hint,
            )
        if isinstance(exc, json.JSONDecodeError):
            return malformed(self.label, exc)
        return classify_other(self.label, exc, self.config)

    def list_models(self) -> list[dict[str, str]]:
        found = []
        for model in self._client().models.list():
            actions = model.supported_actions or []
            if actions and "generateContent" not in actions:
                continue
            model_id = (model.name or "").removeprefix("models/")
            found.append({"id": model_id, "label": model.display_name or model_id})
        return found


def _name(value: Any) -> str:
    return str(getattr(value, "value", value))


def _detail_info(details: object) -> tuple[list[str], float | None]:
    """Reasons (e.g. API_KEY_INVALID) and a RetryInfo delay from google.rpc error details."""
    reasons: list[str] = []
    delay: float | None = None
    for item in details if isinstance(details, list) else []:
        if not isinstance(item, dict):
            continue
        if item.get("reason"):
            reasons.append(str(item["reason"]))
        if str(item.get("@type", "")).endswith("RetryInfo"):
            text = str(item.get("retryDelay", "")).removesuffix("s")
            try:
                delay = float(text)
            except ValueError:
                pass
    return reasons, delay

"""OpenAI through the official ``openai`` SDK (Chat Completions, image parts, streaming), and the
same client pointed at any OpenAI-compatible server: vLLM, TGI, Ollama, LM Studio.

Structured output uses ``response_format`` json_schema in strict mode, with the schema adapted to
the strict subset (optional properties become nullable; the nulls are removed again afterwards).
"""

from __future__ import annotations

import json
import time
from typing import Any

from engine.backends.base import CancelCheck, TextSink
from engine.backends.cloud_common import (
    CloudBackend,
    CloudError,
    NotStrict,
    Streamed,
    classify_other,
    connection_error,
    drop_added_nulls,
    error_for_status,
    malformed,
    object_root,
    parse_retry_after,
    strict_schema,
)
from engine.errors import BadInput
from engine.protocol import ChatMessage, Sampling
from engine.protocol import cloud as c

# Ids in OpenAI's list that are not chat models with vision (embeddings, audio, images, …).
_CHAT_PREFIXES = ("gpt-4o", "gpt-4.1", "gpt-5", "gpt-6", "o1", "o3", "o4", "chatgpt-4o")


class OpenAIBackend(CloudBackend):
    name = c.OPENAI
    provider = c.OPENAI
    max_image_edge = 2048  # "high" detail tiles images within 2048 × 2048

    def _make_client(self) -> Any:
        import openai

        return openai.OpenAI(
            api_key=self.key.value if self.key else "EMPTY",  # local servers often want none
            base_url=self.base_url,  # None: OPENAI_BASE_URL or the public endpoint
            timeout=self.config.timeout_s,
            max_retries=0,  # retries are ours: bounded, honouring retry-after, cancellable
        )

    # --- request -------------------------------------------------------------------------------
    def _request(
        self, messages: list[ChatMessage], sampling: Sampling, schema: dict[str, Any] | None
    ) -> tuple[dict[str, Any], bool]:
        request: dict[str, Any] = {
            "model": self.model,
            "messages": [self._message(m) for m in messages],
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        if sampling.temperature > 0 or self.send_greedy_temperature:
            request["temperature"] = sampling.temperature
        request[self._max_tokens_field] = sampling.max_new_tokens
        if sampling.top_p < 1.0:
            request["top_p"] = sampling.top_p
        if sampling.seed is not None:
            request["seed"] = sampling.seed
        wrapped = False
        if schema is not None:
            root, wrapped = object_root(schema)
            try:
                adapted, strict = strict_schema(root), True
            except NotStrict:  # e.g. a free-form map: send it as is and validate afterwards
                adapted, strict = root, False
            request["response_format"] = {
                "type": "json_schema",
                "json_schema": {"name": "answer", "schema": adapted, "strict": strict},
            }
        return request, wrapped

    # OpenAI's newer models take only max_completion_tokens; servers like vLLM know max_tokens.
    _max_tokens_field = "max_completion_tokens"
    # OpenAI's reasoning models refuse any temperature but their default, so greedy (0) is
    # not sent there; serving engines default to 1.0, so there it must be.
    send_greedy_temperature = False

    def _message(self, message: ChatMessage) -> dict[str, Any]:
        if message.role != "user":
            return {"role": message.role, "content": message.text}
        content: list[dict[str, Any]] = []
        for part in self.attachments(message):
            if part.is_pdf:
                content.append(
                    {"type": "file", "file": {"filename": part.name, "file_data": part.data_url}}
                )
            else:
                content.append({"type": "image_url", "image_url": {"url": part.data_url}})
        content.append({"type": "text", "text": message.text})
        return {"role": "user", "content": content}

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
        refusal: list[str] = []
        finish: str | None = None
        stream = self._client().chat.completions.create(**request)
        try:
            for chunk in stream:
                if cancelled():
                    out.reason = "cancelled"
                    break
                if chunk.usage is not None:
                    out.input_tokens = int(chunk.usage.prompt_tokens or 0)
                    out.output_tokens = int(chunk.usage.completion_tokens or 0)
                for choice in chunk.choices or []:
                    delta = choice.delta
                    if delta is not None and delta.content:
                        out.first_token_at = out.first_token_at or time.perf_counter()
                        texts.append(delta.content)
                        on_text(delta.content)
                    if delta is not None and getattr(delta, "refusal", None):
                        refusal.append(delta.refusal)
                    finish = choice.finish_reason or finish
        finally:
            stream.close()
        out.text = "".join(texts)
        if out.reason == "cancelled":
            return out
        if refusal or finish == "content_filter":
            said = "".join(refusal).strip()
            raise CloudError(
                f"{self.label} declined to answer this request" + (f": {said}" if said else "."),
                c.CONTENT_REFUSED,
            )
        if finish is None:
            raise malformed(self.label, "the stream ended without a finish reason")
        if finish == "length":
            out.reason = "length"
        if schema is not None:
            out.text = _schema_answer(out.text, schema, wrapped)
        return out

    # --- errors and models ---------------------------------------------------------------------
    def _classify(self, exc: BaseException) -> CloudError:
        import openai

        if isinstance(exc, openai.APIStatusError):
            kind, message = _error_fields(exc.body, str(exc))
            return error_for_status(
                self.label,
                exc.status_code,
                message,
                kind,
                parse_retry_after(exc.response.headers),
                key_hint=self.key_hint,
            )
        if isinstance(exc, openai.APIConnectionError):
            return connection_error(self.label, exc, self.config.timeout_s)
        if isinstance(exc, openai.APIResponseValidationError):
            return malformed(self.label, exc)
        if isinstance(exc, openai.APIError):  # an error object inside a 200 stream
            kind, message = _error_fields(exc.body, exc.message)
            status = 429 if "rate_limit" in kind else 500
            return error_for_status(self.label, status, message, kind, key_hint=self.key_hint)
        return classify_other(self.label, exc, self.config)

    def list_models(self) -> list[dict[str, str]]:
        ids = sorted(m.id for m in self._client().models.list())
        ids = [i for i in ids if i.startswith(_CHAT_PREFIXES)] or ids
        return [{"id": i, "label": i} for i in ids]


class RemoteBackend(OpenAIBackend):
    """Your own OpenAI-compatible server; the token is optional, the URL is not."""

    name = c.REMOTE
    provider = c.REMOTE
    needs_key = False
    key_hint = "Check the token in Settings → Remote server."
    _max_tokens_field = "max_tokens"
    send_greedy_temperature = True

    def __init__(self, model: str | None = None, **kwargs: Any) -> None:
        base_url = kwargs.pop("base_url", None)
        if not base_url:
            raise BadInput("The remote server needs a URL, e.g. http://gpu-box:8000/v1.")
        super().__init__(model, base_url=normalise_base_url(base_url), **kwargs)

    @property
    def label(self) -> str:
        return f"Remote server {self.base_url}"

    def default_model(self) -> str:
        """A serving engine usually serves one model: take the first it lists."""
        models = self.available_models()
        if not models:
            raise CloudError(
                f"{self.label} lists no models; name one in Settings → Remote server.",
                c.MALFORMED_RESPONSE,
            )
        return models[0]["id"]

    def list_models(self) -> list[dict[str, str]]:
        return [{"id": m.id, "label": m.id} for m in self._client().models.list()]


def normalise_base_url(url: str) -> str:
    """``http://host:8000`` and ``http://host:8000/v1/`` both mean ``http://host:8000/v1``."""
    url = url.strip().rstrip("/")
    if "://" not in url:
        url = f"http://{url}"
    return url if url.endswith("/v1") or "/v1/" in url else f"{url}/v1"


def _error_fields(body: object, fallback: str) -> tuple[str, str]:
    if isinstance(body, dict):
        error = body.get("error", body)
        if isinstance(error, dict):
            kind = " ".join(str(error.get(k) or "") for k in ("type", "code")).strip()
            return kind, str(error.get("message") or fallback)
    return "", fallback


def _schema_answer(text: str, schema: dict[str, Any], wrapped: bool) -> str:
    """Undo the adaptation: unwrap a wrapped root and drop nulls added to optional properties."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError:
        return text  # validation reports it, and the repair turn gets a chance
    if wrapped and isinstance(data, dict) and "value" in data:
        data = data["value"]
    return json.dumps(drop_added_nulls(data, schema), ensure_ascii=False)

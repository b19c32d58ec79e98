"""Messages of the cloud capability (commands and events), added to the unions by the package.

Also the vocabulary both sides share about cloud and remote backends: provider names, routing
policies, default models and the error codes a cloud job can end with. Keys never travel in
this protocol: the desktop stores them in the OS keyring and the engine reads them from there.
"""

from __future__ import annotations

from engine.protocol.base import Command, ErrorCode, Event  # noqa: F401

# --- providers and policies -------------------------------------------------------------------

ANTHROPIC = "anthropic"
OPENAI = "openai"
GEMINI = "gemini"
REMOTE = "remote"  # any OpenAI-compatible server: vLLM, TGI, Ollama, LM Studio
LOCAL = "local"

CLOUD_PROVIDERS = (ANTHROPIC, OPENAI, GEMINI)
PROVIDERS = (*CLOUD_PROVIDERS, REMOTE)

PROVIDER_LABELS = {
    ANTHROPIC: "Claude",
    OPENAI: "OpenAI",
    GEMINI: "Gemini",
    REMOTE: "Remote server",
    LOCAL: "Local model",
}

# Sensible defaults when the provider's own model list is not at hand.
DEFAULT_MODELS = {
    ANTHROPIC: "claude-sonnet-5-5",
    OPENAI: "gpt-5.5",
    GEMINI: "gemini-3.8-flash",
}

# Names of the environment variables honoured as a fallback when the keyring holds no key.
KEY_ENVIRONMENT = {
    ANTHROPIC: ("ANTHROPIC_API_KEY",),
    OPENAI: ("OPENAI_API_KEY",),
    GEMINI: ("GOOGLE_API_KEY", "GEMINI_API_KEY"),  # the SDK prefers GOOGLE_API_KEY
    REMOTE: ("VISIONDESK_REMOTE_TOKEN",),
}

# The keyring entry of a provider: service KEYRING_SERVICE, username = provider name.
KEYRING_SERVICE = "VisionDesk"

LOCAL_ONLY = "local_only"
LOCAL_THEN_ASK = "local_then_ask"
LOCAL_THEN_CLOUD = "local_then_cloud"
CLOUD_ONLY = "cloud_only"
REMOTE_SERVER = "remote"

POLICIES = (LOCAL_ONLY, LOCAL_THEN_ASK, LOCAL_THEN_CLOUD, CLOUD_ONLY, REMOTE_SERVER)
DEFAULT_POLICY = LOCAL_ONLY

POLICY_LABELS = {
    LOCAL_ONLY: "Local only",
    LOCAL_THEN_ASK: "Local, then ask before cloud",
    LOCAL_THEN_CLOUD: "Local, then cloud",
    CLOUD_ONLY: "Cloud only",
    REMOTE_SERVER: "Remote server",
}

# --- error codes (``Finished.error_code``) -----------------------------------------------------

INVALID_KEY = "invalid_key"
MISSING_KEY = "missing_key"
RATE_LIMITED = "rate_limited"
QUOTA_EXHAUSTED = "quota_exhausted"
CONTENT_REFUSED = "content_refused"
NETWORK_DOWN = "network_down"
SERVER_ERROR = "server_error"
TIMEOUT = "timeout"
MALFORMED_RESPONSE = "malformed_response"
# "local, then ask": the local model could not answer; sending needs the user's yes.
CONSENT_NEEDED = "cloud_consent_needed"

CLOUD_ERROR_CODES = frozenset(
    {
        INVALID_KEY,
        MISSING_KEY,
        RATE_LIMITED,
        QUOTA_EXHAUSTED,
        CONTENT_REFUSED,
        NETWORK_DOWN,
        SERVER_ERROR,
        TIMEOUT,
        MALFORMED_RESPONSE,
        CONSENT_NEEDED,
        ErrorCode.CLOUD_NOT_ALLOWED,
        ErrorCode.CLOUD_FAILED,
    }
)


# --- commands ----------------------------------------------------------------------------------


class TestConnection(Command, tag="test_connection"):
    """Check that a provider answers with the stored key (lists its models; costs no tokens).

    Result: ``{"provider", "ok": True, "models": int, "seconds"}``; a failure ends the job with
    one of the cloud error codes above.
    """

    __test__ = False  # not a pytest test class, despite its name

    job_id: str
    provider: str  # anthropic | openai | gemini | remote
    base_url: str | None = None  # required for remote; an override for the others


class ListProviderModels(Command, tag="list_provider_models"):
    """The provider's model list. Result: ``{"provider", "models": [{"id", "label"}], "default"}``."""

    job_id: str
    provider: str
    base_url: str | None = None

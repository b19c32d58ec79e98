"""Cloud and remote settings, declared once with defaults and descriptions and kept in QSettings;
API keys kept in the OS keyring (never in QSettings, never shown again once saved)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from PySide6.QtCore import QSettings

from engine import protocol as p
from engine.protocol import cloud as c

T = TypeVar("T")


@dataclass(frozen=True)
class Setting(Generic[T]):
    key: str
    default: T
    description: str


POLICY = Setting(
    "cloud/policy",
    c.DEFAULT_POLICY,
    "Where requests may be answered: locally only (the default), locally with a cloud fallback "
    "(asked or automatic), always in the cloud, or on your own server.",
)
CLOUD_PROVIDER = Setting(
    "cloud/provider", c.ANTHROPIC, "The cloud provider that answers when the policy allows one."
)
PROVIDER_MODELS = {
    provider: Setting(
        f"cloud/{provider}/model",
        c.DEFAULT_MODELS[provider],
        f"The {c.PROVIDER_LABELS[provider]} model to use.",
    )
    for provider in c.CLOUD_PROVIDERS
}
REMOTE_URL = Setting(
    "remote/url", "", "Your OpenAI-compatible server (vLLM, TGI, Ollama, LM Studio), e.g. "
    "http://gpu-box:8000/v1.",
)  # fmt: skip
REMOTE_MODEL = Setting(
    "remote/model", "", "The model on your server; empty: the first one the server lists."
)

COMPANIES = {c.ANTHROPIC: "Anthropic", c.OPENAI: "OpenAI", c.GEMINI: "Google"}

DECODING = Setting(
    "engine/decoding",
    "auto",
    "How local models generate: the engine's fast loop on NVIDIA GPUs (a static KV cache and "
    "CUDA graphs), or transformers' own generate, for troubleshooting a model that answers "
    "differently on the GPU. Applies when the engine next starts.",
)
DECODING_CHOICES = {
    "auto": "Fast on NVIDIA GPUs (recommended)",
    "generate": "transformers' generate (troubleshooting)",
}
IDLE_UNLOAD = Setting(
    "engine/idle_unload_minutes",
    "0",
    "Give the GPU memory back once the model has had nothing to do for this long (for games or "
    "other apps); the next question loads it again, which takes a few seconds.",
)
IDLE_UNLOAD_CHOICES = {
    "0": "Never (keep the model loaded)",
    "5": "After 5 minutes idle",
    "15": "After 15 minutes idle",
    "60": "After an hour idle",
}
# Pictures for local models that read them at their own resolution (the Qwen2-VL family).
PICTURE_DETAIL = Setting(
    "engine/image_max_pixels",
    str(p.CHAT_IMAGE_MAX_PIXELS),
    "For local models that read a picture at its own resolution (the Qwen2-VL family): more "
    "pixels read smaller print, but the answer starts later and takes more memory. Other "
    "models resize every picture to their fixed size.",
)
PICTURE_DETAIL_CHOICES = {
    str(p.CHAT_IMAGE_MAX_PIXELS): "Standard: up to 1 megapixel (about 1,300 image tokens)",
    str(2 * p.CHAT_IMAGE_MAX_PIXELS): "Fine: up to 2 megapixels (small print)",
    str(4 * p.CHAT_IMAGE_MAX_PIXELS): "Finest: up to 4 megapixels (slow; needs more memory)",
}

# How chat answers are written (local models and cloud alike).
ANSWER_TOKENS = Setting(
    "chat/max_new_tokens", "1024", "The longest answer, in tokens (about ¾ of a word each)."
)
TEMPERATURE = Setting(
    "chat/temperature",
    "0",
    "0 always takes the likeliest next word (the same answer every time, best for reading "
    "documents); higher values vary the wording more.",
)
REPETITION_PENALTY = Setting(
    "chat/repetition_penalty",
    "1",
    "Above 1 discourages repeating words already written: helps small models that loop.",
)
SYSTEM_PROMPT = Setting(
    "chat/system_prompt",
    "",
    "Instructions the model reads before every conversation, e.g. “Answer in French.” Empty: none.",
)
ANSWER_TOKENS_RANGE = (16, 8192)
TEMPERATURE_RANGE = (0.0, 2.0)
REPETITION_PENALTY_RANGE = (1.0, 2.0)


class CloudSettings:
    """Typed access to the declared settings, persisted in a ``QSettings``."""

    def __init__(self, settings: QSettings) -> None:
        self.qsettings = settings

    def get(self, setting: Setting[str]) -> str:
        value = self.qsettings.value(setting.key, setting.default)
        return str(value) if value is not None else setting.default

    def set(self, setting: Setting[str], value: str) -> None:
        self.qsettings.setValue(setting.key, value)
        self.qsettings.sync()

    @property
    def policy(self) -> str:
        policy = self.get(POLICY)
        return policy if policy in c.POLICIES else c.DEFAULT_POLICY

    @property
    def provider(self) -> str:
        provider = self.get(CLOUD_PROVIDER)
        return provider if provider in c.CLOUD_PROVIDERS else CLOUD_PROVIDER.default

    def model_for(self, provider: str) -> str:
        return self.get(PROVIDER_MODELS[provider]) if provider in PROVIDER_MODELS else ""

    def choice(self, setting: Setting[str], choices: dict[str, str]) -> str:
        """A setting offered as a list; its default where the stored value is not offered."""
        value = self.get(setting)
        return value if value in choices else setting.default

    @property
    def decoding(self) -> str:
        return self.choice(DECODING, DECODING_CHOICES)

    def number(self, setting: Setting[str], bounds: tuple[float, float]) -> float:
        """A numeric setting within ``bounds``; its default where the stored text is no number."""
        try:
            value = float(self.get(setting))
        except ValueError:
            value = float(setting.default)
        return min(max(value, bounds[0]), bounds[1])

    def sampling(self) -> p.Sampling:
        """How chat answers are generated, from the Settings."""
        return p.Sampling(
            temperature=self.number(TEMPERATURE, TEMPERATURE_RANGE),
            max_new_tokens=int(self.number(ANSWER_TOKENS, ANSWER_TOKENS_RANGE)),
            repetition_penalty=self.number(REPETITION_PENALTY, REPETITION_PENALTY_RANGE),
        )

    @property
    def system_prompt(self) -> str:
        return self.get(SYSTEM_PROMPT).strip()

    @property
    def image_max_pixels(self) -> int:
        return int(self.choice(PICTURE_DETAIL, PICTURE_DETAIL_CHOICES))

    @property
    def idle_unload_minutes(self) -> int:
        return int(self.choice(IDLE_UNLOAD, IDLE_UNLOAD_CHOICES))

    def engine_environment(self) -> dict[str, str]:
        """Variables the engine process is started with."""
        return {"VISIONDESK_DECODE": self.decoding}

    def routing_fields(self, policy: str | None = None, never_send: bool = False) -> dict[str, Any]:
        """The routing fields of a ``Chat`` (or any job command that takes them)."""
        policy = policy or self.policy
        if policy == c.LOCAL_ONLY:
            return {"backend": None, "backend_model": None, "base_url": None,
                    "policy": policy, "never_send": never_send}  # fmt: skip
        if policy == c.REMOTE_SERVER:
            return {"backend": c.REMOTE, "backend_model": self.get(REMOTE_MODEL) or None,
                    "base_url": self.get(REMOTE_URL) or None, "policy": policy,
                    "never_send": never_send}  # fmt: skip
        provider = self.provider
        return {"backend": provider, "backend_model": self.model_for(provider) or None,
                "base_url": None, "policy": policy, "never_send": never_send}  # fmt: skip


def effective_policy(
    global_policy: str, conversation: str | None = None, document: str | None = None
) -> str:
    """A document's own policy wins over its conversation's, which wins over the global one."""
    return document or conversation or global_policy


def describe_sending(policy: str, provider: str, model: str, remote_url: str) -> str:
    """One plain sentence (or three) saying what will be sent where under these settings."""
    where = (
        f"{c.PROVIDER_LABELS[provider]} ({model or 'its default model'}) at {COMPANIES[provider]}"
    )
    what = "the request — its text and attached images or document pages —"
    never = " Anything marked “never send” stays on this computer whatever the policy."
    if policy == c.LOCAL_ONLY:
        return "Nothing leaves this computer: every request is answered by the local model."
    if policy == c.LOCAL_THEN_ASK:
        return (f"Requests are answered by the local model. If it cannot answer, VisionDesk asks "
                f"you before sending {what} to {where}." + never)  # fmt: skip
    if policy == c.LOCAL_THEN_CLOUD:
        return (f"Requests are answered by the local model. If it cannot answer (no usable GPU, "
                f"model not installed, out of memory, an error), {what} is sent to {where} "
                "without asking." + never)  # fmt: skip
    if policy == c.CLOUD_ONLY:
        return (
            f"Every request — its text and attached images or document pages — is sent to {where}."
            + never
        )
    if not remote_url:
        return "Nothing is sent until you enter your server's URL below." + never
    return (f"Every request — its text and attached images or document pages — is sent to your "
            f"server at {remote_url}." + never)  # fmt: skip


class KeyStoreError(RuntimeError):
    """The system keyring refused; the message says what to do instead."""


class KeyStore:
    """API keys in the OS keyring: service ``VisionDesk``, username = provider name.

    The window writes and deletes keys; it never reads one back to show it (``has_key`` only
    learns whether one exists). The engine reads them itself, when a job needs one.
    """

    def __init__(self, backend: Any = None) -> None:
        self._backend = backend  # a keyring backend; None: the system's default keyring

    def _ring(self) -> Any:
        if self._backend is not None:
            return self._backend
        import keyring

        return keyring.get_keyring()

    def save(self, provider: str, key: str) -> None:
        key = key.strip()
        if not key:
            raise KeyStoreError("The key is empty.")
        try:
            self._ring().set_password(c.KEYRING_SERVICE, provider, key)
        except Exception as exc:  # keyring backends raise many kinds of errors
            raise KeyStoreError(_keyring_advice(provider, exc)) from exc

    def forget(self, provider: str) -> None:
        try:
            self._ring().delete_password(c.KEYRING_SERVICE, provider)
        except Exception:  # nothing stored is fine: the result is the same
            pass

    def has_key(self, provider: str) -> bool:
        try:
            return bool(self._ring().get_password(c.KEYRING_SERVICE, provider))
        except Exception:
            return False


def _keyring_advice(provider: str, exc: Exception) -> str:
    names = " or ".join(c.KEY_ENVIRONMENT.get(provider, ()))
    fallback = f" Set {names} in the environment instead." if names else ""
    return f"The system keyring could not store the key ({type(exc).__name__}).{fallback}"

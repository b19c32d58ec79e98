"""Chat logic: the open conversation, the draft's attachments, sending, streaming, stop and retry."""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from PySide6.QtCore import QObject, QTimer, Signal, Slot
from PySide6.QtGui import QImage, QImageReader

from desktop import paths
from desktop.engine_client import EngineClient
from desktop.state.model_catalog import ModelChoice
from desktop.storage import Attachment, Conversation, Message, MessageStatus, Storage
from engine import protocol as p
from engine.protocol import extract as px
from engine.protocol.cloud import CLOUD_ONLY, CONSENT_NEEDED
from engine.protocol.wording import counted

log = logging.getLogger("visiondesk.chat")

_TITLE_LENGTH = 48
PDF_PAGES = 4  # a PDF dropped on the chat goes as pictures of its first pages
PDF_LONG_SIDE = 1600  # pixels on a page's long side: small print stays legible
# An answer's provenance key: the attachments (by hash) its engine could not read.
UNREADABLE = "unreadable_pictures"


def auto_title(text: str) -> str:
    """A new conversation's name: its first question's first line, shortened."""
    title = text.strip().splitlines()[0] if text.strip() else "Image"
    return title if len(title) <= _TITLE_LENGTH else title[: _TITLE_LENGTH - 1] + "…"


# Picture formats that both this window (for the thumbnail) and the engine (Pillow) read. Qt also
# draws SVG, XBM, XPM, ICNS and WBMP, which the engine cannot open.
PICTURE_FORMATS = frozenset(
    {"png", "jpeg", "jpg", "jfif", "webp", "gif", "bmp", "tif", "tiff", "ico", "cur", "tga",
     "ppm", "pgm", "pbm"}
)  # fmt: skip


def attachment_problem(path: Path) -> str:
    """Why a file cannot go with a chat message, in a few words; "" if it can."""
    path = Path(path)
    reader = QImageReader(str(path))
    if not path.is_file() or not reader.canRead():
        return "not an image"
    kind = bytes(reader.format().data()).decode(errors="replace")
    if kind not in PICTURE_FORMATS:
        return f"{kind.upper()} pictures cannot be read by the models; save it as PNG or JPEG"
    size = reader.size()  # read from the header, without decoding
    if not size.isValid():
        return "damaged: its size cannot be read"
    if size.width() * size.height() > p.MAX_IMAGE_PIXELS:
        return f"{size.width()}×{size.height()} pixels, more than a picture can sensibly have"
    size_bytes = path.stat().st_size
    if size_bytes > p.MAX_FILE_BYTES:
        return f"{size_bytes / 2**20:.0f} MB, too large"
    return ""


def conversation_for_engine(messages: list[Message]) -> list[p.ChatMessage]:
    """The turns the model should see: failed answers are left out, and so are the pictures an
    answer failed to read (else every later question would fail on them too); consecutive turns
    of one role are merged so that chat templates that insist on alternation accept them."""
    unreadable = {
        sha for message in messages for sha in message.provenance.get(UNREADABLE, ())
    }  # fmt: skip
    turns: list[p.ChatMessage] = []
    for message in messages:
        if message.role == "assistant" and not (
            message.status in (MessageStatus.COMPLETE, MessageStatus.CANCELLED) and message.text
        ):
            continue
        images = [str(a.path) for a in message.attachments if a.sha256 not in unreadable]
        if turns and turns[-1].role == message.role:
            turns[-1].text = "\n\n".join(t for t in (turns[-1].text, message.text) if t)
            turns[-1].images.extend(images)
        else:
            turns.append(p.ChatMessage(role=message.role, text=message.text, images=images))  # type: ignore[arg-type]
    return turns


class ChatSession(QObject):
    """Every message is written to storage before the engine hears of it."""

    conversations_changed = Signal()
    conversation_opened = Signal(str)  # "" for a new, not yet saved conversation
    message_added = Signal(object)  # storage.Message of the open conversation
    message_updated = Signal(object)  # text/status changed; throttled while streaming
    activity_changed = Signal(str, str)  # message id, what the engine is doing ("Loading model…")
    draft_changed = Signal()
    editing_changed = Signal(object)  # the sent user message being edited, or None
    # A sentence saying what was just replaced (a sent edit, a regenerated answer); undo() brings
    # it back, until the next message is sent.
    undoable = Signal(str)
    busy_changed = Signal(bool)
    notice = Signal(str)  # a sentence for the user that is not part of any answer
    # "Local, then ask before cloud": the local model could not answer; message id, sentence.
    cloud_consent_needed = Signal(str, str)

    def __init__(
        self,
        storage: Storage,
        client: EngineClient,
        *,
        repaint_interval_ms: int = 50,
        parent: QObject | None = None,
    ) -> None:
        super().__init__(parent)
        self._storage = storage
        self._client = client
        self.conversation_id = ""
        self.messages: list[Message] = []
        self.draft_attachments: list[Attachment] = []
        # A sent message taken back into the draft: sending replaces it and all after it.
        self.editing: Message | None = None
        self._draft_before_edit: list[Attachment] = []
        self._replaced: list[Message] = []  # what the last edit or regenerate replaced: undo()
        self._title_before = ""  # the conversation's name before that edit renamed it
        self.model_choice = ModelChoice()
        # Routing fields of each chat (backend, policy, never_send…); set by the window from
        # the Settings. Empty means the engine's default: local only.
        self.routing: Callable[[], dict[str, Any]] = dict
        # How answers are written (the Settings): sampling, and instructions sent first.
        self.sampling: Callable[[], p.Sampling] = p.Sampling
        self.system_prompt: Callable[[], str] = str
        # The pixel cap of pictures for models that keep their resolution (None: the engine's).
        self.image_max_pixels: Callable[[], int | None] = lambda: None
        self.adapter: str | None = None  # a LoRA adapter folder applied over the chosen model
        self._jobs: dict[str, Message] = {}  # job id -> the assistant message it writes
        self._renders: dict[str, Path] = {}  # job id -> a PDF whose pages are being rendered
        self._dirty: set[str] = set()
        self._repaint_timer = QTimer(self, singleShot=True, interval=repaint_interval_ms)
        self._repaint_timer.timeout.connect(self._on_repaint_timer_timeout)
        client.delta_received.connect(self._on_client_delta_received)
        client.job_finished.connect(self._on_client_job_finished)
        client.event_received.connect(self._on_client_event_received)

    # -- conversations --------------------------------------------------------------------

    @property
    def busy(self) -> bool:
        return bool(self._jobs)

    def active_message_ids(self) -> set[str]:
        return {m.id for m in self._jobs.values()}

    def conversations(self, containing: str = "") -> list[Conversation]:
        return self._storage.conversations(containing)

    def new_conversation(self) -> None:
        """An empty conversation; it is saved with its first message."""
        self._open("", [])

    def open_conversation(self, conversation_id: str) -> None:
        live = {m.id: m for m in self._jobs.values()}
        stored = self._storage.messages(conversation_id)
        self._open(conversation_id, [live.get(m.id, m) for m in stored])

    def delete_conversation(self, conversation_id: str) -> None:
        for job_id, message in list(self._jobs.items()):
            if message.conversation_id == conversation_id:
                self._client.cancel(job_id)
        self._storage.delete_conversation(conversation_id)
        self.conversations_changed.emit()
        if conversation_id == self.conversation_id:
            self.new_conversation()

    def _open(self, conversation_id: str, messages: list[Message]) -> None:
        self.cancel_edit()
        if conversation_id != self.conversation_id:
            self._replaced = []
        self.conversation_id = conversation_id
        self.messages = messages
        self.conversation_opened.emit(conversation_id)

    # -- the draft ------------------------------------------------------------------------

    def set_model_choice(self, choice: ModelChoice) -> None:
        if choice.model != self.model_choice.model:
            self.adapter = None  # an adapter belongs to the base model it was trained on
        self.model_choice = choice

    def attach_files(self, paths: list[Path]) -> list[Path]:
        """Copy images into the data folder and add them to the draft; returns the rejected."""
        rejected: list[Path] = []
        problems: list[str] = []
        for path in map(Path, paths):
            if path.suffix.lower() == ".pdf" and path.is_file():
                self.attach_pdf(path)
                continue
            problem = attachment_problem(path)
            if problem:
                rejected.append(path)
                problems.append(f"{path.name} ({problem})")
                continue
            self.draft_attachments.append(self._storage.import_attachment(path))
        if rejected:
            self.notice.emit(f"Not attached: {', '.join(problems)}.")
        if len(rejected) < len(paths):
            self.draft_changed.emit()
        return rejected

    def attach_pdf(self, path: Path, page: int | None = None) -> None:
        """Its first pages (or the one asked for), rendered by the engine, join the draft as
        pictures."""
        command = px.RenderPages(
            job_id=f"pdf-{time.monotonic_ns():x}",
            path=str(path),
            out_dir=str(paths.cache_dir() / "pdf-pages"),
            page_spec=str(page) if page else f"1-{PDF_PAGES}",
            max_long_side=PDF_LONG_SIDE,
        )
        self._renders[command.job_id] = path
        self.notice.emit(f"Reading {path.name}…")
        self._client.send(command)

    def _on_pages_rendered(self, pdf: Path, finished: p.Finished) -> None:
        if finished.reason != "done":
            reason = finished.message or "it could not be read"
            self.notice.emit(f"Not attached: {pdf.name} ({reason})")
            return
        result = finished.result or {}
        pages = result.get("pages") or []
        for page in pages:
            name = f"{pdf.stem} p{page['page']}.png"
            self.draft_attachments.append(
                self._storage.import_attachment(Path(page["path"]), name=name)
            )
        total = int(result.get("page_count") or len(pages))
        numbers = [int(page["page"]) for page in pages]
        if total == 1:
            shown = "its page"
        elif len(numbers) == 1:
            shown = f"page {numbers[0]} of {total}"
        else:
            shown = f"pages {numbers[0]}–{numbers[-1]} of {total}"
        more = " (for every page, use the Extract page)" if 1 < len(numbers) < total else ""
        self.notice.emit(f"Attached {shown} from {pdf.name} as pictures{more}.")
        self.draft_changed.emit()

    def attach_image(self, image: QImage, cache_dir: Path) -> None:
        """A pasted image: written to a PNG in the cache folder first, then imported."""
        path = Path(cache_dir) / f"pasted-{time.strftime('%Y%m%d-%H%M%S')}-{id(image):x}.png"
        saved = not image.isNull() and image.save(str(path), "PNG")  # type: ignore[call-overload]
        if not saved:
            self.notice.emit("The pasted image could not be saved.")
            return
        self.draft_attachments.append(
            self._storage.import_attachment(path, name="Pasted image.png")
        )
        self.draft_changed.emit()

    def remove_draft_attachment(self, index: int) -> None:
        if 0 <= index < len(self.draft_attachments):
            del self.draft_attachments[index]
            self.draft_changed.emit()

    def begin_edit(self, message_id: str) -> str | None:
        """Take a sent message back into the draft, images included; its text, or None.

        Nothing changes until the edit is sent; then it replaces that message and everything
        after it, and the model answers the edited conversation."""
        message = next((m for m in self.messages if m.id == message_id), None)
        if message is None or message.role != "user":
            return None
        if self.busy:
            self.notice.emit("Wait for the current answer, or press Stop (Esc), then edit.")
            return None
        if self.editing is None:
            self._draft_before_edit = self.draft_attachments
        self.editing = message
        self.draft_attachments = list(message.attachments)
        self.draft_changed.emit()
        self.editing_changed.emit(message)
        return message.text

    def cancel_edit(self) -> None:
        """Leave the conversation as it was; the draft's images from before the edit return."""
        if self.editing is None:
            return
        self.editing = None
        self.draft_attachments, self._draft_before_edit = self._draft_before_edit, []
        self.draft_changed.emit()
        self.editing_changed.emit(None)

    def undo(self) -> bool:
        """Bring back what the last sent edit or regenerated answer replaced; what replaced it
        goes (a running answer is stopped first)."""
        replaced, self._replaced = self._replaced, []
        if not replaced or replaced[0].conversation_id != self.conversation_id:
            return False
        for job_id, message in list(self._jobs.items()):
            if message.conversation_id == self.conversation_id:
                self._jobs.pop(job_id)
                self._client.cancel(job_id)
        self.busy_changed.emit(self.busy)
        first = replaced[0].position
        self._storage.delete_messages_from(self.conversation_id, first)
        self._storage.restore_messages(replaced)
        if self._title_before:
            self._storage.rename_conversation(self.conversation_id, self._title_before)
            self._title_before = ""
            self.conversations_changed.emit()
        self.messages = [m for m in self.messages if m.position < first] + replaced
        self.conversation_opened.emit(self.conversation_id)
        return True

    def later_messages(self, message_id: str) -> int:
        """How many messages follow this one (what an edit of it would replace)."""
        ids = [m.id for m in self.messages]
        return len(ids) - ids.index(message_id) - 1 if message_id in ids else 0

    def can_regenerate(self, message_id: str) -> bool:
        """Only the conversation's last answer, once it has ended, can be asked for again."""
        last = self.messages[-1] if self.messages else None
        return (
            last is not None
            and last.id == message_id
            and last.role == "assistant"
            and last.status != MessageStatus.PENDING
        )

    # -- jobs -----------------------------------------------------------------------------

    def send(self, text: str) -> bool:
        text = text.strip()
        if not text and not self.draft_attachments:
            return False
        if not self._can_start():
            return False
        kept: list[Attachment] = []  # a sent edit gives the draft back its earlier pictures
        self._replaced, self._title_before = [], ""  # once more is said, an earlier edit stays
        if self.editing is not None:
            kept = self._draft_before_edit
            self._retitle(self.editing, text)
            self._replace_from(self.editing)
        if not self.conversation_id:
            self.conversation_id = self._storage.create_conversation(auto_title(text)).id
            self.conversation_opened.emit(self.conversation_id)
        user = self._storage.add_message(self.conversation_id, "user", text, self.draft_attachments)
        answer = self._storage.add_message(
            self.conversation_id, "assistant", "", status=MessageStatus.PENDING
        )
        self.draft_attachments = kept
        self.draft_changed.emit()
        for message in (user, answer):
            self.messages.append(message)
            self.message_added.emit(message)
        self.conversations_changed.emit()
        self._start_job(answer)
        return True

    def retry(self, message_id: str, **routing: Any) -> bool:
        """Ask again for an answer that failed or was interrupted, with the same history.

        ``routing`` overrides the Settings' routing for this attempt only (e.g. the user's yes
        to sending one answer to the cloud: ``policy="cloud_only"``)."""
        answer = next((m for m in self.messages if m.id == message_id), None)
        if answer is None or answer.status not in MessageStatus.RETRYABLE:
            return False
        return self._ask_again(answer, routing)

    def regenerate(self, message_id: str) -> bool:
        """A new answer in place of the last one, to the same conversation; undo() brings the
        earlier one back."""
        if not self.can_regenerate(message_id):
            return False
        answer = self.messages[-1]
        earlier = dataclasses.replace(answer, provenance=dict(answer.provenance))
        if not self._ask_again(answer, None):
            return False
        self._replaced, self._title_before = [earlier], ""
        self.undoable.emit("Asked again.")
        return True

    def _ask_again(self, answer: Message, routing: dict[str, Any] | None) -> bool:
        if not self._can_start():
            return False
        answer.text, answer.status = "", MessageStatus.PENDING
        answer.error_code, answer.error_message, answer.provenance = None, "", {}
        self._storage.save_message(answer)
        self.message_updated.emit(answer)
        self._start_job(answer, routing)
        return True

    def send_to_cloud(self, message_id: str) -> bool:
        """The user's yes to "local, then ask before cloud": ask the cloud for this answer."""
        return self.retry(message_id, policy=CLOUD_ONLY)

    def stop(self) -> None:
        for job_id in list(self._jobs):
            self._client.cancel(job_id)

    def _can_start(self) -> bool:
        if self._renders:
            names = ", ".join(sorted({path.name for path in self._renders.values()}))
            self.notice.emit(f"Wait a moment: the pages of {names} are being prepared.")
            return False
        if self.busy:
            self.notice.emit("Wait for the current answer, or press Stop (Esc).")
            return False
        if not self.model_choice.model and not self.routing().get("backend"):
            self.notice.emit(
                "Choose a model first: pick one in the toolbar, or add a model folder."
            )
            return False
        return True

    def _retitle(self, edited: Message, text: str) -> None:
        """A conversation named after its first question is renamed after the edited one (a
        name the person chose stays)."""
        conversation = self._storage.conversation(self.conversation_id)
        if edited.position != 0 or conversation is None:
            return
        if conversation.title == auto_title(edited.text) != auto_title(text):
            self._title_before = conversation.title
            self._storage.rename_conversation(self.conversation_id, auto_title(text))

    def _replace_from(self, message: Message) -> None:
        """Delete ``message`` and all after it, in storage and on screen (an edit is sent)."""
        index = self.messages.index(message)
        self._storage.delete_messages_from(self.conversation_id, message.position)
        self._replaced = self.messages[index:]
        self.messages = self.messages[:index]
        self.editing, self._draft_before_edit = None, []
        self.editing_changed.emit(None)
        self.conversation_opened.emit(self.conversation_id)
        self.undoable.emit(f"Your edit replaced {counted(len(self._replaced), 'message')}.")

    def _chat_fields(self, routing: dict[str, Any] | None) -> dict[str, Any]:
        """The Chat's routing fields (Settings, then this attempt's override) and adapter."""
        fields: dict[str, Any] = {**self.routing(), **(routing or {})}
        if self.adapter:
            fields["adapter"] = self.adapter
        return fields

    def _start_job(self, answer: Message, routing: dict[str, Any] | None = None) -> None:
        history = self.messages[: self.messages.index(answer)]
        turns = conversation_for_engine(history)
        instructions = self.system_prompt().strip()
        if instructions:
            turns.insert(0, p.ChatMessage(role="system", text=instructions))
        choice = self.model_choice
        job_id = self._client.start_chat(
            turns,
            model=choice.model,
            quant=choice.quant,
            device=choice.device,
            sampling=self.sampling(),
            image_max_pixels=self.image_max_pixels(),
            **self._chat_fields(routing),
        )
        self._jobs[job_id] = answer
        self.activity_changed.emit(answer.id, "Waiting for the engine…")
        self.busy_changed.emit(True)

    # -- engine events --------------------------------------------------------------------

    @Slot(str, str)
    def _on_client_delta_received(self, job_id: str, text: str) -> None:
        message = self._jobs.get(job_id)
        if message is None:
            return
        message.text += text
        self._dirty.add(message.id)
        if not self._repaint_timer.isActive():
            self._repaint_timer.start()

    @Slot(object)
    def _on_client_event_received(self, event: p.Event) -> None:
        message = self._jobs.get(getattr(event, "job_id", ""))
        if message is None:
            return
        if isinstance(event, p.Progress) and event.message:
            self.activity_changed.emit(message.id, event.message)
        elif isinstance(event, p.JobStarted):
            self.activity_changed.emit(message.id, "Thinking…")

    def _name_pictures(self, answer: Message) -> tuple[str, list[str]]:
        """A picture's error as the person knows the picture (the engine names the stored copy,
        ``<hash>.jpg``), saying that it is left out from now on; and the hashes of the pictures
        it names."""
        text, named = answer.error_message, []
        for message in self._storage.messages(answer.conversation_id):
            if message.id == answer.id:
                break
            for attachment in message.attachments:
                if attachment.path.name in text:
                    text = text.replace(attachment.path.name, attachment.name)
                    named.append(attachment.sha256)
        if named:
            text += " Later questions in this conversation go without it."
        return text, named

    @Slot(object)
    def _on_client_job_finished(self, finished: p.Finished) -> None:
        pdf = self._renders.pop(finished.job_id, None)
        if pdf is not None:
            self._on_pages_rendered(pdf, finished)
            return
        message = self._jobs.pop(finished.job_id, None)
        if message is None:
            return
        self._dirty.discard(message.id)
        result = finished.result or {}
        if finished.reason in ("done", "length"):
            message.status = MessageStatus.COMPLETE
            message.text = str(result.get("text") or message.text)
        elif finished.reason == "cancelled":
            message.status = MessageStatus.CANCELLED
        elif finished.error_code == p.ErrorCode.ENGINE_DIED:
            message.status = MessageStatus.INTERRUPTED
        else:
            message.status = MessageStatus.ERROR
        unreadable: list[str] = []
        if finished.reason == "error":
            message.error_code = finished.error_code
            message.error_message = finished.message or "The engine could not answer."
            if finished.error_code == p.ErrorCode.BAD_INPUT:
                message.error_message, unreadable = self._name_pictures(message)
        keys = (
            "backend",
            "model",
            "quant",
            "device",
            "adapter",
            "completion_tokens",
            "tokens_per_s",
            "time_to_first_token_s",
            "prompt_tokens",
            "cached_tokens",
        )
        message.provenance = {k: result[k] for k in keys if k in result}
        message.provenance["finish_reason"] = finished.reason
        if unreadable:
            message.provenance[UNREADABLE] = unreadable
        self._storage.save_message(message)
        if message.conversation_id == self.conversation_id:
            self.message_updated.emit(message)
        self.busy_changed.emit(self.busy)
        if finished.error_code == CONSENT_NEEDED:
            self.cloud_consent_needed.emit(message.id, message.error_message)

    @Slot()
    def _on_repaint_timer_timeout(self) -> None:
        dirty, self._dirty = self._dirty, set()
        for message in self._jobs.values():
            if message.id in dirty and message.conversation_id == self.conversation_id:
                self.message_updated.emit(message)

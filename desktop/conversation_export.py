"""A conversation as a Markdown file, its pictures copied into a folder beside it."""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from urllib.parse import quote

from desktop.storage import Message, MessageStatus, Storage, replace_atomically


def export_markdown(storage: Storage, conversation_id: str, target: Path) -> Path:
    """Write the conversation to ``target`` (Markdown); pictures go to ``<stem>-images/``.

    The file links the pictures by relative path, so the two can be moved or zipped together.
    Returns the file written."""
    conversation = storage.conversation(conversation_id)
    if conversation is None:
        raise ValueError("That conversation no longer exists.")
    target = Path(target)
    images = target.with_name(f"{target.stem}-images")
    names: dict[str, str] = {}  # sha256 -> file name in ``images``
    lines = [
        f"# {conversation.title}",
        "",
        f"*Exported from VisionDesk on {time.strftime('%d %b %Y %H:%M')}.*",
        "",
    ]
    for message in storage.messages(conversation_id):
        lines += [_heading(message), ""]
        for attachment in message.attachments:
            if attachment.sha256 not in names:
                names[attachment.sha256] = _free_name(attachment.name, set(names.values()))
                images.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(attachment.path, images / names[attachment.sha256])
            link = f"{quote(images.name)}/{quote(names[attachment.sha256])}"
            lines += [f"![{attachment.name}]({link})", ""]
        if message.text:
            lines += [message.text.rstrip(), ""]
        note = _status_note(message)
        if note:
            lines += [f"*{note}*", ""]
    target.parent.mkdir(parents=True, exist_ok=True)
    replace_atomically(target, lambda tmp: tmp.write_text("\n".join(lines), encoding="utf-8"))
    return target


def _heading(message: Message) -> str:
    if message.role == "user":
        return "## You"
    model = message.provenance.get("model")
    return f"## Assistant ({Path(str(model)).name})" if model else "## Assistant"


def _status_note(message: Message) -> str:
    if message.status == MessageStatus.CANCELLED:
        return "Stopped before the end."
    if message.status in MessageStatus.RETRYABLE:
        return f"No answer: {message.error_message or 'the engine stopped'}"
    if message.status == MessageStatus.PENDING:
        return "Still being written when exported."
    return ""


def _free_name(name: str, taken: set[str]) -> str:
    """``name``, or ``stem-2.ext``… where two different pictures share a name."""
    path = Path(Path(name).name or "image.png")
    candidate, number = path.name, 2
    while candidate in taken:
        candidate = f"{path.stem}-{number}{path.suffix}"
        number += 1
    return candidate

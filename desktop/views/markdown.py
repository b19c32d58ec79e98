"""A small Markdown-to-Qt-rich-text renderer for chat answers: code blocks with Copy links.

Qt's own ``QTextDocument.setMarkdown`` cannot style code blocks or add a per-block action, and
answers arrive half-written (an unclosed fence must still render as code), so answers are split
into prose and fenced code here and rendered to the HTML subset that Qt supports.
"""

from __future__ import annotations

import html
import re
from dataclasses import dataclass

COPY_SCHEME = "copy-code"  # links "copy-code:<index>" copy code block <index>

_FENCE = re.compile(r"^\s*(```|~~~)\s*([\w+#.-]*)\s*$")
_HEADING = re.compile(r"^(#{1,6})\s+(.*)$")
_BULLET = re.compile(r"^(\s*)[-*+]\s+(.*)$")
_NUMBERED = re.compile(r"^(\s*)(\d+)[.)]\s+(.*)$")
_RULE = re.compile(r"^\s*([-*_])(\s*\1){2,}\s*$")
_INLINE_CODE = re.compile(r"`([^`]+)`")
_BOLD = re.compile(r"(\*\*|__)(?=\S)(.+?)(?<=\S)\1")
_ITALIC = re.compile(r"(?<![\w*])([*_])(?=\S)(.+?)(?<=\S)\1(?![\w*])")
_LINK = re.compile(r"\[([^\]]+)\]\((https?://[^)\s]+)\)")

CODE_BACKGROUND = "#f3f4f7"
CODE_BORDER = "#e2e5ec"
MUTED = "#6b7280"
LINK = "#2563eb"


@dataclass(frozen=True)
class CodeBlock:
    language: str
    code: str


def split_code_blocks(text: str) -> list[str | CodeBlock]:
    """Prose strings and code blocks, in order. An unclosed fence runs to the end."""
    parts: list[str | CodeBlock] = []
    prose: list[str] = []
    code: list[str] | None = None
    language, fence = "", ""
    for line in text.split("\n"):
        match = _FENCE.match(line)
        if code is None and match:
            parts.append("\n".join(prose))
            prose, code, fence, language = [], [], match.group(1), match.group(2)
        elif code is not None and match and match.group(1) == fence and not match.group(2):
            parts.append(CodeBlock(language, "\n".join(code)))
            code = None
        elif code is not None:
            code.append(line)
        else:
            prose.append(line)
    if code is not None:
        parts.append(CodeBlock(language, "\n".join(code)))
    else:
        parts.append("\n".join(prose))
    return [part for part in parts if not (isinstance(part, str) and not part.strip())]


def code_blocks(text: str) -> list[CodeBlock]:
    return [part for part in split_code_blocks(text) if isinstance(part, CodeBlock)]


def inline(text: str) -> str:
    """Escape, then apply inline code, bold, italic and links (code spans are left alone)."""
    pieces = _INLINE_CODE.split(text)
    out = []
    for index, piece in enumerate(pieces):
        if index % 2:
            out.append(
                f'<code style="font-family: monospace; background-color: {CODE_BACKGROUND};">'
                f"{html.escape(piece)}</code>"
            )
            continue
        piece = html.escape(piece, quote=False)
        piece = _LINK.sub(
            lambda m: f'<a href="{m.group(2)}" style="color: {LINK};">{m.group(1)}</a>', piece
        )
        piece = _BOLD.sub(r"<b>\2</b>", piece)
        piece = _ITALIC.sub(r"<i>\2</i>", piece)
        out.append(piece)
    return "".join(out)


def _render_prose(text: str) -> str:
    out: list[str] = []
    paragraph: list[str] = []
    list_kind = ""

    def flush_paragraph() -> None:
        if paragraph:
            out.append(f"<p>{'<br/>'.join(inline(line) for line in paragraph)}</p>")
            paragraph.clear()

    def close_list() -> None:
        nonlocal list_kind
        if list_kind:
            out.append(f"</{list_kind}>")
            list_kind = ""

    def open_list(kind: str) -> None:
        nonlocal list_kind
        if list_kind != kind:
            close_list()
            out.append(f'<{kind} style="margin-top: 2px; margin-bottom: 6px;">')
            list_kind = kind

    for line in text.split("\n"):
        stripped = line.strip()
        heading, bullet, numbered = (
            _HEADING.match(stripped),
            _BULLET.match(line),
            _NUMBERED.match(line),
        )
        if not stripped:
            flush_paragraph()
            close_list()
        elif _RULE.match(line):
            flush_paragraph()
            close_list()
            out.append("<hr/>")
        elif heading:
            flush_paragraph()
            close_list()
            level = min(len(heading.group(1)) + 2, 6)  # answers use #, which should not shout
            out.append(f"<h{level}>{inline(heading.group(2))}</h{level}>")
        elif bullet or numbered:
            flush_paragraph()
            open_list("ul" if bullet else "ol")
            item = bullet.group(2) if bullet else numbered.group(3)  # type: ignore[union-attr]
            out.append(f"<li>{inline(item)}</li>")
        elif stripped.startswith(">"):
            flush_paragraph()
            close_list()
            quote = inline(stripped.lstrip(">").strip())
            out.append(f'<p style="color: {MUTED}; margin-left: 12px;"><i>{quote}</i></p>')
        elif list_kind and line.startswith((" ", "\t")):
            out[-1] = out[-1].replace("</li>", f" {inline(stripped)}</li>")
        else:
            close_list()
            paragraph.append(stripped)
    flush_paragraph()
    close_list()
    return "\n".join(out)


def _render_code(block: CodeBlock, index: int) -> str:
    # A one-cell table is the only way Qt rich text gives a block a padded background.
    code = html.escape(block.code).replace("\n", "<br/>").replace("  ", "&nbsp; ")
    label = html.escape(block.language) if block.language else "code"
    return (
        f'<table width="100%" cellspacing="0" cellpadding="8" style="margin-top: 6px; '
        f'margin-bottom: 6px; background-color: {CODE_BACKGROUND}; border: 1px solid {CODE_BORDER};">'
        f'<tr><td><table width="100%" cellspacing="0" cellpadding="0"><tr>'
        f'<td><span style="color: {MUTED}; font-size: small;">{label}</span></td>'
        f'<td align="right"><a href="{COPY_SCHEME}:{index}" style="color: {LINK}; '
        f'font-size: small; text-decoration: none;">Copy</a></td></tr></table>'
        f'<span style="font-family: monospace; white-space: pre-wrap;">{code}</span></td></tr></table>'
    )


def to_html(text: str) -> str:
    """Rich text for one answer. Code block ``i`` links to ``copy-code:i``."""
    out = []
    index = 0
    for part in split_code_blocks(text):
        if isinstance(part, CodeBlock):
            out.append(_render_code(part, index))
            index += 1
        else:
            out.append(_render_prose(part))
    return "\n".join(out)

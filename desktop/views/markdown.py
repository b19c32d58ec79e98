"""A small Markdown-to-Qt-rich-text renderer for chat answers: code blocks with Copy links,
GFM tables, nested lists, links (bare URLs too).

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
_BOLD = re.compile(r"(\*\*|__)(?=\S)(.+?)(?<=\S)\1")
_ITALIC = re.compile(r"(?<![\w*])([*_])(?=\S)(.+?)(?<=\S)\1(?![\w*])")
# What inline markup must not touch: code spans, links, <URL> and bare URLs.
_INLINE = re.compile(
    r"`(?P<code>[^`]+)`"
    r"|\[(?P<label>[^\]]+)\]\((?P<href>https?://[^)\s]+)\)"
    r"|<(?P<bracketed>https?://[^\s<>]+)>"
    r"|(?<![\w/])(?P<url>https?://[^\s<>`]+)"
)
_KEEP_OPEN, _KEEP_CLOSE = "\ue000", "\ue001"  # private-use characters mark what was set aside
_KEPT = re.compile(f"{_KEEP_OPEN}(\\d+){_KEEP_CLOSE}")
_TABLE_SEPARATOR = re.compile(r"^\s*\|?\s*:?-+:?\s*(\|\s*:?-+:?\s*)*\|?\s*$")
_CELL_SPLIT = re.compile(r"(?<!\\)\|")
_LIST_MARGINS = "margin-top: 2px; margin-bottom: 6px;"

CODE_BACKGROUND = "#f3f4f7"
CODE_BORDER = "#e2e5ec"
MUTED = "#6b7280"
LINK = "#2563eb"
TABLE_BORDER = "#d1d5db"
TABLE_HEADER = "#f3f4f7"


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


def _autolink(url: str) -> tuple[str, str]:
    """A bare URL without the punctuation that ends its sentence: (url, what follows it)."""
    trail = ""
    while url and url[-1] in ".,:;!?*_~'\")":
        if url[-1] == ")" and url.count("(") >= url.count(")"):
            break  # balanced, as in https://en.wikipedia.org/wiki/Mole_(unit)
        url, trail = url[:-1], url[-1] + trail
    return url, trail


def _anchor(href: str, label: str) -> str:
    return f'<a href="{html.escape(href)}" style="color: {LINK};">{label}</a>'


def _emphasis(escaped: str) -> str:
    return _ITALIC.sub(r"<i>\2</i>", _BOLD.sub(r"<b>\2</b>", escaped))


def inline(text: str) -> str:
    """Escape, then apply inline code, links (bare URLs too), bold and italic.

    Code spans and links are set aside first, so no markup applies inside code or inside a URL
    (whose ``_`` and ``*`` would otherwise read as emphasis), while bold around a link works.
    """
    kept: list[str] = []

    def keep(match: re.Match[str]) -> str:
        if match["code"] is not None:
            kept.append(
                f'<code style="font-family: monospace; background-color: {CODE_BACKGROUND};">'
                f"{html.escape(match['code'])}</code>"
            )
            return f"{_KEEP_OPEN}{len(kept) - 1}{_KEEP_CLOSE}"
        if match["href"] is not None:
            label = _emphasis(html.escape(match["label"], quote=False))
            kept.append(_anchor(match["href"], label))
            return f"{_KEEP_OPEN}{len(kept) - 1}{_KEEP_CLOSE}"
        url, trail = _autolink(match["url"] or match["bracketed"])
        kept.append(_anchor(url, html.escape(url, quote=False)))
        return f"{_KEEP_OPEN}{len(kept) - 1}{_KEEP_CLOSE}{trail}"

    text = text.replace(_KEEP_OPEN, "").replace(_KEEP_CLOSE, "")
    marked = _emphasis(html.escape(_INLINE.sub(keep, text), quote=False))
    return _KEPT.sub(lambda m: kept[int(m.group(1))], marked)


def _table_cells(line: str) -> list[str]:
    r"""A table row's cells: split at pipes not escaped as ``\|``; the outer pipes are optional."""
    row = line.strip()
    row = row[1:] if row.startswith("|") else row
    row = row[:-1] if row.endswith("|") and not row.endswith("\\|") else row
    return [cell.strip().replace("\\|", "|") for cell in _CELL_SPLIT.split(row)]


def _alignment(separator_cell: str) -> str:
    left, right = separator_cell.startswith(":"), separator_cell.endswith(":")
    return "center" if left and right else "right" if right else "left"


def table_at(lines: list[str], index: int) -> tuple[list[str], list[list[str]], int] | None:
    """A GFM table starting at ``lines[index]``: (alignments, rows with the header first, the
    number of lines it takes), or None. Rows are padded or cut to the header's width."""
    if index + 1 >= len(lines) or "|" not in lines[index] or "|" not in lines[index + 1]:
        return None
    if not _TABLE_SEPARATOR.match(lines[index + 1]):
        return None
    header, separator = _table_cells(lines[index]), _table_cells(lines[index + 1])
    if len(header) != len(separator):
        return None
    rows = [header]
    end = index + 2
    while end < len(lines) and lines[end].strip() and "|" in lines[end]:
        cells = _table_cells(lines[end])
        rows.append((cells + [""] * len(header))[: len(header)])
        end += 1
    return [_alignment(cell) for cell in separator], rows, end - index


def _render_table(alignments: list[str], rows: list[list[str]]) -> str:
    border = f"border: 1px solid {TABLE_BORDER};"
    out = [
        f'<table cellspacing="0" cellpadding="6" style="border-collapse: collapse; {border} '
        'margin-top: 6px; margin-bottom: 6px;">'
    ]
    for number, row in enumerate(rows):
        tag = "th" if number == 0 else "td"
        background = f" background-color: {TABLE_HEADER};" if number == 0 else ""
        cells = []
        for cell, align in zip(row, alignments, strict=True):
            cells.append(
                f'<{tag} align="{align}" style="{border}{background}">{inline(cell)}</{tag}>'
            )
        out.append(f"<tr>{''.join(cells)}</tr>")
    out.append("</table>")
    return "".join(out)


@dataclass
class _OpenList:
    indent: int  # of its items' markers
    kind: str  # "ul" or "ol"


class _Prose:
    """Renders the Markdown between code blocks: paragraphs, headings, rules, quotes, tables
    and lists, nested by indentation."""

    def __init__(self, text: str) -> None:
        self.lines = [line.expandtabs(4) for line in text.split("\n")]
        self.out: list[str] = []
        self.paragraph: list[str] = []
        self.lists: list[_OpenList] = []

    def render(self) -> str:
        index = 0
        while index < len(self.lines):
            index += self._block(index)
        self._end_blocks()
        return "".join(self.out)  # no newlines: Qt would keep them as spaces ending list items

    def _block(self, index: int) -> int:
        """Render the block starting at ``lines[index]``; how many lines it took."""
        line = self.lines[index]
        stripped = line.strip()
        heading, item = _HEADING.match(stripped), _BULLET.match(line) or _NUMBERED.match(line)
        table = table_at(self.lines, index)
        if not stripped:
            if not (self.lists and self._list_goes_on(index)):
                self._end_blocks()
        elif table is not None:
            self._end_blocks()
            self.out.append(_render_table(table[0], table[1]))
            return table[2]
        elif _RULE.match(line):
            self._end_blocks()
            self.out.append("<hr/>")
        elif heading:
            self._end_blocks()
            level = min(len(heading.group(1)) + 2, 6)  # answers use #, which should not shout
            self.out.append(f"<h{level}>{inline(heading.group(2))}</h{level}>")
        elif item:
            self._flush_paragraph()
            self._list_item(item)
        elif stripped.startswith(">"):
            self._end_blocks()
            quote = inline(stripped.lstrip(">").strip())
            self.out.append(f'<p style="color: {MUTED}; margin-left: 12px;"><i>{quote}</i></p>')
        elif self.lists and line.startswith(" "):
            after_blank = index > 0 and not self.lines[index - 1].strip()
            self.out.append(("<br/>" if after_blank else " ") + inline(stripped))
        else:
            self._close_lists()
            self.paragraph.append(stripped)
        return 1

    def _list_goes_on(self, index: int) -> bool:
        """After a blank line, a list goes on with an item or an indented line."""
        for line in self.lines[index + 1 :]:
            if line.strip():
                return bool(_BULLET.match(line) or _NUMBERED.match(line) or line[:1] == " ")
        return False

    def _list_item(self, item: re.Match[str]) -> None:
        bullet = item.re is _BULLET
        indent, kind = len(item.group(1)), "ul" if bullet else "ol"
        while self.lists and indent < self.lists[-1].indent:
            self._close_list()
        sibling = bool(self.lists) and indent < self.lists[-1].indent + 2  # give or take a space
        if sibling and self.lists[-1].kind == kind:
            self.out.append("</li>")
        else:
            if sibling:
                self._close_list()  # "- a" then "1. b" at the same level: another list
            self._open_list(indent, kind, item)
        self.out.append(f"<li>{inline(item.group(2 if bullet else 3))}")

    def _open_list(self, indent: int, kind: str, item: re.Match[str]) -> None:
        margins = "margin-top: 0px; margin-bottom: 0px;" if self.lists else _LIST_MARGINS
        start = int(item.group(2)) if kind == "ol" else 1
        numbering = f' start="{start}"' if start != 1 else ""  # a list split by a code block
        self.out.append(f'<{kind}{numbering} style="{margins}">')
        self.lists.append(_OpenList(indent, kind))

    def _close_list(self) -> None:
        self.out.append(f"</li></{self.lists.pop().kind}>")

    def _close_lists(self) -> None:
        while self.lists:
            self._close_list()

    def _flush_paragraph(self) -> None:
        if self.paragraph:
            self.out.append(f"<p>{'<br/>'.join(inline(line) for line in self.paragraph)}</p>")
            self.paragraph.clear()

    def _end_blocks(self) -> None:
        self._flush_paragraph()
        self._close_lists()


def _render_prose(text: str) -> str:
    return _Prose(text).render()


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

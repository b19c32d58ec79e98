"""The answer renderer: code blocks (even half-streamed ones), tables, nested lists, links,
inline markup, escaping."""

from __future__ import annotations

import re

from PySide6.QtCore import Qt
from PySide6.QtGui import QFont, QTextCursor, QTextDocument, QTextTable

from desktop.views import markdown


def test_fenced_code_is_split_from_prose_with_its_language() -> None:
    parts = markdown.split_code_blocks("Intro\n\n```python\nx = 1\n```\nOutro")
    assert parts == ["Intro\n", markdown.CodeBlock("python", "x = 1"), "Outro"]


def test_an_unclosed_fence_renders_as_code_while_streaming() -> None:
    [block] = markdown.code_blocks("Here:\n```js\nlet a = 1;\nlet b")
    assert block == markdown.CodeBlock("js", "let a = 1;\nlet b")


def test_code_blocks_get_copy_links_and_html_is_escaped() -> None:
    html = markdown.to_html("A <b>tag</b> and **bold**\n\n```\n<script>\n```\n\n```\ntwo\n```")
    assert "&lt;b&gt;tag&lt;/b&gt;" in html
    assert "<b>bold</b>" in html
    assert "&lt;script&gt;" in html and "<script>" not in html
    assert 'href="copy-code:0"' in html and 'href="copy-code:1"' in html


def test_lists_headings_inline_code_and_links() -> None:
    html = markdown.to_html(
        "# Title\n- one `x<y`\n- two\n\n1. first\n\n[docs](https://example.org)"
    )
    assert "<h3>Title</h3>" in html
    assert html.count("<li>") == 3 and "<ul" in html and "<ol" in html
    assert "x&lt;y</code>" in html
    assert '<a href="https://example.org"' in html


def rendered(text: str) -> QTextDocument:
    """The answer as Qt lays it out, to check what the reader sees rather than the HTML."""
    document = QTextDocument()
    document.setHtml(markdown.to_html(text))
    return document


def tables(document: QTextDocument) -> list[QTextTable]:
    found: list[QTextTable] = []
    block = document.begin()
    while block.isValid():
        table = QTextCursor(block).currentTable()
        if table is not None and table not in found:
            found.append(table)
        block = block.next()
    return found


def cell_text(table: QTextTable, row: int, column: int) -> str:
    cell = table.cellAt(row, column)
    cursor = QTextCursor(cell.firstCursorPosition())
    cursor.setPosition(cell.lastCursorPosition().position(), QTextCursor.MoveMode.KeepAnchor)
    return cursor.selectedText()


def list_items(document: QTextDocument) -> list[tuple[str, int, str]]:
    """(text, nesting level, marker) of every list item, in order."""
    items = []
    block = document.begin()
    while block.isValid():
        if block.textList() is not None:
            text_list = block.textList()
            items.append((block.text(), text_list.format().indent(), text_list.itemText(block)))
        block = block.next()
    return items


def test_a_gfm_table_renders_as_a_table_with_alignment_and_inline_markup(qtbot) -> None:
    answer = (
        "Totals:\n\n| Item | Qty | Price |\n|:-----|:---:|------:|\n"
        "| **Coffee** | 2 | 3.50 |\n| Cake with `cream` | 1 | 4.20 |\n\nThat is all."
    )
    html = markdown.to_html(answer)
    document = rendered(answer)
    assert "|" not in document.toPlainText()
    [table] = tables(document)
    assert (table.rows(), table.columns()) == (3, 3)
    assert [cell_text(table, 0, c) for c in range(3)] == ["Item", "Qty", "Price"]
    assert [cell_text(table, 2, c) for c in range(3)] == ["Cake with cream", "1", "4.20"]
    header = table.cellAt(0, 0).firstCursorPosition().charFormat()
    assert header.fontWeight() == QFont.Weight.Bold
    alignments = [
        table.cellAt(1, c).firstCursorPosition().block().blockFormat().alignment() for c in range(3)
    ]
    wanted = [
        Qt.AlignmentFlag.AlignLeft,
        Qt.AlignmentFlag.AlignHCenter,
        Qt.AlignmentFlag.AlignRight,
    ]
    assert all(alignment & flag for alignment, flag in zip(alignments, wanted, strict=True))
    assert "<b>Coffee</b>" in html and "cream</code>" in html
    assert "border-collapse" in html  # ruled, not floating text


def test_table_rows_are_fitted_to_the_header_and_escaped_pipes_stay_in_their_cell(qtbot) -> None:
    document = rendered("a | b\n--- | ---\n1 \\| 2 | x | extra\nonly")
    [table] = tables(document)
    assert (table.rows(), table.columns()) == (2, 2)  # "only" has no pipe: the table ended
    assert [cell_text(table, 1, c) for c in range(2)] == ["1 | 2", "x"]
    assert document.toPlainText().rstrip().endswith("only")
    short_document = rendered("| a | b |\n|---|---|\n| 1 |")
    [short] = tables(short_document)
    assert [cell_text(short, 1, c) for c in range(2)] == ["1", ""]


def test_a_half_written_table_stays_text_until_its_separator_row_is_complete(qtbot) -> None:
    assert tables(rendered("| a | b |\n|---")) == []
    assert "| a | b |" in rendered("| a | b |\n|---").toPlainText()
    assert len(tables(rendered("| a | b |\n|---|---|"))) == 1


def test_nested_lists_keep_their_nesting(qtbot) -> None:
    items = list_items(rendered("- fruit\n  - apple\n    1. green\n  - pear\n- bread"))
    assert [(text, level) for text, level, _ in items] == [
        ("fruit", 1),
        ("apple", 2),
        ("green", 3),
        ("pear", 2),
        ("bread", 1),
    ]
    assert items[2][2] == "1."


def test_a_numbered_list_goes_on_counting_across_blank_lines_and_code_blocks(qtbot) -> None:
    answer = "1. Open it\n\n2. Run:\n```\nmake\n```\n3. Done\n   still step three"
    items = list_items(rendered(answer))
    assert [(text, marker) for text, _, marker in items] == [
        ("Open it", "1."),
        ("Run:", "2."),
        ("Done still step three", "3."),
    ]


def test_bare_urls_become_links_but_not_inside_code_or_punctuation() -> None:
    html = markdown.to_html(
        "See https://example.com/a_b_c. Also (https://en.wikipedia.org/wiki/Mole_(unit)) and "
        "**https://bold.example**, `https://in.code` and <https://bracketed.example>.\n\n"
        "```\nhttps://in.block\n```"
    )
    hrefs = re.findall(r'href="([^"]+)"', html)
    assert hrefs == [
        "https://example.com/a_b_c",
        "https://en.wikipedia.org/wiki/Mole_(unit)",
        "https://bold.example",
        "https://bracketed.example",
        "copy-code:0",
    ]
    assert "<i>" not in html  # the URL's underscores are not emphasis
    assert '">https://bold.example</a></b>' in html
    assert "https://in.code</code>" in html


def test_a_link_label_keeps_its_markup_and_a_quote_in_a_url_is_escaped() -> None:
    html = markdown.to_html('[the **docs**](https://example.org/?a=1&b=2) https://x.org/"q"')
    assert '<a href="https://example.org/?a=1&amp;b=2"' in html
    assert ">the <b>docs</b></a>" in html
    assert 'href="https://x.org/&quot;q"' in html  # a quote cannot end the attribute

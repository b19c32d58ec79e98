"""The answer renderer: code blocks (even half-streamed ones), inline markup, escaping."""

from __future__ import annotations

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

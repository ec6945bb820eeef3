"""Rendering a summary costs time linear in its length, whatever it holds: python-markdown took
7 s on 5,000 unclosed brackets (and ~45 min on the 100,000 characters a summary may hold) in a
request any signed-in user can make (the dashboard's preview) and on every read of such a finding."""

import time

import pytest

from registry.findings.markdown import render_markdown

PATHOLOGICAL = {
    "unclosed brackets": "[" * 20_000,
    "brackets before long text": "[" * 100 + "a" * 90_000,
    "unclosed link targets": "[a](" * 10_000,
    "image openers": "![" * 10_000,
    "escapes": "\\[a]" * 20_000,
    "angle brackets": "<a" * 30_000,
}


@pytest.mark.parametrize("text", PATHOLOGICAL.values(), ids=PATHOLOGICAL.keys())
def test_pathological_summaries_render_in_well_under_a_second_each(text):
    started = time.perf_counter()
    html = render_markdown(text)
    elapsed = time.perf_counter() - started
    assert html.startswith("<p>")
    assert elapsed < 3.0, elapsed  # python-markdown: 7 s to minutes; markdown-it-py: ~0.1 s


def test_markdown_still_renders_links_code_and_tables_and_no_script():
    html = render_markdown(
        "see [the paper](https://arxiv.org/abs/1) <script>alert(1)</script> `x`\n\n"
        "| a | b |\n|---|---|\n| 1 | 2 |\n\n[bad](javascript:alert(1))"
    )
    assert '<a href="https://arxiv.org/abs/1" rel="noopener noreferrer nofollow">the paper</a>' in html
    assert "<script" not in html
    assert "<code>x</code>" in html and "<td>1</td>" in html
    assert "javascript:" not in html


def test_short_texts_are_rendered_once_per_process_and_long_ones_every_time():
    from registry.findings import markdown

    short = "a *short* summary [link](https://example.org) <script>x</script> unique-7f3a"
    first = render_markdown(short)
    assert markdown._cache[short] == first == markdown._render(short)  # kept: what a render gives
    assert render_markdown(short) is first  # served from the cache
    assert "<script" not in first and "<em>short</em>" in first

    long = "b" * (markdown.CACHED_TEXT_CHARS + 1)
    assert render_markdown(long) == f"<p>{long}</p>\n"
    assert long not in markdown._cache


def test_a_short_text_that_expands_to_large_html_is_not_kept():
    from registry.findings import markdown

    # a reference link to a long percent-encoded URL, used many times: ~4 K characters of input
    text = "[a]: https://example.org/" + "\U0001F600" * 300 + "\n\n" + "[a]" * 1000
    assert len(text) <= markdown.CACHED_TEXT_CHARS
    html = render_markdown(text)
    assert len(html) > markdown.CACHED_HTML_CHARS
    assert text not in markdown._cache


def test_the_cache_keeps_at_most_its_size_least_recently_used_out_first(monkeypatch):
    from registry.findings import markdown

    monkeypatch.setattr(markdown, "CACHED_TEXTS", 3)
    monkeypatch.setattr(markdown, "_cache", markdown.OrderedDict())
    for name in ("one", "two", "three"):
        render_markdown(name)
    render_markdown("one")  # used again: now the most recent
    render_markdown("four")
    assert list(markdown._cache) == ["three", "one", "four"]  # "two" went first


def test_a_summary_preview_is_rendered_but_not_kept():
    """The dashboard's preview renders drafts as the finding page will, without filling the cache
    that stored summaries share (a draft per keystroke would push them out)."""
    from registry.dashboard.submissions import summary_preview
    from registry.findings import markdown

    draft = "a *draft* being typed unique-3c9e"
    assert summary_preview(draft) == markdown._render(draft)
    assert draft not in markdown._cache
    assert render_markdown(draft) == markdown._render(draft) and draft in markdown._cache  # stored text: kept

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
    hits = markdown._render_cached.cache_info().hits
    assert render_markdown(short) == first == markdown._render(short)  # the cache returns what a render gives
    assert markdown._render_cached.cache_info().hits == hits + 1
    assert "<script" not in first and "<em>short</em>" in first

    long = "b" * (markdown.CACHED_TEXT_CHARS + 1)
    size = markdown._render_cached.cache_info().currsize
    assert render_markdown(long) == f"<p>{long}</p>\n"
    assert markdown._render_cached.cache_info().currsize == size  # not kept: memory stays bounded
    assert markdown._render_cached.cache_info().maxsize == markdown.CACHED_TEXTS

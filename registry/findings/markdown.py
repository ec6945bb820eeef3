"""Markdown to safe HTML: rendered with markdown-it-py (CommonMark and tables), then sanitised with
nh3, which alone decides what survives (its tag and attribute allow-lists; links only to http,
https and mailto: no scripts, no event handlers, no javascript: links).

markdown-it-py rather than python-markdown: python-markdown's inline patterns scan ahead from
every unclosed bracket, escape or ``<``, so a 10,000-character summary of ``[`` took seconds and
100,000 characters of them the better part of an hour, in a request any signed-in user could make
(the preview) and on every read of a finding with such a summary. markdown-it-py parses
CommonMark in (near) linear time: the same inputs take milliseconds.
"""

import threading
from collections import OrderedDict

import nh3
from markdown_it import MarkdownIt

ALLOWED_TAGS = {
    "a", "p", "em", "strong", "code", "pre", "blockquote", "ul", "ol", "li", "h1", "h2", "h3", "h4",
    "hr", "br", "table", "thead", "tbody", "tr", "th", "td", "sup", "sub",
}

_renderer = MarkdownIt("commonmark", {"html": True}).enable("table")
# every link is rendered as a link and nh3 strips an unsafe target (rather than markdown-it leaving
# "[x](javascript:...)" as text): one place decides which URLs are safe
_renderer.validateLink = lambda url: True


# A list page renders the same summaries on every read: the HTML of short texts (most summaries) is
# kept per process, keyed by the text itself, so it can never be stale nor differ between readers.
# Bounded by what is kept, not only by the input: a short text can expand a lot (a reference link
# to a long URL repeated), so only HTML of at most CACHED_HTML_CHARS is kept, at most CACHED_TEXTS
# entries, least recently used out first: under 2048 x (4 + 16) K characters, ~40 MB per process.
CACHED_TEXTS = 2048
CACHED_TEXT_CHARS = 4096
CACHED_HTML_CHARS = 16384
_cache: OrderedDict[str, str] = OrderedDict()
_cache_lock = threading.Lock()


def render_markdown(text: str, *, cache: bool = True) -> str:
    """Safe HTML of a Markdown text. ``cache=False`` for text that is not stored (a preview while
    typing): it would only push stored summaries out of the cache."""
    text = text or ""
    if not cache or len(text) > CACHED_TEXT_CHARS:
        return _render(text)
    with _cache_lock:
        html = _cache.get(text)
        if html is not None:
            _cache.move_to_end(text)
            return html
    html = _render(text)
    if len(html) <= CACHED_HTML_CHARS:
        with _cache_lock:
            _cache[text] = html
            _cache.move_to_end(text)
            while len(_cache) > CACHED_TEXTS:
                _cache.popitem(last=False)
    return html


def _render(text: str) -> str:
    html = _renderer.render(text)
    return nh3.clean(
        html,
        tags=ALLOWED_TAGS,
        attributes={"a": {"href", "title"}},
        url_schemes={"http", "https", "mailto"},
        link_rel="noopener noreferrer nofollow",
    )

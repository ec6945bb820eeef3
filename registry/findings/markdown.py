"""Markdown to safe HTML: rendered with python-markdown, then sanitised with nh3 (no scripts,
no event handlers, no javascript: links)."""

import markdown as md
import nh3

ALLOWED_TAGS = {
    "a", "p", "em", "strong", "code", "pre", "blockquote", "ul", "ol", "li", "h1", "h2", "h3", "h4",
    "hr", "br", "table", "thead", "tbody", "tr", "th", "td", "sup", "sub",
}


def render_markdown(text: str) -> str:
    html = md.markdown(text or "", extensions=["fenced_code", "tables"])
    return nh3.clean(
        html,
        tags=ALLOWED_TAGS,
        attributes={"a": {"href", "title"}},
        url_schemes={"http", "https", "mailto"},
        link_rel="noopener noreferrer nofollow",
    )

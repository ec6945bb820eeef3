"""Findings as code: a key is the caller's own. Another user's finding carrying the tag
``key-<key>`` is neither updated in its place, nor linked by builds_on, nor blocks a submission."""

from __future__ import annotations

import httpx
from interp_registry.client import Registry
from interp_registry.findings import find_by_key


def _finding(pk: int, author: str) -> dict:
    return {"id": pk, "title": f"by {author}", "kind": "theory", "tags": ["key-induction"], "authors": [author]}


def _registry(findings: list[dict]) -> Registry:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/me/quota/"):
            return httpx.Response(200, json={"user": "alice", "active_runs": {}, "runs_per_day": {}})
        if request.url.path.endswith("/findings/"):
            return httpx.Response(200, json={"count": len(findings), "next": None, "results": findings})
        return httpx.Response(404, json={"detail": "no"})

    return Registry("https://registry.example", token="ifr_alice", transport=httpx.MockTransport(handler))


def test_a_strangers_finding_with_my_key_is_not_mine():
    assert find_by_key(_registry([_finding(7, "mallory")]), "induction") is None


def test_a_strangers_copy_of_my_key_does_not_block_me():
    found = find_by_key(_registry([_finding(7, "mallory"), _finding(3, "alice")]), "induction")
    assert found is not None and found.id == 3


def test_a_tag_that_the_registry_lower_cases_into_another_key_is_refused():
    import pytest
    from interp_registry.findings import FindingFileError, parse

    for tag in ("KEY-induction", "Key-induction", "kEy-x"):
        with pytest.raises(FindingFileError):
            parse(f"key: mine\ntitle: T\nkind: theory\ntags: [{tag}]\n")
    parse("key: mine\ntitle: T\nkind: theory\ntags: [keys, monkey-x]\n")  # not a key tag

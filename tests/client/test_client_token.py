"""The client never sends its token to another origin a `next` link names."""

from __future__ import annotations

import httpx
import pytest
from interp_registry.client import Registry


def _transport(seen: list[httpx.Request], next_url: str) -> httpx.MockTransport:
    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        if request.url.host == "registry.example" and "page=2" not in str(request.url):
            if request.url.path.endswith("/landscape/"):
                return httpx.Response(200, json={"findings": [{"finding": 1}], "page_info": {"next": next_url}})
            return httpx.Response(200, json={"results": [{"id": 1}], "next": next_url})
        return httpx.Response(200, json={"results": [{"id": 2}], "next": None, "findings": [{"finding": 2}],
                                         "page_info": {"next": None}})

    return httpx.MockTransport(handler)


@pytest.mark.parametrize("path", ["findings/", "landscape/"])
@pytest.mark.parametrize(
    "next_url",
    ["https://evil.example/api/v1/findings/?page=2", "http://registry.example/api/v1/findings/?page=2"],
)
def test_next_link_elsewhere_gets_no_token(path, next_url):
    seen: list[httpx.Request] = []
    reg = Registry("https://registry.example", token="ifr_secret", transport=_transport(seen, next_url))
    if path == "landscape/":
        assert [p["finding"] for p in reg.landscape()["findings"]] == [1, 2]
    else:
        assert [item["id"] for item in reg.paginate(path)] == [1, 2]  # followed on the registry's origin
    for request in seen:
        if (request.url.scheme, request.url.host) != ("https", "registry.example"):
            assert "authorization" not in request.headers, f"token sent to {request.url}"


def test_explicit_url_of_another_origin_is_refused():
    seen: list[httpx.Request] = []
    reg = Registry("https://registry.example", token="ifr_secret", transport=_transport(seen, ""))
    with pytest.raises(ValueError):
        reg.request("GET", "https://evil.example/api/v1/findings/")
    assert seen == []


def test_a_next_link_given_as_an_absolute_path_is_followed_on_the_registry():
    seen: list[httpx.Request] = []
    reg = Registry("https://registry.example", token="ifr_secret",
                   transport=_transport(seen, "/api/v1/findings/?page=2"))
    assert [item["id"] for item in reg.paginate("findings/")] == [1, 2]
    assert str(seen[1].url) == "https://registry.example/api/v1/findings/?page=2"

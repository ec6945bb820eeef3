"""A Content-Security-Policy on the dashboard's HTML pages.

Every script and stylesheet the dashboard uses is a local static file (no inline ``<script>``, no
``style`` attribute: the progress bars' widths are set by ``dashboard/progress.js``, and htmx is
configured not to inject its indicator styles nor to evaluate expressions), so the policy allows
'self' only. The API's JSON needs none, and the API's documentation pages (Swagger UI, ReDoc) and
the admin bring their own inline scripts: those are left out.
"""

from __future__ import annotations

from collections.abc import Callable

from django.conf import settings
from django.http import HttpRequest, HttpResponse

DEFAULT_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "object-src 'none'; frame-ancestors 'none'; base-uri 'self'; form-action 'self'"
)
EXEMPT_PREFIXES = ("/api/", "/admin/")


def content_security_policy() -> str:
    return getattr(settings, "DASHBOARD_CONTENT_SECURITY_POLICY", DEFAULT_POLICY)


class ContentSecurityPolicyMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]):
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        response = self.get_response(request)
        if request.path.startswith(EXEMPT_PREFIXES):
            return response
        if response.get("Content-Type", "").startswith("text/html"):
            response.headers.setdefault("Content-Security-Policy", content_security_policy())
        return response

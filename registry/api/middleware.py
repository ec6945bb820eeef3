"""An unreachable database is a 503 with Retry-After on every page and endpoint, never a 500.

``DatabaseUnavailableMiddleware`` (first in MIDDLEWARE) answers
``{"detail": "the database is unavailable; retry shortly", "errors": {}}`` with status 503 and a
``Retry-After`` header when a request fails on ``django.db.OperationalError`` or
``InterfaceError``: raised by a view (``process_exception``; DRF views answer the same through
``registry.api.errors.exception_handler``) or by a middleware after this one (Django turns those
into a 500 response before this middleware sees it: the ``got_request_exception`` signal marks
the request, and the 500 is replaced).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from django.core.signals import got_request_exception
from django.db import InterfaceError, OperationalError
from django.http import HttpRequest, HttpResponse, JsonResponse

logger = logging.getLogger(__name__)

DB_UNAVAILABLE_DETAIL = "the database is unavailable; retry shortly"
RETRY_AFTER_S = 5
_MARK = "_registry_database_unavailable"


def is_database_unavailable(exc: BaseException | None) -> bool:
    return isinstance(exc, OperationalError | InterfaceError)


def database_unavailable_response() -> JsonResponse:
    response = JsonResponse({"detail": DB_UNAVAILABLE_DETAIL, "errors": {}}, status=503)
    response["Retry-After"] = str(RETRY_AFTER_S)
    return response


def _mark_request(sender: Any, request: HttpRequest | None = None, **kwargs: Any) -> None:
    import sys

    if request is not None and is_database_unavailable(sys.exc_info()[1]):
        setattr(request, _MARK, True)


got_request_exception.connect(_mark_request, dispatch_uid="registry-database-unavailable")


class DatabaseUnavailableMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]):
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        try:
            response = self.get_response(request)
        except (OperationalError, InterfaceError):  # raised past Django's handlers (tests' raise_request_exception)
            logger.warning("database unavailable: %s %s", request.method, request.path, exc_info=True)
            return database_unavailable_response()
        if response.status_code == 500 and getattr(request, _MARK, False):
            return database_unavailable_response()
        return response

    def process_exception(self, request: HttpRequest, exception: Exception) -> HttpResponse | None:
        if is_database_unavailable(exception):
            logger.warning("database unavailable: %s %s", request.method, request.path, exc_info=exception)
            return database_unavailable_response()
        return None


def _content_length(request: HttpRequest) -> int | None:
    try:
        return int(request.META.get("CONTENT_LENGTH") or 0)
    except (TypeError, ValueError):
        return None


class BodySizeLimitMiddleware:
    """A request under ``/api/`` whose body is larger than ``API_MAX_BODY_BYTES`` (by its
    ``Content-Length``) is a 413 JSON before anything reads the body; an unreadable
    ``Content-Length`` is a 400 JSON. (The parsers also stop reading at the limit.)"""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]):
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        if request.path.startswith("/api/"):
            from registry.api.parsers import max_body_bytes, too_large_message

            length = _content_length(request)
            if length is None or length < 0:
                return JsonResponse(
                    {"detail": "invalid Content-Length header", "errors": {"Content-Length": ["not a number"]}},
                    status=400,
                )
            limit = max_body_bytes()
            if length > limit:
                return JsonResponse({"detail": too_large_message(limit), "errors": {}}, status=413)
        return self.get_response(request)

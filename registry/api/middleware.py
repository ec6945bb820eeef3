"""An unreachable database is a 503 with Retry-After on every page and endpoint, never a 500; so
is a write that lost to a concurrent one (a deadlock, a serialization failure).

``DatabaseUnavailableMiddleware`` (first in MIDDLEWARE) answers, when a request fails on a database
error of one of these kinds (``database_error_kind``):

- the database cannot be reached (``InterfaceError``; an ``OperationalError`` whose driver error
  has no SQLSTATE (psycopg's connection failures), SQLSTATE class 08 (connection exception) or
  57P01-57P03 (the server shutting down / starting); SQLite's "unable to open database"): 503
  ``{"detail": "the database is unavailable; retry shortly", "errors": {}}``, ``Retry-After: 5``,
  logged as a warning;
- a conflicting write (SQLSTATE class 40, transaction rollback: 40001 serialization failure,
  40P01 deadlock detected; SQLite's "database is locked"): 503
  ``{"detail": "the request collided with a conflicting write; retry", "errors": {}}``,
  ``Retry-After: 1``, logged as an error (a deadlock is a bug to look at);
- any other ``OperationalError`` (a lock or statement timeout, SQLite's "no such table"...) is
  no outage: it stays a 500, logged by Django.

It does so for an error raised by a view (``process_exception``; DRF views answer the same through
``registry.api.errors.exception_handler``) or by a middleware after this one (Django turns those
into a 500 response before this middleware sees it: the ``got_request_exception`` signal marks
the request, and the 500 is replaced).
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Callable
from typing import Any, Literal

from django.core.signals import got_request_exception
from django.db import InterfaceError, OperationalError
from django.http import HttpRequest, HttpResponse, JsonResponse

logger = logging.getLogger(__name__)

DB_UNAVAILABLE_DETAIL = "the database is unavailable; retry shortly"
RETRY_AFTER_S = 5
DB_CONFLICT_DETAIL = "the request collided with a conflicting write; retry"
CONFLICT_RETRY_AFTER_S = 1
_MARK = "_registry_database_error_kind"

DatabaseErrorKind = Literal["unavailable", "conflict"]
_SHUTDOWN_SQLSTATES = {"57P01", "57P02", "57P03"}  # admin/crash shutdown, cannot connect now


def database_error_kind(exc: BaseException | None) -> DatabaseErrorKind | None:
    """"unavailable", "conflict" or None (not a database error answered with a 503)."""
    if isinstance(exc, InterfaceError):
        return "unavailable"
    if not isinstance(exc, OperationalError):
        return None
    cause = exc.__cause__
    if isinstance(cause, sqlite3.Error):
        message = str(cause).lower()
        if "database is locked" in message or "database table is locked" in message:
            return "conflict"
        if "unable to open database" in message:
            return "unavailable"
        return None
    sqlstate = getattr(cause, "sqlstate", None)
    if not sqlstate:
        return "unavailable"  # psycopg's connection failures carry none (nor a bare OperationalError)
    if sqlstate.startswith("40"):
        return "conflict"
    if sqlstate.startswith("08") or sqlstate in _SHUTDOWN_SQLSTATES:
        return "unavailable"
    return None


def is_database_unavailable(exc: BaseException | None) -> bool:
    return database_error_kind(exc) == "unavailable"


def database_unavailable_response() -> JsonResponse:
    response = JsonResponse({"detail": DB_UNAVAILABLE_DETAIL, "errors": {}}, status=503)
    response["Retry-After"] = str(RETRY_AFTER_S)
    return response


def database_conflict_response() -> JsonResponse:
    response = JsonResponse({"detail": DB_CONFLICT_DETAIL, "errors": {}}, status=503)
    response["Retry-After"] = str(CONFLICT_RETRY_AFTER_S)
    return response


def database_error_response(request: Any, exc: BaseException) -> JsonResponse | None:
    """The 503 for ``exc`` (logged), or None when it is not one (the caller's 500 stands)."""
    kind = database_error_kind(exc)
    where = f"{getattr(request, 'method', '')} {getattr(request, 'path', '')}"
    if kind == "unavailable":
        logger.warning("database unavailable: %s", where, exc_info=exc)
        return database_unavailable_response()
    if kind == "conflict":
        logger.error("conflicting database write (deadlock or serialization failure): %s", where, exc_info=exc)
        return database_conflict_response()
    return None


def _mark_request(sender: Any, request: HttpRequest | None = None, **kwargs: Any) -> None:
    import sys

    kind = database_error_kind(sys.exc_info()[1])
    if request is not None and kind is not None:
        setattr(request, _MARK, kind)


got_request_exception.connect(_mark_request, dispatch_uid="registry-database-unavailable")


class DatabaseUnavailableMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]):
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        try:
            response = self.get_response(request)
        except (OperationalError, InterfaceError) as exc:  # raised past Django's handlers (raise_request_exception)
            answer = database_error_response(request, exc)
            if answer is None:
                raise
            return answer
        if response.status_code == 500:
            kind = getattr(request, _MARK, None)
            if kind == "unavailable":
                return database_unavailable_response()
            if kind == "conflict":
                return database_conflict_response()
        return response

    def process_exception(self, request: HttpRequest, exception: Exception) -> HttpResponse | None:
        return database_error_response(request, exception)


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

"""One JSON shape for every error: {"detail": message, "errors": {field: [messages]}}.

``errors`` is always present (empty when no field is to blame). Nested validation errors are
flattened to dotted names ("xrisk_sheet.dual_use", "seeds.0", "params.baseline") so that every
value is a list of strings.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.core.exceptions import RequestDataTooBig, SuspiciousOperation, TooManyFieldsSent, TooManyFilesSent
from django.db import DataError as DatabaseDataError
from django.db import InterfaceError as DatabaseInterfaceError
from django.db import OperationalError as DatabaseOperationalError
from django.http import Http404
from rest_framework import exceptions, status
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler

from registry.errors import ApplicationError

NON_FIELD_KEYS = ("non_field_errors", "detail")
logger = logging.getLogger(__name__)


def flatten_errors(errors: Any, prefix: str = "") -> dict[str, list[str]]:
    """DRF's nested error structure as {dotted field name: [messages]}."""
    flat: dict[str, list[str]] = {}

    def add(key: str, message: Any) -> None:
        flat.setdefault(key or "non_field_errors", []).append(str(message))

    def walk(node: Any, key: str) -> None:
        if isinstance(node, dict):
            for name, value in node.items():
                name = str(name)
                walk(value, key if name in NON_FIELD_KEYS and key else (f"{key}.{name}" if key else name))
        elif isinstance(node, (list, tuple)):
            if all(not isinstance(item, (dict, list, tuple)) for item in node):
                for item in node:
                    add(key, item)
            else:  # one entry per item of a list (many=True): keep the index
                for index, item in enumerate(node):
                    if item:
                        walk(item, f"{key}.{index}" if key else str(index))
        else:
            add(key, node)

    walk(errors, prefix)
    return flat


def _first_message(errors: dict[str, list[str]]) -> str:
    for key, messages in errors.items():
        return messages[0] if key in NON_FIELD_KEYS else f"{key}: {messages[0]}"
    return "invalid input"


def exception_handler(exc: Exception, context: dict) -> Response | None:
    if isinstance(exc, DatabaseOperationalError | DatabaseInterfaceError):
        # an outage or a conflicting write: a 503 (registry.api.middleware); any other database
        # error (a lock or statement timeout...) is re-raised by DRF: a 500, logged
        from registry.api.middleware import database_error_response

        answer = database_error_response(context.get("request"), exc)
        if answer is None:
            return None
        return Response(json.loads(answer.content), status=answer.status_code,
                        headers={"Retry-After": answer["Retry-After"]})
    bad_input = bad_input_response(exc)
    if bad_input is not None:
        return bad_input
    if isinstance(exc, ApplicationError):
        data = exc.as_detail()
        data["errors"] = flatten_errors(data.get("errors") or {})
        return Response(data, status=exc.status, headers=getattr(exc, "headers", None))
    if isinstance(exc, Http404):
        exc = exceptions.NotFound()
    elif isinstance(exc, DjangoPermissionDenied):
        exc = exceptions.PermissionDenied()
    response = drf_exception_handler(exc, context)
    if response is None:
        return None
    if isinstance(exc, exceptions.ValidationError):
        data = response.data if isinstance(response.data, dict) else {"non_field_errors": response.data}
        errors = flatten_errors(data)
        response.data = {"detail": f"invalid input: {_first_message(errors)}", "errors": errors}
        response.status_code = status.HTTP_400_BAD_REQUEST
    elif isinstance(response.data, dict) and "detail" in response.data:
        response.data = {"detail": str(response.data["detail"]), "errors": {}}
    else:
        response.data = {"detail": str(response.data), "errors": {}}
    return response


def bad_input_response(exc: BaseException) -> Response | None:
    """A 4xx for input that got past validation and failed below it (a safety net: the parsers,
    serializers and filters refuse it first), or for Django's own request limits."""
    if isinstance(exc, RequestDataTooBig):
        from registry.api.parsers import too_large_message

        return Response({"detail": too_large_message(), "errors": {}}, status=413)
    if isinstance(exc, TooManyFieldsSent | TooManyFilesSent):
        return Response({"detail": f"too many form fields: {exc}", "errors": {}}, status=400)
    if isinstance(exc, SuspiciousOperation):
        logger.warning("suspicious request refused: %s", exc)
        return Response({"detail": "bad request", "errors": {}}, status=400)
    if isinstance(exc, DatabaseDataError):
        # PostgreSQL refusing a value (NUL, an out-of-range number...): the request's fault
        logger.warning("database refused a value", exc_info=exc)
        return Response({"detail": "invalid input: a value could not be stored", "errors": {}}, status=400)
    if isinstance(exc, OverflowError):
        # SQLite refusing an integer beyond 64 bits (PostgreSQL's DataError above)
        return Response({"detail": "invalid input: a number is out of range", "errors": {}}, status=400)
    return None


def query_text(request: Any, name: str, *, max_length: int = 200) -> str | None:
    """A text query parameter, or None; NUL characters or an over-long value are a 400 naming it."""
    params = getattr(request, "query_params", None) or request.GET  # DRF or plain Django request
    value = params.get(name)
    if value in (None, ""):
        return None
    if "\x00" in value or len(value) > max_length:
        raise ApplicationError(
            f"{name} must be at most {max_length} characters, without NUL characters", field=name
        )
    return value

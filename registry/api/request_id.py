"""Request ids: every response carries ``X-Request-ID`` and every log record written while the
request is served carries it as ``request_id`` (registry/logcontext.py).

A valid incoming ``X-Request-ID`` (from a proxy or a client: 1-128 characters of letters, digits
and ``-_.:``) is kept and echoed, so one id follows a request through the proxy's log and ours;
anything else is replaced by a fresh one (32 hexadecimal digits).
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from asgiref.sync import iscoroutinefunction, markcoroutinefunction
from django.core.signals import request_finished
from django.http import HttpRequest, HttpResponseBase

from registry.logcontext import request_id_var

HEADER = "X-Request-ID"
VALID_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")


def _clear_request_id(sender: Any, **kwargs: Any) -> None:
    request_id_var.set(None)


request_finished.connect(_clear_request_id, dispatch_uid="registry-request-id-clear")


def request_id_for(request: HttpRequest) -> str:
    """The incoming id when valid, else a new one."""
    incoming = request.headers.get(HEADER, "")
    if VALID_REQUEST_ID.fullmatch(incoming):
        return incoming
    return uuid.uuid4().hex


class RequestIdMiddleware:
    """Sets ``request.request_id`` and the log context for the request; adds ``X-Request-ID`` to
    the response. Place it early in MIDDLEWARE (responses of later middleware get the header too)."""

    sync_capable = True
    async_capable = True

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponseBase | Awaitable[HttpResponseBase]]):
        self.get_response = get_response
        if iscoroutinefunction(get_response):
            markcoroutinefunction(self)

    def __call__(self, request: HttpRequest) -> HttpResponseBase | Awaitable[HttpResponseBase]:
        if iscoroutinefunction(self):
            return self.__acall__(request)
        request_id = self._start(request)
        response = self.get_response(request)
        response[HEADER] = request_id
        return response

    async def __acall__(self, request: HttpRequest) -> HttpResponseBase:
        request_id = self._start(request)
        response = await self.get_response(request)
        response[HEADER] = request_id
        return response

    @staticmethod
    def _start(request: HttpRequest) -> str:
        request_id = request_id_for(request)
        request.request_id = request_id
        # Not reset on the way out: Django logs a 4xx/5xx response ("Not Found: ...") after the
        # middleware chain returns. Cleared when the response is closed (request_finished).
        request_id_var.set(request_id)
        return request_id

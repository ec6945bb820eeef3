"""``Idempotency-Key`` on the API's POSTs, as Stripe does.

A POST under ``/api/`` that carries ``Idempotency-Key`` (1-255 printable ASCII characters, else a
400 naming the header) from a signed-in user (by the API's own authenticators:
``REST_FRAMEWORK["DEFAULT_AUTHENTICATION_CLASSES"]``) runs at most once per user and key:

- the key is reserved before the view runs (a row, unique on (user, key), committed at once);
- its response (status, body, Content-Type, Location, ...) is stored and replayed, with
  ``Idempotent-Replayed: true``, to every later request with the same key, method, path and body
  (content type and raw bytes), for ``IDEMPOTENCY_KEY_TTL_S`` seconds (24 h);
- the same key with another method, path or body: 422; while the first request still runs: 409;
- a 5xx or 429 response (or a streaming one) is not stored: the key is released and a retry runs
  afresh. Other 4xx responses are stored and replayed, as Stripe does;
- a secret is never stored: a view whose answer carries one (a new API token, a webhook's signing
  secret) names its fields in ``response.idempotency_secret_fields``; the stored body has them
  replaced by null, plus the header ``Idempotent-Secret-Withheld: <fields>`` (a body that is not a
  JSON object is stored as a JSON ``detail`` saying so). A replay answers that stored status and
  body, without the secret and with that header: the secret was shown once, to the first request
  (a client that lost it revokes/rotates and asks for a new one);
- the path must be storable text (a NUL character or a lone surrogate in it: a 400 naming the
  path) and resolve to a view (else the header is ignored and the request passes through to its
  usual 404; nothing is stored).

Anonymous requests (no API POST accepts them: each answers 401/403 and creates nothing) and
requests whose credentials fail pass through untouched: the header is ignored and the view
answers as usual. Other methods and paths ignore the header.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable
from typing import Any

from django.core.exceptions import RequestDataTooBig
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.http.request import RawPostDataException
from django.http.response import HttpResponseBase
from django.urls import Resolver404, resolve
from rest_framework.exceptions import APIException
from rest_framework.request import Request
from rest_framework.settings import api_settings

from registry.idempotency import services
from registry.idempotency.models import IdempotencyRecord

logger = logging.getLogger(__name__)

HEADER = "Idempotency-Key"
_META = "HTTP_IDEMPOTENCY_KEY"
_VALID_KEY = re.compile(r"[\x20-\x7e]{1,255}")
API_PREFIX = "/api/"
#: Response attribute a view sets to the names of the body's fields that hold a secret.
SECRET_FIELDS_ATTR = "idempotency_secret_fields"
#: Header of a stored (and replayed) response whose secret fields were withheld.
SECRET_WITHHELD_HEADER = "Idempotent-Secret-Withheld"
SECRET_WITHHELD_DETAIL = (
    "this answer carried a secret, shown once to the first request and not stored; "
    "it cannot be replayed"
)


def _error(status: int, detail: str, message: str, **headers: str) -> JsonResponse:
    response = JsonResponse({"detail": detail, "errors": {HEADER: [message]}}, status=status)
    for name, value in headers.items():
        response[name] = value
    return response


def _api_user(request: HttpRequest) -> Any:
    """The caller by the API's own authenticators (a test client's forced user too); None when
    the credentials are refused (the view will refuse them the same way)."""
    had_user, previous = hasattr(request, "user"), getattr(request, "user", None)
    try:
        authenticators = [auth() for auth in api_settings.DEFAULT_AUTHENTICATION_CLASSES]
        return Request(request, authenticators=authenticators).user
    except APIException:
        return None
    finally:  # DRF's Request sets request.user as a side effect: leave the view a clean request
        if had_user:
            request.user = previous


def _stored_headers(response: HttpResponseBase) -> dict[str, str]:
    return {name: response[name] for name in services.REPLAYED_HEADERS if response.has_header(name)}


def _replay(record: IdempotencyRecord) -> HttpResponse:
    response = HttpResponse(bytes(record.response_body or b""), status=record.status_code)
    if "Content-Type" not in record.response_headers:
        del response["Content-Type"]
    for name, value in record.response_headers.items():
        response[name] = value
    response["Idempotent-Replayed"] = "true"
    return response


def _storable_text(text: str) -> bool:
    """PostgreSQL's text columns take no NUL character, and UTF-8 no lone surrogate."""
    if "\x00" in text:
        return False
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _resolves(path_info: str) -> bool:
    try:
        resolve(path_info)
    except Resolver404:
        return False
    return True


def _stored_response(response: HttpResponseBase) -> tuple[bytes, dict[str, str]]:
    """The body and headers to store: the secret fields named by the view (SECRET_FIELDS_ATTR)
    replaced by null and marked with SECRET_WITHHELD_HEADER."""
    body, headers = response.content, _stored_headers(response)
    fields = tuple(getattr(response, SECRET_FIELDS_ATTR, None) or ())
    if not fields:
        return body, headers
    try:
        data = json.loads(body)
    except ValueError:
        data = None
    if isinstance(data, dict):
        withheld = [field for field in fields if data.get(field) is not None]
        if not withheld:
            return body, headers
        for field in withheld:
            data[field] = None
    else:  # not JSON (another renderer): store no part of it
        withheld = list(fields)
        data = {"detail": SECRET_WITHHELD_DETAIL, "errors": {}}
        headers.pop("Content-Disposition", None)
    headers["Content-Type"] = "application/json"
    headers[SECRET_WITHHELD_HEADER] = ", ".join(withheld)
    return json.dumps(data, ensure_ascii=False, separators=(",", ":")).encode(), headers


def _storable(response: HttpResponseBase) -> bool:
    return not response.streaming and response.status_code < 500 and response.status_code != 429


class IdempotencyMiddleware:
    """Placed after AuthenticationMiddleware (the session's user is then known)."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponseBase]):
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponseBase:
        if request.method != "POST" or _META not in request.META or not request.path.startswith(API_PREFIX):
            return self.get_response(request)
        try:
            # read before authenticating: a CSRF check may parse the form, consuming the stream
            body = request.body
        except (RequestDataTooBig, RawPostDataException):
            return self.get_response(request)  # the view answers it (nothing is created)
        user = _api_user(request)
        if user is None or not user.is_authenticated:
            return self.get_response(request)
        key = request.META[_META]
        if not _VALID_KEY.fullmatch(key):
            return _error(
                400,
                f"invalid {HEADER} header",
                "must be 1 to 255 printable ASCII characters",
            )
        if not (_storable_text(request.path) and _storable_text(request.path_info)):
            return JsonResponse(
                {"detail": "invalid path: it contains a NUL character or invalid UTF-8", "errors": {"path": [
                    "must be valid text without NUL characters"
                ]}},
                status=400,
            )
        if not _resolves(request.path_info):
            return self.get_response(request)  # a 404: nothing to run, nothing to store
        path = request.get_full_path()
        request_hash = services.request_fingerprint(
            method=request.method, path=path, content_type=request.META.get("CONTENT_TYPE", ""), body=body
        )
        reservation = services.key_reserve(
            user=user, key=key, request_hash=request_hash, method=request.method, path=request.path
        )
        record = reservation.record
        if not reservation.created:
            if record.request_hash != request_hash:
                return _error(
                    422,
                    f"this {HEADER} was used with another request",
                    f"already used for {record.method} {record.path} with another body; use a new key",
                )
            if record.completed_at is None:
                return _error(
                    409,
                    f"a request with this {HEADER} is still in progress",
                    "retry once the first request has finished",
                    **{"Retry-After": "1"},
                )
            return _replay(record)
        try:
            response = self.get_response(request)
        except BaseException:
            self._release(record)
            raise
        if _storable(response):
            try:
                body, headers = _stored_response(response)
                services.key_complete(
                    record=record, status_code=response.status_code, body=body, headers=headers
                )
            except Exception:  # noqa: BLE001 - the response stands; the reservation is abandoned
                logger.exception("could not store the response of idempotency key %r", key)
        else:
            self._release(record)
        return response

    @staticmethod
    def _release(record: IdempotencyRecord) -> None:
        try:
            services.key_release(record=record)
        except Exception:  # noqa: BLE001 - e.g. the database is down: the reservation is abandoned
            logger.exception("could not release idempotency key %r", record.key)

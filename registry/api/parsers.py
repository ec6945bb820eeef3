"""Request body parsers that refuse hostile input with a 4xx naming the field, never a 5xx.

``JSONParser`` (the API's default) answers:

* 413 when the body is larger than ``API_MAX_BODY_BYTES`` (also checked from ``Content-Length``
  before any view runs: ``registry.api.middleware.BodySizeLimitMiddleware``);
* 400 when the JSON nests deeper than ``API_MAX_JSON_DEPTH`` (checked before ``json.loads``, whose
  recursion would otherwise end in a ``RecursionError``), naming the top-level field;
* 400 naming the field (as a dotted path: ``environment.python``, ``seeds.3``) for a string, or an
  object key, holding a NUL character or a lone surrogate (neither can be stored: PostgreSQL
  refuses both), and, in strict mode (the default), for ``NaN``, ``Infinity``, ``-Infinity`` and
  numbers too large for a float (``1e400``).

``JSONParser.strict = False`` keeps non-finite numbers as floats so that a serializer names them
(the self-reported runs endpoint does, per measurement).

The form parsers check the same characters in every field name and value.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable, Mapping
from typing import Any

from django.conf import settings
from rest_framework import exceptions, parsers

DEFAULT_MAX_JSON_DEPTH = 64
DEFAULT_MAX_BODY_BYTES = 2 * 1024 * 1024


class RequestBodyTooLarge(exceptions.APIException):
    status_code = 413
    default_detail = "request body too large"
    default_code = "request_too_large"


def max_body_bytes() -> int:
    return int(getattr(settings, "API_MAX_BODY_BYTES", DEFAULT_MAX_BODY_BYTES))


def max_json_depth() -> int:
    return int(getattr(settings, "API_MAX_JSON_DEPTH", DEFAULT_MAX_JSON_DEPTH))


def too_large_message(limit: int | None = None) -> str:
    return f"request body too large: at most {limit or max_body_bytes()} bytes"


class _NonFinite:
    """What a NaN/Infinity literal parses to in strict mode: found and named by the walk."""

    __slots__ = ("literal",)

    def __init__(self, literal: str):
        self.literal = literal


_TOKENS = re.compile(r'"(?:[^"\\]|\\.)*"|[\[\]{}]', re.DOTALL)


def _check_depth(text: str, limit: int) -> None:
    """A ValidationError naming the top-level field when the JSON nests deeper than ``limit``."""
    if text.count("[") + text.count("{") <= limit:
        return  # cannot nest deeper than it has brackets
    depth = 0
    field = None
    last_string = None
    for match in _TOKENS.finditer(text):
        token = match.group()
        if token[0] == '"':
            last_string = token
        elif token in "[{":
            if depth == 1:
                field = last_string
            depth += 1
            if depth > limit:
                name = "non_field_errors"
                if field is not None:
                    try:
                        name = _safe_name(json.loads(field)) or name
                    except ValueError:
                        pass
                raise exceptions.ValidationError({name: [f"JSON nested deeper than {limit} levels"]})
        else:
            depth -= 1


def _safe_name(key: Any) -> str:
    """A field name fit to send back in a JSON answer (no NUL, no lone surrogate)."""
    text = str(key)
    return text.encode("utf-8", "backslashreplace").decode("utf-8").replace("\x00", "\\x00")


def _bad_text(value: str) -> str | None:
    if "\x00" in value:
        return "must not contain NUL characters"
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return "must not contain lone surrogates (invalid Unicode)"
    return None


def _join(path: str, key: Any) -> str:
    key = _safe_name(key)
    return f"{path}.{key}" if path else key


def refuse_unstorable(data: Any, *, strict: bool = True) -> Any:
    """``data`` (parsed JSON) with strict-mode NaN/Infinity refused, and every string holding a NUL
    or a lone surrogate refused: a ValidationError naming each field by its dotted path."""
    errors: dict[str, list[str]] = {}

    def fail(path: str, message: str) -> None:
        errors.setdefault(path or "non_field_errors", []).append(message)

    def convert(value: Any, path: str) -> Any:
        if isinstance(value, _NonFinite):
            if strict:
                fail(path, f"must be a finite number, not {value.literal}")
                return None
            return float(value.literal)
        if strict and isinstance(value, float) and not math.isfinite(value):
            fail(path, "must be a finite number")
        elif isinstance(value, str):
            problem = _bad_text(value)
            if problem:
                fail(path, problem)
        return value

    # iterative: the depth is already bounded, but a wide document should not cost a Python frame
    # per item
    root = [data]
    stack: list[tuple[Any, Any, str]] = [(root, 0, "")]
    while stack and len(errors) < 20:
        container, key, path = stack.pop()
        value = container[key]
        if isinstance(value, dict):
            for name in list(value):
                child = _join(path, name)
                problem = _bad_text(name) if isinstance(name, str) else None
                if problem:
                    fail(child, f"field name {problem}")
                stack.append((value, name, child))
        elif isinstance(value, list):
            for index in range(len(value)):
                stack.append((value, index, _join(path, index)))
        else:
            container[key] = convert(value, path)
    if errors:
        raise exceptions.ValidationError(errors)
    return root[0]


def _read_limited(stream: Any) -> bytes:
    if stream is None:
        return b""
    limit = max_body_bytes()
    body = stream.read(limit + 1)
    if len(body) > limit:
        raise RequestBodyTooLarge(too_large_message(limit))
    return body


class JSONParser(parsers.JSONParser):
    """DRF's JSON parser with a body size limit, a nesting depth limit, and storable text only."""

    strict = True

    def parse(self, stream: Any, media_type: str | None = None, parser_context: Mapping | None = None) -> Any:
        parser_context = parser_context or {}
        encoding = parser_context.get("encoding", settings.DEFAULT_CHARSET)
        body = _read_limited(stream)
        try:
            text = body.decode(encoding)
        except (UnicodeDecodeError, LookupError) as exc:
            raise exceptions.ParseError(f"JSON parse error - the body is not valid {encoding}") from exc
        _check_depth(text, max_json_depth())
        try:
            data = json.loads(text, parse_constant=_NonFinite)
        except RecursionError as exc:  # a safety net: _check_depth stops these first
            raise exceptions.ParseError(f"JSON nested deeper than {max_json_depth()} levels") from exc
        except ValueError as exc:
            raise exceptions.ParseError(f"JSON parse error - {exc}") from exc
        return refuse_unstorable(data, strict=self.strict)


class NonStrictJSONParser(JSONParser):
    """Reads NaN/Infinity literals as floats, so that a serializer refuses them by name."""

    strict = False


def _check_pairs(items: Iterable[tuple[str, Any]]) -> None:
    errors: dict[str, list[str]] = {}
    for name, value in items:
        problem = _bad_text(name)
        if problem:
            errors.setdefault(_safe_name(name), []).append(f"field name {problem}")
        elif isinstance(value, str):
            problem = _bad_text(value)
            if problem:
                errors.setdefault(_safe_name(name), []).append(problem)
    if errors:
        raise exceptions.ValidationError(errors)


class FormParser(parsers.FormParser):
    """URL-encoded forms: NUL characters refused by field name (the size limit is Django's)."""

    def parse(self, stream: Any, media_type: str | None = None, parser_context: Mapping | None = None) -> Any:
        data = super().parse(stream, media_type, parser_context)
        _check_pairs((k, v) for k, values in data.lists() for v in values)
        return data


class MultiPartParser(parsers.MultiPartParser):
    """Multipart forms: NUL characters refused by field name (the size limit is Django's)."""

    def parse(self, stream: Any, media_type: str | None = None, parser_context: Mapping | None = None) -> Any:
        result = super().parse(stream, media_type, parser_context)
        _check_pairs((k, v) for k, values in result.data.lists() for v in values)
        return result

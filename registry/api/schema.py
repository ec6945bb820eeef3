"""The OpenAPI schema's shared parts: the error components, the responses every operation shares
(added by ``postprocess_common_responses``, a drf-spectacular postprocessing hook), the
``Idempotency-Key`` header on every POST, and one tag per resource.

Every error under ``/api/`` has one shape (``registry.api.errors``)::

    {"detail": "a message", "errors": {"field": ["message", ...]}}

A 429 adds what was exceeded: a run quota (``quota``, ``limit``, ``used``, ``requested``,
``retry_after``) or the open event streams (``scope``, ``limit``, ``retry_after``); a throttle's
429 is the plain shape. A 429 or 503 carries ``Retry-After`` (seconds).
"""

from __future__ import annotations

import re
from typing import Any

from drf_spectacular.utils import OpenApiResponse
from rest_framework import serializers


class ErrorSerializer(serializers.Serializer):
    detail = serializers.CharField(help_text="What went wrong, for people.")
    errors = serializers.DictField(
        child=serializers.ListField(child=serializers.CharField()),
        help_text="The messages by field (dotted paths for nested fields: `xrisk_sheet.dual_use`, `seeds.3`); "
        "empty when no field is to blame.",
    )

    class Meta:
        ref_name = "Error"


class RateLimitedSerializer(ErrorSerializer):
    """A 429: a throttle (the plain error shape), a run quota (``quota`` and its figures) or the
    open event streams (``scope``)."""

    quota = serializers.ChoiceField(
        choices=["active_runs", "runs_per_day"], required=False, help_text="The run quota exceeded."
    )
    limit = serializers.IntegerField(required=False, help_text="The quota's (or the streams') limit.")
    used = serializers.IntegerField(required=False, help_text="The quota's current use.")
    requested = serializers.IntegerField(required=False, help_text="The runs this request asked for.")
    retry_after = serializers.IntegerField(required=False, help_text="Seconds to wait (also in Retry-After).")
    scope = serializers.ChoiceField(
        choices=["client", "total"], required=False, help_text="Open event streams: per client or per server."
    )

    class Meta:
        ref_name = "RateLimited"


ERROR_REF = {"$ref": "#/components/schemas/Error"}
RATE_LIMITED_REF = {"$ref": "#/components/schemas/RateLimited"}
_STRING_LIST = {"type": "array", "items": {"type": "string"}}
ERROR_COMPONENT = {
    "type": "object",
    "properties": {
        "detail": {"type": "string", "description": "What went wrong, for people."},
        "errors": {
            "type": "object",
            "additionalProperties": _STRING_LIST,
            "description": "The messages by field (dotted paths for nested fields: `xrisk_sheet.dual_use`, "
            "`seeds.3`); empty when no field is to blame.",
        },
    },
    "required": ["detail", "errors"],
}
RATE_LIMITED_COMPONENT = {
    "type": "object",
    "properties": {
        **ERROR_COMPONENT["properties"],
        "quota": {"enum": ["active_runs", "runs_per_day"], "type": "string", "description": "The run quota exceeded."},
        "limit": {"type": "integer", "description": "The quota's (or the streams') limit."},
        "used": {"type": "integer", "description": "The quota's current use."},
        "requested": {"type": "integer", "description": "The runs this request asked for."},
        "retry_after": {"type": "integer", "description": "Seconds to wait (also in Retry-After)."},
        "scope": {"enum": ["client", "total"], "type": "string",
                  "description": "Open event streams: per client or per server."},
    },
    "required": ["detail", "errors"],
}

# For views' own extend_schema(responses=...): the shared component, with a description of the case.


def error(description: str) -> OpenApiResponse:
    return OpenApiResponse(ErrorSerializer, description=description)


def rate_limited(description: str) -> OpenApiResponse:
    return OpenApiResponse(RateLimitedSerializer, description=description)


QUOTA_429 = rate_limited(
    "A run quota (active runs, runs per day: the body names it with its limit and use) or the reproductions "
    "throttle is exceeded; Retry-After says when to retry."
)
CONFLICT_409 = "Conflict: the resource's state forbids it (the body says why)"
IDEMPOTENCY_KEY_HEADER = "Idempotency-Key"

_RETRY_AFTER = {
    "Retry-After": {"schema": {"type": "integer"}, "description": "Seconds to wait before retrying."}
}

COMMON = {
    "400": "Invalid input: `errors` names each field (an invalid query parameter, body, "
    "Idempotency-Key or Content-Length header).",
    "401": "No valid credentials where they are needed, or invalid ones sent: no, an invalid, an expired or a "
    "revoked token (`WWW-Authenticate: Token`).",
    "403": "Signed in but not allowed (not an author, not staff, not the owner; or a session write without its "
    "CSRF token).",
    "404": "No such resource, or one the caller may not see (a hidden one answers like an absent one); on a "
    "list, a page that is not a whole number or is past the last one.",
    "409": "A request with this Idempotency-Key is still in progress (Retry-After), or the resource's state "
    "forbids the change.",
    "413": "The request body is larger than the registry's API_MAX_BODY_BYTES (2 MiB by default).",
    "415": "A request body in another format than JSON.",
    "422": "This Idempotency-Key was already used with another request (method, path or body); use a new key.",
    "429": "Too many requests (the API's throttles; Retry-After says when to retry).",
    "503": "The database is unavailable; retry after Retry-After seconds.",
}

#: one tag per resource, by path (first match wins)
TAGS: list[tuple[str, str]] = [
    (r"^/api/v1/(findings/\{id\}/claims/|claims/)", "claims"),
    (r"^/api/v1/findings/\{id\}/(effects|rollup)/|^/api/v1/landscape/", "effects"),
    (r"^/api/v1/findings/\{id\}/authors/|^/api/v1/me/invitations/", "authors"),
    (r"^/api/v1/findings/\{id\}/rereproduce/|^/api/v1/experiments/\{id\}/reproductions/|^/api/v1/reproductions/",
     "reproductions"),
    (r"^/api/v1/experiments/\{id\}/self-reported-runs/|^/api/v1/runs/|^/api/v1/artifacts/", "runs"),
    (r"^/api/v1/(findings/\{id\}/experiments/|experiments/)", "experiments"),
    (r"^/api/v1/findings/", "findings"),
    (r"^/api/v1/events/", "events"),
    (r"^/api/v1/subscriptions/", "subscriptions"),
    (r"^/api/v1/tokens/", "tokens"),
    (r"^/api/v1/(me/quota|users/\{username\}/quota)/", "quotas"),
    (r"^/api/v1/(plugins|metrics)/", "plugins"),
    (r"^/(healthz|readyz)$", "operations"),
]

TAG_DESCRIPTIONS = {
    "findings": "Findings: what is claimed, by whom, with its lineage.",
    "claims": "Claims: a finding's falsifiable statements about a metric, versioned.",
    "experiments": "Experiments: a plugin with parameters that tests a finding's claims.",
    "reproductions": "Reproductions: one request to run an experiment on some seeds.",
    "runs": "Runs: one seed of a reproduction, its measurements and artifacts.",
    "effects": "Measured safety and capability effects, per finding and across findings.",
    "authors": "Co-authorship by consent: invitations, accepting, declining, withdrawing.",
    "events": "The event log: as JSON pages, a live server-sent event stream and an Atom feed.",
    "subscriptions": "Webhook and feed subscriptions with their delivery logs.",
    "tokens": "The caller's own API tokens.",
    "quotas": "Run quotas: a user's caps and use.",
    "plugins": "The installed experiment plugins and their metric catalogue.",
    "operations": "Liveness and readiness probes.",
}

_METHODS = ("get", "put", "post", "patch", "delete", "head", "options", "trace")
_BODY_METHODS = ("post", "put", "patch")
#: operations that are not DRF views (no throttle)
_UNTHROTTLED = {"events_feed_retrieve"}


#: fields some callers do not get: worker host names are for signed-in callers only
#: (``registry.api.serializers.HidesHostsFromAnonymous``)
NOT_ALWAYS_PRESENT = {"Run": ["worker_host"], "RunBrief": ["worker_host"]}


def _tag(path: str) -> str | None:
    for pattern, tag in TAGS:
        if re.search(pattern, path):
            return tag
    return None


def _response(description: str, ref: dict[str, Any], *, retry_after: bool = False) -> dict[str, Any]:
    response: dict[str, Any] = {"content": {"application/json": {"schema": ref}}, "description": description}
    if retry_after:
        response["headers"] = dict(_RETRY_AFTER)
    return response


def _is_page(operation: dict[str, Any]) -> bool:
    content = operation.get("responses", {}).get("200", {}).get("content", {})
    ref = content.get("application/json", {}).get("schema", {}).get("$ref", "")
    return ref.startswith("#/components/schemas/Paginated")


def _empty_means_all(operation: dict[str, Any]) -> None:
    """A filter given empty (``?kind=``, as a form sends it) is no filter: "" is among its values."""
    for parameter in operation.get("parameters", []):
        schema = parameter.get("schema", {})
        if parameter.get("in") == "query" and "enum" in schema and "" not in schema["enum"]:
            schema["enum"] = [*schema["enum"], ""]


def postprocess_common_responses(result: dict[str, Any], generator: Any, request: Any, public: bool) -> dict:
    """Adds to every operation the error responses it can return that its view does not list, the
    ``Idempotency-Key`` header to every POST, a tag per resource, and the error components."""
    schemas = result.setdefault("components", {}).setdefault("schemas", {})
    schemas.setdefault("Error", ERROR_COMPONENT)
    schemas.setdefault("RateLimited", RATE_LIMITED_COMPONENT)
    for name, fields in NOT_ALWAYS_PRESENT.items():
        component = schemas.get(name)
        if component and "required" in component:
            component["required"] = [f for f in component["required"] if f not in fields]
            for field in fields:
                if field in component.get("properties", {}):
                    component["properties"][field]["description"] = "Signed-in callers only (absent otherwise)."
    used_tags: set[str] = set()
    for path, item in result.get("paths", {}).items():
        for method, operation in item.items():
            if method not in _METHODS:
                continue
            tag = _tag(path)
            if tag:
                operation["tags"] = [tag]
            used_tags.update(operation.get("tags", []))
            responses = operation.setdefault("responses", {})
            if not path.startswith("/api/"):  # the probes: no authentication, no body, no throttle
                operation["responses"] = dict(sorted(responses.items()))
                continue
            codes = ["400", "401", "503"]
            if operation.get("operationId") not in _UNTHROTTLED:
                codes.append("429")
            if "{" in path or _is_page(operation):  # a page past the last one is a 404
                codes.append("404")
            if method == "get":
                _empty_means_all(operation)
            if method != "get":
                codes.append("403")
            if method in _BODY_METHODS:
                codes += ["413", "415"]
            if method == "post":
                codes += ["409", "422"]
                parameters = operation.setdefault("parameters", [])
                if not any(p.get("name") == IDEMPOTENCY_KEY_HEADER for p in parameters):
                    parameters.append({
                        "in": "header",
                        "name": IDEMPOTENCY_KEY_HEADER,
                        "required": False,
                        "schema": {"type": "string", "minLength": 1, "maxLength": 255, "pattern": "^[ -~]+$"},
                        "description": "Makes a retry safe: the first response to this key (per user, for 24 h) "
                        "is replayed (with `Idempotent-Replayed: true`) and nothing is created again. The same "
                        "key with another request is a 422; while the first still runs, a 409.",
                    })
            for code in codes:
                if code in responses:
                    if code in ("429", "503") and "headers" not in responses[code]:
                        responses[code]["headers"] = dict(_RETRY_AFTER)
                    continue
                ref = RATE_LIMITED_REF if code == "429" else ERROR_REF
                responses[code] = _response(COMMON[code], ref, retry_after=code in ("429", "503"))
            operation["responses"] = dict(sorted(responses.items()))
    result["tags"] = [
        {"name": name, "description": TAG_DESCRIPTIONS[name]} for name in TAG_DESCRIPTIONS if name in used_tags
    ]
    return result

"""Request rate limits, counted in the configured cache (``CACHES["default"]``): Redis in
production, so every web process shares the counts; each process's memory on the embedded default.

* ``AnonRateThrottle`` / ``UserRateThrottle``: DRF's, for every API request (rates ``anon`` and
  ``user``).
* ``ReproductionRateThrottle``: scope ``reproductions`` (``API_THROTTLE_REPRODUCTIONS``, default
  60/hour per user): every request that queues runs (``POST`` an experiment or a reproduction
  through the API, the dashboard's "Queue runs" form). Beyond it: 429 with ``Retry-After``.

A cache that cannot be reached does not take the registry down: the request is let through and
the failure logged (rate limits are a protection, not a correctness property).

Who the client is (``client_address``): one rule for the anonymous throttle, the sign-in lockout
(django-axes' ``AXES_CLIENT_IP_CALLABLE``) and the event stream's per-client cap. With
``API_NUM_PROXIES`` = 0 (the default) it is ``REMOTE_ADDR`` and ``X-Forwarded-For`` is ignored (a
client can write anything there); behind N trusted proxies that each append to
``X-Forwarded-For``, it is the N-th entry from the right (DRF's ``NUM_PROXIES`` rule).
"""

from __future__ import annotations

import logging
import math
from typing import Any

from django.http import HttpRequest
from rest_framework import throttling
from rest_framework.settings import api_settings

logger = logging.getLogger(__name__)


def client_address(request: Any) -> str:
    """The client's address by the trusted-proxy rule above (``REST_FRAMEWORK["NUM_PROXIES"]``,
    from ``API_NUM_PROXIES``); the same identity DRF's throttles use. Takes a Django or DRF request."""
    meta = request.META
    remote_addr = meta.get("REMOTE_ADDR") or ""
    num_proxies = api_settings.NUM_PROXIES or 0
    xff = meta.get("HTTP_X_FORWARDED_FOR")
    if num_proxies <= 0 or not xff:
        return remote_addr
    addrs = xff.split(",")
    return addrs[-min(num_proxies, len(addrs))].strip() or remote_addr


class _FailOpen:
    def allow_request(self, request: Any, view: Any) -> bool:
        try:
            return super().allow_request(request, view)  # type: ignore[misc]
        except Exception:  # noqa: BLE001 - the cache is down: let the request through
            logger.warning("throttle cache unavailable; request not rate-limited", exc_info=True)
            return True


class AnonRateThrottle(_FailOpen, throttling.AnonRateThrottle):
    pass


class UserRateThrottle(_FailOpen, throttling.UserRateThrottle):
    pass


class ReproductionRateThrottle(_FailOpen, throttling.UserRateThrottle):
    """Requests that queue runs, per user (per address when anonymous); only POSTs count."""

    scope = "reproductions"

    def allow_request(self, request: Any, view: Any) -> bool:
        if request.method != "POST":
            return True
        return super().allow_request(request, view)


class ReproductionThrottledMixin:
    """For a viewset: ``ReproductionRateThrottle`` on top of the default throttles for the actions
    named in ``reproduction_throttled_actions``."""

    reproduction_throttled_actions: tuple[str, ...] = ()

    def get_throttles(self) -> list[throttling.BaseThrottle]:
        throttles = super().get_throttles()  # type: ignore[misc]
        if getattr(self, "action", None) in self.reproduction_throttled_actions:
            throttles.append(ReproductionRateThrottle())
        return throttles


class _DefaultThrottles:
    """``REST_FRAMEWORK["DEFAULT_THROTTLE_CLASSES"]`` read when the view runs, not at import (they
    name this module's classes: reading them while it loads would be a circular import)."""

    def __iter__(self) -> Any:
        return iter([*api_settings.DEFAULT_THROTTLE_CLASSES, ReproductionRateThrottle])


#: For a function view (``@throttle_classes(REPRODUCTION_THROTTLES)``) that queues runs: the
#: default throttles plus ``ReproductionRateThrottle``.
REPRODUCTION_THROTTLES: Any = _DefaultThrottles()


def throttle_wait(request: HttpRequest, throttle_class: type[throttling.SimpleRateThrottle]) -> int | None:
    """Apply a DRF throttle from a plain Django view: None when the request may go on, else the
    seconds to wait (for ``Retry-After``). Counts are shared with the API's (same cache, same key)."""
    throttle = throttle_class()
    if throttle.allow_request(request, None):
        return None
    wait = throttle.wait()
    return max(1, math.ceil(wait)) if wait is not None else 1

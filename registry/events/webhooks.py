"""Webhook signing and sending: Standard Webhooks signatures, secret rotation, and a connection
that goes only to the address that passed the public-address check.

Signing follows https://www.standardwebhooks.com: every delivery carries ``webhook-id`` (stable
across retries of that delivery), ``webhook-timestamp`` (unix seconds of this attempt) and
``webhook-signature: v1,<base64(HMAC-SHA256(key, "{id}.{timestamp}.{body}"))>``, with one
space-separated ``v1,`` entry per live secret (two during a rotation's grace period). Secrets are
``whsec_<base64 of 32 random bytes>`` and the key is the decoded part.

Subscriptions created before Standard Webhooks hold a 64-character hex secret without the prefix.
It is read the way the reference library (``standardwebhooks.Webhook(secret)``) and the
specification read an unprefixed secret: as base64, so a receiver passes its old secret unchanged
to the library. Their deliveries also keep the old ``X-Registry-Signature: sha256=<hex HMAC of the
body>`` header, so receivers written against it keep working until the secret is rotated.

Sending: the host is resolved once per attempt, every address is checked (loopback, private,
link-local, CGNAT, multicast, reserved, unspecified, NAT64, 6to4, Teredo, IPv4-mapped/compatible are
refused unless ``WEBHOOKS_ALLOW_PRIVATE_ADDRESSES``), then the socket connects to one of those
checked addresses itself: the HTTP client never resolves the name again. The Host header and, for
HTTPS, the SNI and certificate check use the URL's hostname. No redirects are followed.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import http.client
import ipaddress
import json
import logging
import random
import secrets
import socket
import ssl
import threading
import time
import unicodedata
from datetime import datetime, timedelta
from typing import NamedTuple
from urllib.parse import urlsplit

from django.conf import settings
from django.db import transaction
from django.db.models import F
from django.utils import timezone

from registry.errors import ApplicationError
from registry.events.models import Delivery, DeliveryAttempt, Event, Subscription

logger = logging.getLogger(__name__)

WEBHOOK_CONNECT_TIMEOUT_S = 5
WEBHOOK_TIMEOUT_S = 10  # the whole attempt: resolution, connection, TLS, request and response
# Retries: exponential back-off with full jitter for up to 3 days. Before retry n (n = 1 after the
# first failed attempt) the delivery waits a uniformly random time between 0 and
# WEBHOOK_RETRY_SCHEDULE_S[n-1] seconds (the last entry repeats): ceilings of 1 min, 2 min, 5 min,
# 10 min, 30 min, 1 h, 2 h, 4 h, 8 h, then 12 h. A retry that would fall after the delivery's
# creation + WEBHOOK_RETRY_WINDOW_S is moved to the window's end (one last attempt then); a delivery
# still failing at the end of the window, or after WEBHOOK_MAX_ATTEMPTS attempts (a safety bound; the
# expected number over 3 days is about 20), is ``failed``.
WEBHOOK_RETRY_WINDOW_S = 3 * 86400
WEBHOOK_RETRY_SCHEDULE_S: tuple[int, ...] = (60, 120, 300, 600, 1800, 3600, 7200, 14400, 28800, 43200)
WEBHOOK_MAX_ATTEMPTS = 50
WEBHOOK_BACKOFF_BASE_S = WEBHOOK_RETRY_SCHEDULE_S[0]  # kept for imports of the old name
WEBHOOK_RESPONSE_MAX_BYTES = 65536
DELIVERY_RESPONSE_LOG_BYTES = 1024  # the start of an answer's body kept in the delivery log
SECRET_PREFIX = "whsec_"
USER_AGENT = "interp-registry-webhooks/1"


# --- Secrets and signatures ----------------------------------------------------------------------

def webhook_secret_generate() -> str:
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(32)).decode()


def webhook_secret_key(secret: str) -> bytes:
    """The HMAC key of a secret: the base64-decoded part after ``whsec_``. An older unprefixed
    (hex) secret is decoded as base64 too, as the reference library does with any unprefixed
    secret; a string that is not base64 at all is used as raw bytes."""
    encoded = secret[len(SECRET_PREFIX):] if secret.startswith(SECRET_PREFIX) else secret
    try:
        key = base64.b64decode(encoded + "==")
    except (binascii.Error, ValueError):
        key = b""
    return key or secret.encode()


def webhook_sign(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    """One ``v1,<base64>`` signature of ``{id}.{timestamp}.{body}``."""
    signed = f"{msg_id}.{timestamp}.".encode() + body
    return "v1," + base64.b64encode(hmac.new(webhook_secret_key(secret), signed, hashlib.sha256).digest()).decode()


def webhook_signature(secret: str, body: bytes) -> str:
    """The pre-Standard-Webhooks signature (``X-Registry-Signature``), sent for legacy secrets only."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def webhook_live_secrets(subscription: Subscription, *, now: datetime | None = None) -> list[str]:
    """The current secret, then the previous one while its rotation grace period lasts."""
    now = now or timezone.now()
    live = [subscription.secret] if subscription.secret else []
    if (
        subscription.previous_secret
        and subscription.previous_secret_expires_at is not None
        and subscription.previous_secret_expires_at > now
    ):
        live.append(subscription.previous_secret)
    return live


def webhook_body(event: Event) -> bytes:
    """The event and what a receiver needs to act on it without a second call (computed now, see
    ``registry.events.presentation``): ``title`` (one line for people), ``finding_title``,
    ``links`` (absolute API and dashboard URLs of the finding and, for run.* events, of the run),
    ``verdict`` and ``measurements`` where the event has them. Only called for a delivery whose
    owner may see the event's finding (``delivery_send`` checks it first)."""
    from registry.events.presentation import event_details

    return json.dumps(
        {
            "id": event.id, "type": event.type, "finding": event.finding_id, "plugin": event.plugin,
            "payload": event.payload, "created_at": event.created_at.isoformat(), **event_details(event),
        },
        separators=(",", ":"),
        sort_keys=True,
    ).encode()


def webhook_headers(
    delivery: Delivery, body: bytes, *, now: datetime | None = None, timestamp: int | None = None
) -> dict[str, str]:
    """The headers of one attempt. ``webhook-timestamp`` is the real time of sending (``now`` is the
    sweep's clock, which decides which secrets are live)."""
    timestamp = int(time.time()) if timestamp is None else timestamp
    headers = _signed_headers(
        delivery.subscription, f"dlv_{delivery.pk}", timestamp, body, now=now, event_type=delivery.event.type
    )
    headers["X-Registry-Delivery"] = str(delivery.pk)
    return headers


def _signed_headers(
    subscription: Subscription, msg_id: str, timestamp: int, body: bytes, *, now: datetime | None, event_type: str
) -> dict[str, str]:
    """Standard Webhooks headers, one signature per live secret (and the old header for an old
    secret)."""
    live = webhook_live_secrets(subscription, now=now)
    headers = {
        "Content-Type": "application/json",
        "User-Agent": USER_AGENT,
        "webhook-id": msg_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": " ".join(webhook_sign(s, msg_id, timestamp, body) for s in live),
        "X-Registry-Event": event_type,
    }
    legacy = next((s for s in live if not s.startswith(SECRET_PREFIX)), None)
    if legacy:
        headers["X-Registry-Signature"] = webhook_signature(legacy, body)
    return headers


def subscription_secret_rotate(*, subscription: Subscription, now: datetime | None = None) -> tuple[Subscription, str]:
    """Give a webhook subscription a new secret; the current one stays valid (deliveries carry both
    signatures) for ``WEBHOOKS_SECRET_ROTATION_GRACE_S``. Rotating again within the grace period
    drops the oldest secret. Returns the subscription and the new secret (shown only now)."""
    if subscription.channel != Subscription.Channel.WEBHOOK:
        raise ApplicationError("only a webhook subscription has a secret to rotate", field="channel")
    now = now or timezone.now()
    secret = webhook_secret_generate()
    subscription.previous_secret = subscription.secret
    subscription.previous_secret_expires_at = now + timedelta(seconds=settings.WEBHOOKS_SECRET_ROTATION_GRACE_S)
    subscription.secret = secret
    subscription.save(update_fields=["secret", "previous_secret", "previous_secret_expires_at"])
    return subscription, secret


# --- Addresses -----------------------------------------------------------------------------------

_REFUSED_NETWORKS: tuple[tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, str], ...] = tuple(
    (ipaddress.ip_network(network), reason)
    for network, reason in (
        ("0.0.0.0/8", "unspecified"),
        ("10.0.0.0/8", "private"),
        ("100.64.0.0/10", "carrier-grade NAT"),
        ("127.0.0.0/8", "loopback"),
        ("169.254.0.0/16", "link-local"),
        ("172.16.0.0/12", "private"),
        ("192.0.0.0/24", "reserved"),
        ("192.0.2.0/24", "reserved"),
        ("192.168.0.0/16", "private"),
        ("198.18.0.0/15", "reserved"),
        ("198.51.100.0/24", "reserved"),
        ("203.0.113.0/24", "reserved"),
        ("224.0.0.0/4", "multicast"),
        ("240.0.0.0/4", "reserved"),
        ("::/128", "unspecified"),
        ("::1/128", "loopback"),
        ("::ffff:0:0/96", "IPv4-mapped"),
        ("::/96", "IPv4-compatible"),
        ("64:ff9b::/96", "NAT64"),
        ("64:ff9b:1::/48", "NAT64"),
        ("100::/64", "reserved"),
        ("2001::/32", "Teredo"),
        ("2001:db8::/32", "reserved"),
        ("2002::/16", "6to4"),
        ("fc00::/7", "private"),
        ("fe80::/10", "link-local"),
        ("fec0::/10", "reserved"),
        ("ff00::/8", "multicast"),
    )
)


def address_refusal(address: str) -> str:
    """Why a webhook may not connect to this IP address ("" when it may)."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    for network, reason in _REFUSED_NETWORKS:
        if ip.version == network.version and ip in network:
            return reason
    if ip.is_multicast:
        return "multicast"
    if ip.is_loopback or ip.is_link_local or ip.is_unspecified or ip.is_reserved or not ip.is_global:
        return "not a public address"
    return ""


def _resolve(hostname: str, port: int) -> list[str]:
    """Every address of the name, in the resolver's order, without duplicates. Tests replace this
    (or socket.getaddrinfo) to play a rebinding resolver."""
    seen: list[str] = []
    for info in socket.getaddrinfo(hostname, port, type=socket.SOCK_STREAM):
        address = info[4][0]
        if address not in seen:
            seen.append(address)
    return seen


def _checked_addresses(hostname: str, port: int) -> list[str]:
    """Resolve once and check every answer; raises ApplicationError(field="url") on refusal."""
    try:
        addresses = [str(ipaddress.ip_address(hostname))]  # an address literal needs no lookup
    except ValueError:
        addresses = []
    try:
        addresses = addresses or _resolve(hostname, port)
    except (OSError, UnicodeError) as exc:
        raise ApplicationError(f"url host {hostname!r} does not resolve ({exc})", field="url") from None
    if not addresses:
        raise ApplicationError(f"url host {hostname!r} does not resolve", field="url")
    if not settings.WEBHOOKS_ALLOW_PRIVATE_ADDRESSES:
        for address in addresses:
            reason = address_refusal(address)
            if reason:
                raise ApplicationError(
                    f"url must point to a public address: {hostname} resolves to {address} ({reason}); this "
                    "registry refuses loopback, private, link-local, CGNAT, multicast, reserved, NAT64, 6to4, "
                    "Teredo and IPv4-mapped addresses (WEBHOOKS_ALLOW_PRIVATE_ADDRESSES changes that)",
                    field="url",
                )
    return addresses


def _url_port(parts) -> int:
    try:
        port = parts.port
    except ValueError:
        raise ApplicationError("url has an invalid port", field="url") from None
    return port or (443 if parts.scheme == "https" else 80)


def _webhook_url_check(url: str) -> str:
    url = (url or "").strip()
    if not url:
        raise ApplicationError("a webhook subscription needs a url", field="url")
    if len(url) > 2000 or any(c.isspace() or ord(c) < 32 for c in url):
        raise ApplicationError("url must be an http(s) URL of at most 2000 characters", field="url")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ApplicationError("url must be an http(s) URL", field="url")
    _checked_addresses(parts.hostname, _url_port(parts))
    return url


def _is_private_host(hostname: str) -> bool:
    """Whether any address the name resolves to is refused (kept for callers of the old helper)."""
    try:
        addresses = _resolve(hostname, 0)
    except (OSError, UnicodeError):
        return False
    return any(address_refusal(a) for a in addresses)


# --- Sending -------------------------------------------------------------------------------------

def _ssl_context() -> ssl.SSLContext:
    """The TLS context of deliveries: the system's CAs, hostname check on. Tests replace it."""
    return ssl.create_default_context()


class _NoRedirect:
    """Kept for imports of the old name: http.client never follows redirects, so a 3xx is an
    answer like any other non-2xx one."""


class PostResult(NamedTuple):
    """The outcome of one POST: status code (None without an answer), error text ("" on a 2xx),
    latency in ms (resolution to the end of the answer, or to the failure) and the start of the
    answer's body as text (``response_text``)."""

    status_code: int | None
    error: str
    latency_ms: float
    body: str


def response_text(raw: bytes, limit: int = DELIVERY_RESPONSE_LOG_BYTES) -> str:
    """The first ``limit`` bytes of an answer as text for the delivery log: decoded as UTF-8
    (undecodable bytes replaced), control characters other than newline and tab removed."""
    text = raw[:limit].decode("utf-8", errors="replace")
    return "".join(c for c in text if c in "\n\t" or unicodedata.category(c) != "Cc")


def _post(url: str, body: bytes, headers: dict[str, str]) -> PostResult:
    """POST to the address that passed the check, never to a second resolution of the name.
    Returns the status code (or None), the error text, the latency and the answer's start."""
    started = time.monotonic()

    def result(code: int | None, error: str, raw: bytes = b"") -> PostResult:
        return PostResult(code, error, round((time.monotonic() - started) * 1000, 1), response_text(raw))

    parts = urlsplit(url)
    hostname = parts.hostname or ""
    try:
        port = _url_port(parts)
        addresses = _checked_addresses(hostname, port)
    except ApplicationError as exc:
        return result(None, f"refused: {exc.message}"[:1000])
    path = parts.path or "/"
    if parts.query:
        path += "?" + parts.query

    def connect_checked(_address, timeout, source_address=None):
        last: Exception | None = None
        for address in addresses:  # only the checked answers, in order
            remaining = WEBHOOK_TIMEOUT_S - (time.monotonic() - started)
            if remaining <= 0:
                break
            try:
                return socket.create_connection(
                    (address, port), timeout=min(WEBHOOK_CONNECT_TIMEOUT_S, remaining), source_address=source_address
                )
            except OSError as exc:
                last = exc
        raise last or TimeoutError("no time left to connect")

    if parts.scheme == "https":
        connection: http.client.HTTPConnection = http.client.HTTPSConnection(
            hostname, port, timeout=WEBHOOK_CONNECT_TIMEOUT_S, context=_ssl_context()
        )
    else:
        connection = http.client.HTTPConnection(hostname, port, timeout=WEBHOOK_CONNECT_TIMEOUT_S)
    connection._create_connection = connect_checked  # the name is never resolved again
    watchdog: threading.Timer | None = None
    try:
        connection.connect()  # TCP to the checked address, then TLS with SNI = hostname
        remaining = WEBHOOK_TIMEOUT_S - (time.monotonic() - started)
        if remaining <= 0:
            raise TimeoutError(f"no answer within {WEBHOOK_TIMEOUT_S} s")
        connection.sock.settimeout(remaining)
        sock = connection.sock

        def _cut() -> None:  # the 10 s total holds even against a server that drips bytes
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

        watchdog = threading.Timer(remaining, _cut)
        watchdog.daemon = True
        watchdog.start()
        connection.request("POST", path, body=body, headers=headers)
        response = connection.getresponse()
        raw = response.read(WEBHOOK_RESPONSE_MAX_BYTES)
        if time.monotonic() - started > WEBHOOK_TIMEOUT_S:
            raise TimeoutError(f"no complete answer within {WEBHOOK_TIMEOUT_S} s")
        if 200 <= response.status < 300:
            return result(response.status, "", raw)
        return result(response.status, f"HTTP {response.status} {response.reason}"[:1000], raw)
    except Exception as exc:  # noqa: BLE001 - any network failure is a failed attempt
        if time.monotonic() - started > WEBHOOK_TIMEOUT_S:
            return result(None, f"TimeoutError: no complete answer within {WEBHOOK_TIMEOUT_S} s")
        return result(None, f"{type(exc).__name__}: {exc}"[:1000])
    finally:
        if watchdog is not None:
            watchdog.cancel()
        connection.close()


def delivery_refusal(delivery: Delivery) -> str:
    """Why this delivery may not be sent at all ("" when it may): the subscription is no longer an
    active webhook, or its owner may no longer see the event. Not retried: waiting changes nothing."""
    from registry.events.services import event_visible_to

    subscription, event = delivery.subscription, delivery.event
    if not subscription.active or subscription.channel != Subscription.Channel.WEBHOOK:
        return "subscription is no longer an active webhook"
    if not event_visible_to(event, subscription.owner):
        return "the event's finding is not visible to the subscription's owner"
    return ""


def delivery_attempt_post(delivery: Delivery, body: bytes, *, now: datetime) -> PostResult:
    """Sign and POST one attempt. No database access (the sweep runs it in pool threads): the
    delivery comes with its subscription and event loaded."""
    return _post(delivery.subscription.url, body, webhook_headers(delivery, body, now=now))


def delivery_attempt_record(
    delivery: Delivery, outcome: PostResult, *, now: datetime, attempted_at: datetime | None = None,
) -> Delivery | None:
    """Record one attempt's outcome: the attempt log, the delivery's state and retry, the lease
    released, and the subscription's failure count (which may disable it).

    Recorded only while the row is still ours: ``delivery.claimed_until`` is the lease this attempt
    was sent under, and the update is conditional on the row still holding it. When another sweep
    (or a redelivery) took the row after the lease ran out, nothing is written, no attempt row
    either, and None is returned. ``now`` is when the outcome came (the retry schedule counts from
    it); ``attempted_at`` when the attempt started (default ``now``)."""
    code = outcome.status_code
    attempts = delivery.attempts + 1
    fields: dict = {
        "last_status_code": code, "last_latency_ms": outcome.latency_ms, "claimed_until": None,
    }
    if code is not None and 200 <= code < 300:
        fields.update(status=Delivery.Status.DELIVERED, last_error="", delivered_at=now, next_attempt_at=None)
    else:
        delivery.attempts = attempts  # the schedule reads the attempt number
        try:
            next_attempt_at = webhook_next_attempt(delivery, now=now)
        finally:
            delivery.attempts = attempts - 1
        fields.update(last_error=outcome.error or f"HTTP {code}", next_attempt_at=next_attempt_at)
        if next_attempt_at is None:
            fields["status"] = Delivery.Status.FAILED
    with transaction.atomic():
        ours = Delivery.objects.filter(pk=delivery.pk, claimed_until=delivery.claimed_until).update(
            attempts=F("attempts") + 1, **fields
        )
        if not ours:
            logger.warning(
                "webhook delivery %s: lease lost before the attempt was recorded; not recorded", delivery.pk
            )
            return None
        for name, value in fields.items():
            setattr(delivery, name, value)
        delivery.attempts = attempts
        DeliveryAttempt.objects.create(
            delivery=delivery, number=attempts, status_code=code, latency_ms=outcome.latency_ms,
            response_body=outcome.body,
            error="" if delivery.status == Delivery.Status.DELIVERED else delivery.last_error,
            attempted_at=attempted_at or now,
        )
        subscription_attempt_recorded(
            delivery.subscription, ok=delivery.status == Delivery.Status.DELIVERED, now=now
        )
    return delivery


def delivery_refused(delivery: Delivery, error: str) -> Delivery:
    delivery.status, delivery.last_error, delivery.next_attempt_at = Delivery.Status.FAILED, error, None
    delivery.claimed_until = None
    delivery.save(update_fields=["status", "last_error", "next_attempt_at", "claimed_until"])
    return delivery


def delivery_send(delivery: Delivery, *, now: datetime | None = None) -> Delivery:
    """One attempt in this thread: POST the event, record the outcome and schedule the retry.
    (The sweep does the same in three steps, the POST in a pool thread.)"""
    now = now or timezone.now()
    error = delivery_refusal(delivery)
    if error:
        return delivery_refused(delivery, error)
    body = webhook_body(delivery.event)
    recorded = delivery_attempt_record(delivery, delivery_attempt_post(delivery, body, now=now), now=now)
    if recorded is None:  # the row was taken meanwhile (see delivery_attempt_record)
        delivery.refresh_from_db()
        return delivery
    return recorded


# --- Retries and automatic disabling -------------------------------------------------------------

def _jitter(ceiling: float) -> float:
    """Full jitter: uniform in [0, ceiling]. Tests replace it to pin the schedule."""
    return random.uniform(0, ceiling)


def webhook_next_attempt(delivery: Delivery, *, now: datetime) -> datetime | None:
    """When to retry a delivery whose attempt number ``delivery.attempts`` just failed, or None
    when it has failed for good (see WEBHOOK_RETRY_SCHEDULE_S)."""
    if delivery.attempts >= WEBHOOK_MAX_ATTEMPTS:
        return None
    deadline = (delivery.created_at or now) + timedelta(seconds=WEBHOOK_RETRY_WINDOW_S)
    if now >= deadline:
        return None
    ceiling = WEBHOOK_RETRY_SCHEDULE_S[min(delivery.attempts, len(WEBHOOK_RETRY_SCHEDULE_S)) - 1]
    return min(now + timedelta(seconds=_jitter(ceiling)), deadline)


def subscription_attempt_recorded(subscription: Subscription, *, ok: bool, now: datetime) -> None:
    """Count consecutive failed attempts; disable the subscription once there are at least
    ``WEBHOOKS_DISABLE_AFTER_FAILURES`` of them spanning at least ``WEBHOOKS_DISABLE_AFTER_S``.

    The owner learns it from the subscription itself (``active: false``, ``disabled_reason``,
    ``disabled_at``) and from a ``subscription.disabled`` event whose audience is the owner alone
    (``Event.audience_public=False``, ``Event.audience={owner}``): no other reader of the log, the
    stream, the feeds or another user's webhooks sees it."""
    from django.db.models import F
    from django.db.models.functions import Coalesce

    rows = Subscription.objects.filter(pk=subscription.pk)
    if ok:
        if subscription.consecutive_failures or subscription.failing_since:
            rows.update(consecutive_failures=0, failing_since=None)
            subscription.consecutive_failures, subscription.failing_since = 0, None
        return
    rows.update(consecutive_failures=F("consecutive_failures") + 1, failing_since=Coalesce("failing_since", now))
    fresh = rows.values("consecutive_failures", "failing_since").first()
    if fresh is None:
        return
    failures, since = fresh["consecutive_failures"], fresh["failing_since"]
    subscription.consecutive_failures, subscription.failing_since = failures, since
    span = (now - since).total_seconds()
    if failures >= settings.WEBHOOKS_DISABLE_AFTER_FAILURES and span >= settings.WEBHOOKS_DISABLE_AFTER_S:
        reason = (
            f"disabled automatically after {fresh['consecutive_failures']} consecutive failed delivery attempts "
            f"over {span / 3600:.1f} h (since {fresh['failing_since'].isoformat()}); "
            'fix the endpoint, then PATCH {"active": true}'
        )[:500]
        with transaction.atomic():
            if rows.filter(active=True).update(active=False, disabled_reason=reason, disabled_at=now):
                subscription.active, subscription.disabled_reason, subscription.disabled_at = False, reason, now
                _disabled_event_emit(subscription, reason=reason, now=now)


def _subscription_url(subscription_id: int) -> str | None:
    from django.urls import NoReverseMatch, reverse

    try:
        return settings.REGISTRY_BASE_URL + reverse("api:subscription-detail", args=[subscription_id])
    except NoReverseMatch:
        return None


def _disabled_event_emit(subscription: Subscription, *, reason: str, now: datetime) -> Event:
    """``subscription.disabled``, for the owner only (never the secret or the URL)."""
    from registry.events.services import event_emit

    url = _subscription_url(subscription.pk)
    return event_emit(
        type="subscription.disabled",
        payload={
            "subscription": subscription.pk,
            "name": subscription.name,
            "reason": reason,
            "disabled_at": now.isoformat(),
            "reenable": {"method": "PATCH", "url": url, "body": {"active": True}},
        },
        audience=[subscription.owner_id],
    )


# --- Test ping -----------------------------------------------------------------------------------

def webhook_ping(subscription: Subscription, *, now: datetime | None = None) -> dict:
    """Send one signed ``ping`` to the subscription's URL now (inactive subscriptions too, to
    check an endpoint before re-enabling it). Not logged as a delivery, not retried, not counted
    towards automatic disabling. Returns the outcome."""
    if subscription.channel != Subscription.Channel.WEBHOOK:
        raise ApplicationError("only a webhook subscription can be pinged", field="channel")
    now = now or timezone.now()
    msg_id = f"ping_{secrets.token_hex(12)}"
    timestamp = int(time.time())
    body = json.dumps(
        {"type": "ping", "subscription": subscription.pk, "created_at": now.isoformat()},
        separators=(",", ":"), sort_keys=True,
    ).encode()
    headers = _signed_headers(subscription, msg_id, timestamp, body, now=now, event_type="ping")
    code, error, latency_ms, _answer = _post(subscription.url, body, headers)
    ok = code is not None and 200 <= code < 300
    return {
        "webhook_id": msg_id,
        "status": "delivered" if ok else "failed",
        "status_code": code,
        "latency_ms": latency_ms,
        "error": "" if ok else (error or f"HTTP {code}"),
    }


def delivery_redeliver(delivery: Delivery, *, now: datetime | None = None) -> Delivery:
    """Queue a new attempt of this delivery now (same ``webhook-id``); the next sweep sends it. A
    redelivered attempt that fails is retried only while the delivery's 3-day window lasts.

    Refused (409) while a sweep holds the delivery's lease (an attempt is being sent right now):
    queueing it again then would let a second sweep send the same delivery concurrently."""
    subscription = delivery.subscription
    if subscription.channel != Subscription.Channel.WEBHOOK:
        raise ApplicationError("only a webhook subscription has deliveries to resend", field="channel")
    if not subscription.active:
        raise ApplicationError(
            'the subscription is inactive; re-enable it (PATCH {"active": true}) before redelivering',
            field="active", status=409,
        )
    now = now or timezone.now()
    from django.db.models import Q

    queued = Delivery.objects.filter(pk=delivery.pk).filter(
        Q(claimed_until__isnull=True) | Q(claimed_until__lte=now)
    ).update(status=Delivery.Status.PENDING, next_attempt_at=now, delivered_at=None, claimed_until=None)
    if not queued:
        raise ApplicationError(
            "an attempt of this delivery is being sent right now; redeliver once it is recorded",
            field="delivery", status=409,
        )
    delivery.status, delivery.next_attempt_at, delivery.delivered_at = Delivery.Status.PENDING, now, None
    delivery.claimed_until = None
    return delivery

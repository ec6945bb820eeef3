"""Reserving, completing, releasing and purging idempotency keys.

A key is reserved by inserting its row in its own committed transaction before the request runs:
the unique constraint on (user, key) lets exactly one of two concurrent requests through; the
other finds the row in progress (409). A finished request's response is stored on the row and
replayed; a request that ended in a 5xx (or a 429) releases the key so that the client can retry.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone

from registry.idempotency.models import IdempotencyRecord

#: Headers of a stored response that a replay carries again (with ``Idempotent-Replayed: true``).
REPLAYED_HEADERS = ("Content-Type", "Location", "Allow", "Content-Language", "Content-Disposition")


def ttl() -> timedelta:
    return timedelta(seconds=float(settings.IDEMPOTENCY_KEY_TTL_S))


def request_fingerprint(*, method: str, path: str, content_type: str, body: bytes) -> str:
    """sha256 over the method, the full path (query string included), the content type and the raw
    body. A multipart body's boundary (random per request) is normalised away; a JSON body and a
    form body are different requests even when they carry the same data."""
    media_type, _, params = content_type.partition(";")
    media_type = media_type.strip().lower()
    if media_type == "multipart/form-data":
        for param in params.split(";"):
            name, _, value = param.strip().partition("=")
            if name.lower() == "boundary" and value:
                body = body.replace(value.strip('"').encode("latin-1"), b"BOUNDARY")
    digest = hashlib.sha256()
    for part in (method.upper().encode(), path.encode("utf-8", "surrogateescape"), media_type.encode()):
        digest.update(part + b"\n")
    digest.update(body)
    return digest.hexdigest()


@dataclass(frozen=True)
class Reservation:
    record: IdempotencyRecord
    created: bool  # True: this request holds the key and runs; False: the key was already taken


def key_reserve(*, user: Any, key: str, request_hash: str, method: str, path: str) -> Reservation:
    """Take ``key`` for ``user``, or return the row holding it. An expired row (older than the TTL)
    and an abandoned reservation (in progress for longer than IDEMPOTENCY_IN_PROGRESS_TIMEOUT_S,
    its process presumably dead) are deleted and the key taken afresh."""
    existing: IdempotencyRecord | None = None
    for _attempt in range(5):
        try:
            with transaction.atomic():
                record = IdempotencyRecord.objects.create(
                    user=user, key=key, request_hash=request_hash, method=method, path=path
                )
            return Reservation(record, True)
        except IntegrityError:
            pass
        existing = IdempotencyRecord.objects.filter(user=user, key=key).first()
        if existing is None:
            continue  # released (or purged) meanwhile: take it
        now = timezone.now()
        if existing.created_at <= now - ttl():
            IdempotencyRecord.objects.filter(pk=existing.pk, created_at=existing.created_at).delete()
            continue
        abandoned = timedelta(seconds=float(settings.IDEMPOTENCY_IN_PROGRESS_TIMEOUT_S))
        if existing.completed_at is None and existing.created_at <= now - abandoned:
            IdempotencyRecord.objects.filter(pk=existing.pk, completed_at__isnull=True).delete()
            continue
        return Reservation(existing, False)
    if existing is None:  # pragma: no cover - five releases in a row between insert and read
        raise RuntimeError("could not reserve the idempotency key")
    return Reservation(existing, False)


def key_complete(*, record: IdempotencyRecord, status_code: int, body: bytes, headers: dict[str, str]) -> None:
    """Store the response of the request that holds ``record``."""
    IdempotencyRecord.objects.filter(pk=record.pk, completed_at__isnull=True).update(
        status_code=status_code, response_body=body, response_headers=headers, completed_at=timezone.now()
    )


def key_release(*, record: IdempotencyRecord) -> None:
    """Give the key back (the request failed with a 5xx or was not storable): a retry runs afresh."""
    IdempotencyRecord.objects.filter(pk=record.pk, completed_at__isnull=True).delete()


def keys_purge_expired() -> int:
    """Delete the keys older than IDEMPOTENCY_KEY_TTL_S; the number deleted."""
    deleted, _ = IdempotencyRecord.objects.filter(created_at__lt=timezone.now() - ttl()).delete()
    return deleted

"""Creating, finding and revoking API tokens."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from datetime import UTC, datetime, timedelta

from django.contrib.auth.base_user import AbstractBaseUser
from django.db import transaction
from django.utils import timezone

from registry.accounts.models import ApiToken
from registry.errors import ApplicationError

# New secrets look like "ifr_" + 43 URL-safe characters (256 random bits): recognisable by secret
# scanners. Tokens carried over from rest_framework.authtoken are 40 hex characters; both work.
SECRET_MARKER = "ifr_"
PREFIX_LENGTH = 12
LAST_USED_RESOLUTION = timedelta(minutes=1)
MAX_EXPIRY_DAYS = 3650


class TokenInvalid(Exception):
    """The secret names no usable token; the message says why (invalid, expired, revoked, inactive)."""


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


def secret_prefix(secret: str) -> str:
    return secret[:PREFIX_LENGTH]


def new_secret() -> str:
    return SECRET_MARKER + secrets.token_urlsafe(32)


def token_create(
    *, user: AbstractBaseUser, name: str, expires_at: datetime | None = None, expires_in_days: int | None = None
) -> tuple[ApiToken, str]:
    """A new token for ``user``; returns it with its secret, which is never stored nor shown again."""
    name = (name or "").strip()
    if not name:
        raise ApplicationError("a token needs a name", field="name")
    if expires_at is not None and expires_in_days is not None:
        raise ApplicationError("give expires_in_days or expires_at, not both", field="expires_at")
    now = timezone.now()
    if expires_in_days is not None:
        if not 1 <= expires_in_days <= MAX_EXPIRY_DAYS:
            raise ApplicationError(f"expires_in_days must be between 1 and {MAX_EXPIRY_DAYS}", field="expires_in_days")
        expires_at = now + timedelta(days=expires_in_days)
    if expires_at is not None:
        if timezone.is_naive(expires_at):
            expires_at = timezone.make_aware(expires_at, UTC)
        if expires_at <= now:
            raise ApplicationError("expires_at must be in the future", field="expires_at")
        if expires_at > now + timedelta(days=MAX_EXPIRY_DAYS):
            raise ApplicationError(f"expires_at must be within {MAX_EXPIRY_DAYS} days", field="expires_at")
    secret = new_secret()
    token = ApiToken.objects.create(
        user=user,
        name=name[:100],
        prefix=secret_prefix(secret),
        key_hash=hash_secret(secret),
        created_at=now,
        expires_at=expires_at,
    )
    return token, secret


def token_list(*, user: AbstractBaseUser) -> list[ApiToken]:
    return list(ApiToken.objects.active().filter(user=user))


def token_revoke(*, user: AbstractBaseUser, pk: int) -> ApiToken | None:
    """Revoke one of ``user``'s own tokens; None when there is no such live token of theirs."""
    with transaction.atomic():
        token = ApiToken.objects.active().select_for_update().filter(user=user, pk=pk).first()
        if token is None:
            return None
        token.revoked_at = timezone.now()
        token.save(update_fields=["revoked_at"])
    return token


def token_authenticate(secret: str) -> ApiToken:
    """The live token whose secret this is (its user loaded), or TokenInvalid. The digest is compared
    in constant time; last_used_at is written at most once a minute per token."""
    digest = hash_secret(secret)
    match = None
    for candidate in ApiToken.objects.select_related("user").filter(prefix=secret_prefix(secret)):
        if hmac.compare_digest(candidate.key_hash, digest):
            match = candidate
    if match is None:
        raise TokenInvalid("Invalid token.")
    if match.is_revoked:
        raise TokenInvalid("Token revoked.")
    if match.is_expired:
        raise TokenInvalid("Token expired.")
    if not match.user.is_active:
        raise TokenInvalid("User inactive or deleted.")
    now = timezone.now()
    if match.last_used_at is None or now - match.last_used_at >= LAST_USED_RESOLUTION:
        ApiToken.objects.filter(pk=match.pk).update(last_used_at=now)
        match.last_used_at = now
    return match

"""API tokens, hashed at rest: the database holds a short public prefix and a SHA-256 digest, never a
usable secret. The secret is random (at least 160 bits), so a fast hash is enough: nothing to guess."""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.utils import timezone


class ApiTokenQuerySet(models.QuerySet):
    def active(self) -> ApiTokenQuerySet:
        """Not revoked (expired ones included: they are listed until revoked, marked expired)."""
        return self.filter(revoked_at__isnull=True)


class ApiToken(models.Model):
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="api_tokens")
    name = models.CharField(max_length=100)
    # The secret's first characters, in clear: to show which token is which and to find its row.
    prefix = models.CharField(max_length=16, db_index=True)
    # SHA-256 of the whole secret, hex.
    key_hash = models.CharField(max_length=64, unique=True)
    created_at = models.DateTimeField(default=timezone.now)
    expires_at = models.DateTimeField(null=True, blank=True)
    last_used_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)

    objects = ApiTokenQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at", "-id"]
        verbose_name = "API token"

    def __str__(self) -> str:
        return f"{self.name} ({self.prefix}…)"

    @property
    def is_expired(self) -> bool:
        return self.expires_at is not None and self.expires_at <= timezone.now()

    @property
    def is_revoked(self) -> bool:
        return self.revoked_at is not None


class Invitation(models.Model):
    """A single-use code that lets one person sign up while SIGNUP_MODE is "invite". Staff make them
    (the admin or ``manage.py create_invitation``) and pass them on, so the code is kept in clear:
    it opens nothing but the sign-up form, once, before it expires."""

    code = models.CharField(max_length=64, unique=True)
    note = models.CharField(max_length=200, blank=True, help_text="Who it is for (staff only see this).")
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(default=timezone.now)
    expires_at = models.DateTimeField(null=True, blank=True)
    used_by = models.OneToOneField(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="invitation"
    )
    used_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return f"{self.code[:8]}… ({self.note or 'invitation'})"

    @property
    def is_expired(self) -> bool:
        return self.expires_at is not None and self.expires_at <= timezone.now()

    @property
    def is_used(self) -> bool:
        return self.used_at is not None


class SignUp(models.Model):
    """A self-service account: inactive until its email address is confirmed. Accounts made by staff
    have none, and a user staff deactivate later is not reactivated by an old confirmation link
    (a link only confirms a sign-up still pending)."""

    user = models.OneToOneField(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="signup")
    email = models.EmailField()
    created_at = models.DateTimeField(default=timezone.now)
    confirmed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        verbose_name = "sign-up"

    def __str__(self) -> str:
        return f"{self.user} <{self.email}>"

    @property
    def is_confirmed(self) -> bool:
        return self.confirmed_at is not None

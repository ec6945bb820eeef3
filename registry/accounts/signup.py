"""Self-service accounts: sign-up (open, by invitation, or not at all), email confirmation, invitations,
the embedded run's demo user, and a per-address cap on the emails these send.

A sign-up makes an inactive user and a pending SignUp; the emailed link carries a token signed with
the SECRET_KEY (django.core.signing, time-stamped) naming the user and the address. Following it
(a POST: a mail scanner's GET confirms nothing) activates the user only while the sign-up is still
pending, so a link cannot revive an account staff have since deactivated.
"""

from __future__ import annotations

import logging
import secrets
import smtplib
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.base_user import AbstractBaseUser
from django.core import signing
from django.core.cache import cache
from django.core.mail import send_mail
from django.db import IntegrityError, transaction
from django.db.models import ProtectedError, Q, RestrictedError
from django.template.loader import render_to_string
from django.utils import timezone
from redis.exceptions import RedisError

from registry.accounts.models import Invitation, SignUp
from registry.errors import ApplicationError

logger = logging.getLogger(__name__)

CONFIRMATION_SALT = "registry.accounts.confirm-email"
DEMO_USERNAME = "demo"


def signup_mode() -> str:
    return settings.SIGNUP_MODE


def signup_allowed() -> bool:
    return signup_mode() in ("open", "invite")


# --- invitations ---------------------------------------------------------------------------------


def new_invitation_code() -> str:
    return secrets.token_urlsafe(16)


def invitation_create(
    *, created_by: AbstractBaseUser | None, note: str = "", expires_in_days: int | None = None
) -> Invitation:
    """A fresh single-use code; ``expires_in_days`` 0 = never (default INVITATION_DEFAULT_DAYS)."""
    days = settings.INVITATION_DEFAULT_DAYS if expires_in_days is None else expires_in_days
    if not 0 <= days <= 3650:
        raise ApplicationError("expires_in_days must be between 0 (never) and 3650", field="expires_in_days")
    now = timezone.now()
    return Invitation.objects.create(
        code=new_invitation_code(),
        note=(note or "")[:200],
        created_by=created_by,
        created_at=now,
        expires_at=now + timedelta(days=days) if days else None,
    )


def invitation_list(*, limit: int = 50) -> list[Invitation]:
    return list(Invitation.objects.select_related("created_by", "used_by")[:limit])


def invitation_usable(code: str) -> Invitation | None:
    invitation = Invitation.objects.filter(code=(code or "").strip()).first()
    if invitation is None or invitation.is_used or invitation.is_expired:
        return None
    return invitation


# --- sign-up and confirmation --------------------------------------------------------------------


@dataclass(frozen=True)
class SignUpResult:
    user: AbstractBaseUser
    token: str


def confirmation_token(signup: SignUp) -> str:
    return signing.dumps({"u": signup.user_id, "e": signup.email}, salt=CONFIRMATION_SALT)


def signup_create(*, username: str, email: str, password: str, invitation_code: str = "") -> SignUpResult:
    """An inactive user with a pending sign-up (the form has validated the fields and the password);
    in invite mode the code is claimed in the same transaction, so one code makes one account."""
    mode = signup_mode()
    if mode == "staff":
        raise ApplicationError("accounts are created by staff here", status=404)
    user_model = get_user_model()
    try:
        with transaction.atomic():
            invitation = None
            if mode == "invite":
                invitation = (
                    Invitation.objects.select_for_update().filter(code=(invitation_code or "").strip()).first()
                )
                if invitation is None or invitation.is_used or invitation.is_expired:
                    raise ApplicationError("this invitation code is not valid (unknown, used or expired)",
                                           field="invitation_code")
            user = user_model.objects.create_user(username=username, email=email, password=password, is_active=False)
            signup = SignUp.objects.create(user=user, email=email)
            if invitation is not None:
                invitation.used_by = user
                invitation.used_at = timezone.now()
                invitation.save(update_fields=["used_by", "used_at"])
    except IntegrityError:  # the same username signed up concurrently
        raise ApplicationError("a user with that username already exists", field="username") from None
    return SignUpResult(user=user, token=confirmation_token(signup))


def purge_expired_signups() -> int:
    """Delete the never-confirmed accounts whose link has expired (freeing their username and
    address for a new sign-up); an account staff activated by hand is kept. Returns how many."""
    cutoff = timezone.now() - timedelta(seconds=settings.ACCOUNT_CONFIRMATION_MAX_AGE_S)
    stale = SignUp.objects.filter(confirmed_at__isnull=True, created_at__lt=cutoff, user__is_active=False)
    users = get_user_model().objects.filter(pk__in=stale.values("user_id"), last_login__isnull=True)
    try:
        with transaction.atomic():
            _, per_model = users.delete()
    except (ProtectedError, RestrictedError):  # something was attached to one by hand: leave them to staff
        return 0
    return per_model.get(get_user_model()._meta.label, 0)


def signup_pending_for(token: str) -> SignUp | None:
    """The pending sign-up a confirmation token names; None when it is malformed, tampered with,
    expired, already confirmed, or for an address the account no longer has."""
    try:
        data = signing.loads(token, salt=CONFIRMATION_SALT, max_age=settings.ACCOUNT_CONFIRMATION_MAX_AGE_S)
    except signing.BadSignature:  # SignatureExpired included
        return None
    if not isinstance(data, dict) or not isinstance(data.get("u"), int) or not isinstance(data.get("e"), str):
        return None
    signup = SignUp.objects.select_related("user").filter(user_id=data["u"], confirmed_at__isnull=True).first()
    if signup is None or signup.email != data["e"] or signup.user.email != data["e"]:
        return None
    return signup


def signup_confirm(*, token: str) -> AbstractBaseUser | None:
    """Confirm the sign-up and activate its user; None when the token confirms nothing."""
    with transaction.atomic():
        signup = signup_pending_for(token)
        if signup is None:
            return None
        signup = SignUp.objects.select_for_update().select_related("user").get(pk=signup.pk)
        if signup.confirmed_at is not None or email_has_account(signup.email):
            return None  # confirmed already, or another sign-up with this address was confirmed first
        signup.confirmed_at = timezone.now()
        signup.save(update_fields=["confirmed_at"])
        user = signup.user
        user.is_active = True
        user.save(update_fields=["is_active"])
        _drop_rival_signups(signup)
    return user


def settle_signup_on_activation(sender: Any, instance: AbstractBaseUser, created: bool = False,
                                update_fields: Any = None, **kwargs: Any) -> None:
    """post_save of the user model: a user made active otherwise than by their link (staff, by hand)
    has their pending sign-up settled, so that neither that link nor a resent one can reactivate
    the account once staff deactivate it again."""
    if created or not instance.is_active or (update_fields is not None and "is_active" not in update_fields):
        return
    SignUp.objects.filter(user_id=instance.pk, confirmed_at__isnull=True).update(confirmed_at=timezone.now())


def pending_signups_by_email(email: str, *, limit: int = 5) -> list[SignUp]:
    """The address's sign-ups still pending, newest first (several when someone else signed up with
    it too: the link's owner picks theirs by the username each email names)."""
    return list(
        SignUp.objects.select_related("user")
        .filter(email__iexact=(email or "").strip(), confirmed_at__isnull=True, user__is_active=False)
        .order_by("-created_at", "-id")[:limit]
    )


def email_has_account(email: str) -> bool:
    """Whether an address belongs to an account other than a sign-up still waiting for its link: a
    pending sign-up holds no address (else anyone could squat one until the link expires)."""
    pending = Q(is_active=False, signup__isnull=False, signup__confirmed_at__isnull=True)
    return get_user_model().objects.filter(email__iexact=(email or "").strip()).exclude(pending).exists()


def _drop_rival_signups(signup: SignUp) -> None:
    """Once an address is confirmed, the other never-confirmed sign-ups with it are deleted."""
    rivals = SignUp.objects.filter(email__iexact=signup.email, confirmed_at__isnull=True,
                                   user__is_active=False, user__last_login__isnull=True).exclude(pk=signup.pk)
    users = get_user_model().objects.filter(pk__in=rivals.values("user_id"))
    try:
        with transaction.atomic():
            users.delete()
    except (ProtectedError, RestrictedError):  # something was attached to one by hand: leave them to staff
        pass


class MailUnavailable(Exception):
    """An account email cannot be sent now: the mail server or the cache that caps emails is down."""


#: a mail server refusing or unreachable (socket errors are OSError), the cache's Redis down
MAIL_ERRORS = (smtplib.SMTPException, OSError)
CACHE_ERRORS = (RedisError, OSError)


def _send(*, subject: str, message: str, to: str) -> None:
    try:
        send_mail(subject=subject, message=message, from_email=None, recipient_list=[to])
    except MAIL_ERRORS as exc:
        logger.warning("account email not sent (%s): %s", type(exc).__name__, exc)
        raise MailUnavailable from exc


def send_confirmation(*, signup: SignUp, confirm_url: str) -> None:
    context = {"user": signup.user, "confirm_url": confirm_url,
               "max_age_days": max(1, settings.ACCOUNT_CONFIRMATION_MAX_AGE_S // 86400)}
    _send(
        subject="Confirm your account on the Interpretability Findings Registry",
        message=render_to_string("dashboard/accounts/email/confirm_email.txt", context),
        to=signup.email,
    )


def send_account_exists(*, email: str, sign_in_url: str, reset_url: str, resend_url: str) -> None:
    """To an address that signed up again while it has an account: how to get in (the sign-up page
    answers as for a new address, so it tells nobody which addresses have accounts)."""
    context = {"email": email, "sign_in_url": sign_in_url, "reset_url": reset_url, "resend_url": resend_url}
    _send(
        subject="Your account on the Interpretability Findings Registry",
        message=render_to_string("dashboard/accounts/email/account_exists.txt", context),
        to=email,
    )


def email_allowance_key(address: str) -> str:
    return f"accounts:emails:{address}:{timezone.now():%Y%m%d%H}"


def email_allowance_take(address: str) -> bool:
    """One more account email requested from this client address this hour; False past the cap.
    Raises MailUnavailable when the cache cannot count (no uncapped emails during its outage)."""
    key = email_allowance_key(address)
    try:
        cache.add(key, 0, timeout=3600)
        try:
            count = cache.incr(key)
        except ValueError:  # evicted between add and incr
            cache.set(key, 1, timeout=3600)
            count = 1
    except CACHE_ERRORS as exc:
        logger.warning("account email cap unavailable (%s): %s", type(exc).__name__, exc)
        raise MailUnavailable from exc
    return count <= settings.ACCOUNT_EMAILS_PER_HOUR


# --- the embedded run's demo user ----------------------------------------------------------------


def demo_user_reset(*, username: str = DEMO_USERNAME) -> tuple[AbstractBaseUser, str]:
    """Create (or reuse) the demo user, active, with a fresh random password; returns the password.
    Refused unless DEMO_USER_ALLOWED (production.py sets it False)."""
    if not settings.DEMO_USER_ALLOWED:
        raise ApplicationError("no demo user here: DEMO_USER_ALLOWED is off (production settings)")
    user, _ = get_user_model().objects.get_or_create(username=username, defaults={"email": f"{username}@localhost"})
    password = secrets.token_urlsafe(12)
    user.set_password(password)
    user.is_active = True
    user.save()
    return user, password

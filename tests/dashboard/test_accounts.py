"""Accounts on the dashboard: sign-up in each SIGNUP_MODE, email confirmation, password reset, the
profile page (API tokens, password change), the demo user and invitations. Django's test client,
the real database, Django's locmem outbox for the emails (the console backend's stand-in)."""

from __future__ import annotations

import html
import os
import re
import subprocess
import sys
from datetime import timedelta
from io import StringIO
from pathlib import Path

import pytest
from django.contrib.auth import get_user_model
from django.core import mail, signing
from django.core.cache import cache
from django.core.management import call_command
from django.core.management.base import CommandError
from django.test import Client
from django.utils import timezone
from rest_framework.test import APIClient

from registry.accounts.models import ApiToken, Invitation, SignUp
from registry.accounts.services import token_create
from registry.accounts.signup import CONFIRMATION_SALT, email_allowance_key, invitation_create
from tests.factories import UserFactory

pytestmark = pytest.mark.django_db

ROOT = Path(__file__).resolve().parents[2]
SIGNUP = "/accounts/signup/"
LOGIN = "/accounts/login/"
PROFILE = "/accounts/profile/"
TOKENS = "/accounts/tokens/"
RESET = "/accounts/password/reset/"
RESEND = "/accounts/confirm/resend/"
CHANGE = "/accounts/password/change/"
PASSWORD = "correct horse battery"
User = get_user_model()


@pytest.fixture(autouse=True)
def _fresh_email_allowance():
    """The per-address email cap counts in the shared cache: each test starts from zero."""
    cache.delete(email_allowance_key("127.0.0.1"))
    yield
    cache.delete(email_allowance_key("127.0.0.1"))


@pytest.fixture
def member(db):
    user = UserFactory(email="member@example.org")
    user.set_password(PASSWORD)
    user.save()
    return user


def signed_in(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def form(username: str = "newcomer", email: str = "newcomer@example.org", **extra: str) -> dict[str, str]:
    return {"username": username, "email": email, "password1": PASSWORD, "password2": PASSWORD, **extra}


def field_errors(response, name: str) -> list[str]:
    """The errors shown inside the named field's own block (beside the field, not at the top)."""
    page = response.content.decode()
    match = re.search(
        rf'<div class="field field--invalid">\s*<label for="id_{name}">.*?</div>', page, flags=re.DOTALL
    )
    if match is None:
        return []
    return [html.unescape(e) for e in re.findall(r'<p class="field__error" role="alert">(.*?)</p>', match.group(0))]


def link_in(message: mail.EmailMessage) -> str:
    (url,) = re.findall(r"https?://\S+", message.body)
    return url.split("testserver", 1)[1]


def sign_in(client: Client, username: str, password: str = PASSWORD):
    return client.post(LOGIN, {"username": username, "password": password})


def signed_in_as(client: Client) -> int | None:
    value = client.session.get("_auth_user_id")
    return int(value) if value is not None else None


# --- open sign-up and confirmation ---------------------------------------------------------------


def test_open_sign_up_confirm_then_sign_in(settings, mailoutbox):
    settings.SIGNUP_MODE = "open"
    client = Client()
    page = client.get(SIGNUP)
    assert page.status_code == 200
    assert b'name="invitation_code"' not in page.content and b'name="password2"' in page.content

    response = client.post(SIGNUP, form())
    assert response.status_code == 302 and response["Location"] == "/accounts/signup/done/"
    assert client.get(response["Location"]).status_code == 200
    user = User.objects.get(username="newcomer")
    assert not user.is_active and user.email == "newcomer@example.org"
    assert SignUp.objects.get(user=user).confirmed_at is None
    (message,) = mailoutbox
    assert message.to == ["newcomer@example.org"]
    link = link_in(message)
    assert link.startswith("/accounts/confirm/")

    # inactive until confirmed: the right password does not sign in
    refused = sign_in(Client(), "newcomer")
    assert refused.status_code == 200 and b"correct username and password" in refused.content

    # the link's GET only asks (a mail scanner's prefetch confirms nothing); the POST confirms
    ask = client.get(link)
    assert ask.status_code == 200 and b"Confirm and activate" in ask.content and b"newcomer" in ask.content
    user.refresh_from_db()
    assert not user.is_active
    confirmed = client.post(link)
    assert confirmed.status_code == 302 and confirmed["Location"] == LOGIN
    user.refresh_from_db()
    assert user.is_active and SignUp.objects.get(user=user).confirmed_at is not None

    fresh = Client()
    assert sign_in(fresh, "newcomer").status_code == 302
    assert signed_in_as(fresh) == user.pk
    # the link is used up
    again = Client().post(link)
    assert again.status_code == 400 and b"not valid" in again.content


def test_sign_up_form_shows_each_error_beside_its_field(settings, member, mailoutbox):
    settings.SIGNUP_MODE = "open"
    client = Client()
    cases = [
        (form(password2="something else"), "password2", "didn’t match"),
        (form(password1="short", password2="short"), "password2", "too short"),
        (form(username=member.username.upper()), "username", "already exists"),
        (form(email="not an address"), "email", "valid email"),
        (form(username="bad name!"), "username", "valid username"),
        (form(username=""), "username", "required"),
    ]
    for data, field, text in cases:
        response = client.post(SIGNUP, data)
        assert response.status_code == 400, (field, text)
        errors = field_errors(response, field)
        assert any(text in e for e in errors), (field, text, errors)
    assert not User.objects.filter(username="newcomer").exists()
    assert mailoutbox == []


def test_sign_up_does_not_tell_which_addresses_have_accounts(settings, member, mailoutbox):
    """An address with an account gets the same answer as a new one (and no second account): the
    address itself is told how to sign in, as resend and password reset tell nobody else."""
    settings.SIGNUP_MODE = "open"
    fresh = Client().post(SIGNUP, form(username="someone", email="nobody-yet@example.org"))
    taken = Client().post(SIGNUP, form(username="prober", email="MEMBER@example.org"))
    assert taken.status_code == fresh.status_code == 302
    assert taken["Location"] == fresh["Location"] == "/accounts/signup/done/"
    assert not User.objects.filter(username="prober").exists()
    assert User.objects.filter(email__iexact="member@example.org").count() == 1
    notice = mailoutbox[-1]
    assert notice.to == ["MEMBER@example.org"]
    assert "/accounts/confirm/" not in notice.body.replace("/accounts/confirm/resend/", "")
    assert "/accounts/password/reset/" in notice.body
    # counted like any account email
    settings.ACCOUNT_EMAILS_PER_HOUR = 2
    assert Client().post(SIGNUP, form(username="prober2", email="member@example.org")).status_code == 429


def test_a_pending_sign_up_holds_no_address(settings, mailoutbox):
    """Someone signing up with another person's address does not lock them out until the link expires:
    the owner signs up too, each email names its username, and the first confirmed wins."""
    settings.SIGNUP_MODE = "open"
    assert Client().post(SIGNUP, form(username="squatter", email="owner@example.org")).status_code == 302
    assert Client().post(SIGNUP, form(username="owner", email="OWNER@example.org")).status_code == 302
    owner_mail = mailoutbox[-1]
    assert "/accounts/confirm/" in owner_mail.body and "Hello owner," in owner_mail.body
    # resend sends each pending sign-up's link, each naming its username, each counted in the allowance
    cache.delete(email_allowance_key("127.0.0.1"))
    assert Client().post(RESEND, {"email": "owner@example.org"}).status_code == 302
    assert sorted(m.body.split(",")[0] for m in mailoutbox[-2:]) == ["Hello owner", "Hello squatter"]
    assert cache.get(email_allowance_key("127.0.0.1")) == 2
    squatter_link = re.search(r"/accounts/confirm/[^/\s]+/", mailoutbox[0].body).group(0)
    owner_link = re.search(r"/accounts/confirm/[^/\s]+/", owner_mail.body).group(0)
    assert Client().post(owner_link).status_code == 302
    assert User.objects.get(username="owner").is_active
    assert not User.objects.filter(username="squatter").exists()  # the rival sign-up is gone
    assert Client().post(squatter_link).status_code == 400  # and its link confirms nothing
    # now the address has an account: a new sign-up with it makes none
    assert Client().post(SIGNUP, form(username="late", email="owner@example.org")).status_code == 302
    assert not User.objects.filter(username="late").exists()


def test_confirmation_links_that_confirm_nothing(settings, mailoutbox):
    settings.SIGNUP_MODE = "open"
    Client().post(SIGNUP, form())
    user = User.objects.get(username="newcomer")
    link = link_in(mailoutbox[0])
    token = link.rstrip("/").rsplit("/", 1)[1]
    for bad in ["garbage", token[:-2] + "xx", signing.dumps({"u": user.pk, "e": user.email}, salt="other-salt"),
                signing.dumps({"u": "x", "e": 1}, salt=CONFIRMATION_SALT), "%00%ff"]:
        for method in ("get", "post"):
            response = getattr(Client(), method)(f"/accounts/confirm/{bad}/")
            assert response.status_code == 400, (bad, method)
    user.refresh_from_db()
    assert not user.is_active

    settings.ACCOUNT_CONFIRMATION_MAX_AGE_S = -1  # every link is older than that: expired
    assert Client().post(link).status_code == 400
    settings.ACCOUNT_CONFIRMATION_MAX_AGE_S = 3600
    user.email = "changed@example.org"  # a link for an address the account no longer has
    user.save()
    assert Client().post(link).status_code == 400
    user.refresh_from_db()
    assert not user.is_active


def test_an_old_link_does_not_revive_an_account_staff_deactivated(settings, mailoutbox):
    settings.SIGNUP_MODE = "open"
    Client().post(SIGNUP, form())
    link = link_in(mailoutbox[0])
    assert Client().post(link).status_code == 302
    User.objects.filter(username="newcomer").update(is_active=False)  # staff deactivate it
    assert Client().post(link).status_code == 400
    assert not User.objects.get(username="newcomer").is_active


def test_a_link_does_not_revive_an_account_staff_activated_by_hand_then_deactivated(settings, mailoutbox):
    settings.SIGNUP_MODE = "open"
    Client().post(SIGNUP, form())
    link = link_in(mailoutbox[0])
    user = User.objects.get(username="newcomer")
    user.is_active = True  # staff activate it by hand (the admin), without the link
    user.save()
    user.is_active = False  # ... and later deactivate it
    user.save()
    assert Client().post(link).status_code == 400
    assert Client().post(RESEND, {"email": "newcomer@example.org"}).status_code == 302
    assert len(mailoutbox) == 1  # no new link either
    user.refresh_from_db()
    assert not user.is_active


def test_resend_confirmation_says_the_same_for_any_address(settings, member, mailoutbox):
    settings.SIGNUP_MODE = "open"
    Client().post(SIGNUP, form())
    mailoutbox.clear()
    client = Client()
    assert client.get(RESEND).status_code == 200
    for address in ["NEWCOMER@example.org", "nobody@example.org", member.email]:
        response = client.post(RESEND, {"email": address})
        assert response.status_code == 302 and response["Location"] == "/accounts/signup/done/"
    (message,) = mailoutbox  # only the pending sign-up gets a link
    assert message.to == ["newcomer@example.org"]
    assert Client().post(link_in(message)).status_code == 302
    assert User.objects.get(username="newcomer").is_active
    bad = client.post(RESEND, {"email": "nope"})
    assert bad.status_code == 400 and field_errors(bad, "email")


def test_account_emails_per_address_are_capped(settings, member, mailoutbox):
    settings.SIGNUP_MODE = "open"
    settings.ACCOUNT_EMAILS_PER_HOUR = 2
    client = Client()
    assert client.post(RESET, {"email": member.email}).status_code == 302
    assert client.post(SIGNUP, form()).status_code == 302
    capped = client.post(SIGNUP, form(username="third", email="third@example.org"))
    assert capped.status_code == 429 and b"Too many account emails" in capped.content
    assert client.post(RESET, {"email": member.email}).status_code == 429
    assert client.post(RESEND, {"email": "newcomer@example.org"}).status_code == 429
    assert len(mailoutbox) == 2 and not User.objects.filter(username="third").exists()
    elsewhere = Client(REMOTE_ADDR="10.9.8.7")  # another address has its own allowance
    try:
        assert elsewhere.post(RESET, {"email": member.email}).status_code == 302
    finally:
        cache.delete(email_allowance_key("10.9.8.7"))


def test_a_mail_server_or_email_cap_outage_is_a_503_never_a_500(settings, member):
    """Real outages: an SMTP backend pointed at a closed port, then a Redis cache on a closed port."""
    from tests.conftest import free_port

    settings.SIGNUP_MODE = "open"
    settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    settings.EMAIL_HOST, settings.EMAIL_PORT, settings.EMAIL_TIMEOUT = "127.0.0.1", free_port(), 2
    client = Client()

    def unavailable(response) -> bool:
        return (response.status_code == 503 and response["Retry-After"] == "60"
                and b"No email can be sent just now" in response.content)

    assert unavailable(client.post(SIGNUP, form()))
    pending = User.objects.get(username="newcomer")  # saved: its confirmation can be asked for again
    assert not pending.is_active
    # an address that has an account gets the same answer (the page tells nobody it exists)
    assert unavailable(client.post(SIGNUP, form(username="other", email=member.email)))
    assert not User.objects.filter(username="other").exists()
    # resend answers the same for an address with a pending sign-up (its send failed, logged) and without
    pending_answer = client.post(RESEND, {"email": "newcomer@example.org"})
    unknown_answer = client.post(RESEND, {"email": "nobody@example.org"})
    assert pending_answer.status_code == unknown_answer.status_code == 302
    assert pending_answer["Location"] == unknown_answer["Location"]
    # Django's reset form logs a failed send and answers as if sent (it tells nobody either)
    assert client.post(RESET, {"email": member.email}).status_code == 302

    settings.EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
    settings.CACHES = {"default": {
        "BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": f"redis://127.0.0.1:{free_port()}/0",
        "OPTIONS": {"socket_connect_timeout": 1, "socket_timeout": 1},
    }}
    assert unavailable(client.post(SIGNUP, form(username="third", email="third@example.org")))
    assert not User.objects.filter(username="third").exists()  # nothing saved before the cap could count
    assert unavailable(client.post(RESEND, {"email": "newcomer@example.org"}))
    reset = client.post(RESET, {"email": member.email})
    assert reset.status_code == 503 and reset["Retry-After"] == "60"
    assert not mail.outbox


# --- invitation-only and staff-only ---------------------------------------------------------------


def test_invite_mode_needs_a_valid_unused_code(settings, staff_user, mailoutbox):
    settings.SIGNUP_MODE = "invite"
    invitation = invitation_create(created_by=staff_user, note="for Ada")
    expired = invitation_create(created_by=staff_user, expires_in_days=1)
    Invitation.objects.filter(pk=expired.pk).update(expires_at=timezone.now() - timedelta(seconds=1))
    client = Client()

    prefilled = client.get(f"{SIGNUP}?code={invitation.code}")
    assert prefilled.status_code == 200 and f'value="{invitation.code}"'.encode() in prefilled.content
    for code, text in [("", "required"), ("no-such-code", "not valid"), (expired.code, "not valid")]:
        response = client.post(SIGNUP, form(invitation_code=code))
        assert response.status_code == 400
        assert any(text in e for e in field_errors(response, "invitation_code")), code
    assert not User.objects.filter(username="newcomer").exists()

    assert client.post(SIGNUP, form(invitation_code=invitation.code)).status_code == 302
    invitation.refresh_from_db()
    user = User.objects.get(username="newcomer")
    assert invitation.used_by == user and invitation.used_at is not None and not user.is_active
    assert len(mailoutbox) == 1

    reused = Client().post(SIGNUP, form(username="second", email="second@example.org", invitation_code=invitation.code))
    assert reused.status_code == 400 and any("not valid" in e for e in field_errors(reused, "invitation_code"))
    assert not User.objects.filter(username="second").exists()


def test_staff_mode_has_no_sign_up(settings, mailoutbox):
    settings.SIGNUP_MODE = "staff"
    client = Client()
    page = client.get(SIGNUP)
    assert page.status_code == 404 and b"created by its staff" in page.content
    assert client.post(SIGNUP, form()).status_code == 404
    assert not User.objects.filter(username="newcomer").exists() and mailoutbox == []
    login = client.get(LOGIN).content.decode()
    assert 'href="/accounts/signup/"' not in login and "created by staff" in login
    assert 'href="/accounts/password/reset/"' in login


def test_login_page_links_to_sign_up_and_password_reset(settings):
    settings.SIGNUP_MODE = "open"
    page = Client().get(LOGIN)
    assert page.status_code == 200
    text = page.content.decode()
    assert 'href="/accounts/signup/"' in text and 'href="/accounts/password/reset/"' in text


def test_invitations_from_the_command_and_the_admin(settings, staff_user, mailoutbox):
    settings.SIGNUP_MODE = "invite"
    out, err = StringIO(), StringIO()
    call_command("create_invitation", "--note", "for Bo", "--expires-in-days", "3", stdout=out, stderr=err)
    code = out.getvalue().strip()
    assert f"/accounts/signup/?code={code}" in err.getvalue()
    invitation = Invitation.objects.get(code=code)
    assert invitation.note == "for Bo"
    assert timedelta(days=2) < invitation.expires_at - timezone.now() <= timedelta(days=3)
    with pytest.raises(CommandError):
        call_command("create_invitation", "--expires-in-days", "-1", stdout=StringIO(), stderr=StringIO())

    staff_user.is_superuser = True
    staff_user.save()
    admin = signed_in(staff_user)
    add = admin.get("/admin/accounts/invitation/add/")
    assert add.status_code == 200
    (prefilled,) = re.findall(r'name="code" value="([^"]+)"', add.content.decode())
    response = admin.post("/admin/accounts/invitation/add/", {"code": prefilled, "note": "from the admin",
                                                               "expires_at_0": "", "expires_at_1": ""})
    assert response.status_code == 302
    assert Invitation.objects.get(code=prefilled).created_by == staff_user
    assert Client().post(SIGNUP, form(invitation_code=prefilled)).status_code == 302


def test_the_staff_invitations_page(settings, staff_user, member, mailoutbox):
    settings.SIGNUP_MODE = "invite"
    url = "/accounts/invitations/"
    anonymous = Client().get(url)
    assert anonymous.status_code == 302 and anonymous["Location"].startswith(LOGIN)
    stranger = signed_in(member)
    assert stranger.get(url).status_code == 403
    assert stranger.post(url, {"note": "sneaky", "expires_in_days": "7"}).status_code == 403
    assert not Invitation.objects.exists()
    assert "/accounts/invitations/" not in stranger.get(PROFILE).content.decode()

    staff = signed_in(staff_user)
    assert 'href="/accounts/invitations/"' in staff.get(PROFILE).content.decode()
    page = staff.get(url)
    assert page.status_code == 200 and b"No invitation yet" in page.content
    bad = staff.post(url, {"note": "x", "expires_in_days": "abc"})
    assert bad.status_code == 400 and field_errors(bad, "expires_in_days") and not Invitation.objects.exists()
    created = staff.post(url, {"note": "for Cy", "expires_in_days": "7"})
    assert created.status_code == 201
    invitation = Invitation.objects.get()
    text = created.content.decode()
    assert invitation.created_by == staff_user and invitation.note == "for Cy"
    assert f'id="invitation-code">{invitation.code}<' in text
    assert f"http://testserver/accounts/signup/?code={invitation.code}" in text
    assert Client().post(SIGNUP, form(invitation_code=invitation.code)).status_code == 302
    assert "newcomer" in staff.get(url).content.decode()  # listed as used by the new account


def test_a_never_confirmed_sign_up_gives_its_name_back_once_its_link_expired(settings, mailoutbox):
    settings.SIGNUP_MODE = "open"
    assert Client().post(SIGNUP, form()).status_code == 302
    stale_link = link_in(mailoutbox[0])
    taken = Client().post(SIGNUP, form(email="other@example.org"))
    assert taken.status_code == 400 and field_errors(taken, "username")
    SignUp.objects.update(created_at=timezone.now() - timedelta(seconds=settings.ACCOUNT_CONFIRMATION_MAX_AGE_S + 1))
    assert Client().post(SIGNUP, form(email="other@example.org")).status_code == 302
    user = User.objects.get(username="newcomer")
    assert user.email == "other@example.org" and SignUp.objects.count() == 1
    assert Client().post(stale_link).status_code == 400  # the old link names the removed account
    assert Client().post(link_in(mailoutbox[1])).status_code == 302


# --- password reset ------------------------------------------------------------------------------


def test_password_reset_flow(member, mailoutbox):
    client = Client()
    assert client.get(RESET).status_code == 200
    response = client.post(RESET, {"email": member.email})
    assert response.status_code == 302 and response["Location"] == "/accounts/password/reset/done/"
    assert client.get(response["Location"]).status_code == 200
    (message,) = mailoutbox
    assert message.to == [member.email] and "Reset your password" in message.subject
    link = link_in(message)

    form_page = client.get(link, follow=True)  # Django swaps the token for a session and redirects
    assert form_page.status_code == 200 and b'name="new_password1"' in form_page.content
    set_url = form_page.redirect_chain[-1][0]
    mismatch = client.post(set_url, {"new_password1": "a brand new secret", "new_password2": "different"})
    assert mismatch.status_code == 400 and any("didn’t match" in e for e in field_errors(mismatch, "new_password2"))
    done = client.post(set_url, {"new_password1": "a brand new secret", "new_password2": "a brand new secret"})
    assert done.status_code == 302 and done["Location"] == "/accounts/reset/done/"
    assert client.get(done["Location"]).status_code == 200

    assert sign_in(Client(), member.username).status_code == 200  # the old password no longer works
    assert sign_in(Client(), member.username, "a brand new secret").status_code == 302
    used = Client().get(link, follow=True)
    assert used.status_code == 200 and b"not valid" in used.content


def test_password_reset_sends_nothing_to_unknown_or_unconfirmed_addresses(settings, mailoutbox):
    settings.SIGNUP_MODE = "open"
    Client().post(SIGNUP, form())
    mailoutbox.clear()
    for address in ["nobody@example.org", "newcomer@example.org"]:
        response = Client().post(RESET, {"email": address})
        assert response.status_code == 302 and response["Location"] == "/accounts/password/reset/done/"
    assert mailoutbox == []
    bad = Client().post(RESET, {"email": "not-an-address"})
    assert bad.status_code == 400 and field_errors(bad, "email")


# --- the profile page: tokens and password -------------------------------------------------------


def test_profile_needs_a_signed_in_user(client):
    for url in (PROFILE, TOKENS):
        response = client.get(url)
        assert response.status_code == 302 and response["Location"].startswith(f"{LOGIN}?next=")
    assert client.post(TOKENS, {"name": "x"}).status_code == 302
    assert client.post(CHANGE, {}).status_code == 302
    assert not ApiToken.objects.exists()


def test_profile_shows_the_account_and_is_linked_from_the_header(member):
    client = signed_in(member)
    page = client.get(PROFILE)
    assert page.status_code == 200
    text = page.content.decode()
    assert member.username in text and member.email in text
    assert 'id="tokens"' in text and 'name="old_password"' in text
    assert 'href="/accounts/profile/" class="site-user__link" aria-current="page"' in text
    assert client.get(TOKENS)["Location"] == "/accounts/profile/#tokens"
    assert 'href="/accounts/profile/"' in client.get("/").content.decode()
    assert "/accounts/profile/" not in Client().get("/").content.decode()


def test_a_token_is_shown_once_works_and_is_revoked(member, other_user):
    client = signed_in(member)
    response = client.post(TOKENS, {"name": "laptop", "expires_in_days": "30"})
    assert response.status_code == 201
    (secret,) = re.findall(r'id="token-secret">([^<]+)<', response.content.decode())
    token = ApiToken.objects.get(user=member)
    assert token.name == "laptop"
    assert timedelta(days=29) < token.expires_at - timezone.now() <= timedelta(days=30)
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Token {secret}")
    assert api.get("/api/v1/tokens/").status_code == 200

    listing = client.get(PROFILE).content.decode()
    assert "laptop" in listing and token.prefix in listing and secret not in listing

    # a stranger (signed in) and an anonymous visitor cannot revoke it
    stranger = signed_in(other_user)
    refused = stranger.post(f"/accounts/tokens/{token.pk}/revoke/", follow=True)
    assert refused.status_code == 200 and b"No such token" in refused.content
    anonymous = Client().post(f"/accounts/tokens/{token.pk}/revoke/")
    assert anonymous.status_code == 302 and anonymous["Location"].startswith(LOGIN)
    token.refresh_from_db()
    assert token.revoked_at is None and api.get("/api/v1/tokens/").status_code == 200

    revoked = client.post(f"/accounts/tokens/{token.pk}/revoke/")
    assert revoked.status_code == 302 and revoked["Location"] == "/accounts/profile/#tokens"
    assert "revoked" in client.get(PROFILE).content.decode()
    token.refresh_from_db()
    assert token.revoked_at is not None and api.get("/api/v1/tokens/").status_code == 401
    assert client.post("/accounts/tokens/999999/revoke/").status_code == 302


def test_token_form_errors_are_beside_their_fields(member):
    client = signed_in(member)
    for data, field in [({"name": ""}, "name"), ({"name": "   "}, "name"), ({"name": "x" * 101}, "name"),
                        ({"name": "ok", "expires_in_days": "abc"}, "expires_in_days"),
                        ({"name": "ok", "expires_in_days": "5000"}, "expires_in_days")]:
        response = client.post(TOKENS, data)
        assert response.status_code == 400, data
        assert field_errors(response, field), data
        assert b'id="token-secret"' not in response.content
    assert not ApiToken.objects.exists()


def test_password_change(member):
    client = signed_in(member)
    other_session = signed_in(member)
    wrong = client.post(CHANGE, {"old_password": "nope", "new_password1": "fresh password 1",
                                 "new_password2": "fresh password 1"})
    assert wrong.status_code == 400 and field_errors(wrong, "old_password")
    mismatch = client.post(CHANGE, {"old_password": PASSWORD, "new_password1": "fresh password 1",
                                    "new_password2": "fresh password 2"})
    assert mismatch.status_code == 400 and field_errors(mismatch, "new_password2")
    short = client.post(CHANGE, {"old_password": PASSWORD, "new_password1": "short", "new_password2": "short"})
    assert short.status_code == 400 and field_errors(short, "new_password2")

    done = client.post(CHANGE, {"old_password": PASSWORD, "new_password1": "fresh password 1",
                                "new_password2": "fresh password 1"})
    assert done.status_code == 302 and done["Location"] == PROFILE
    assert b"password has been changed" in client.get(PROFILE).content  # this session stays signed in
    assert other_session.get(PROFILE).status_code == 302  # the others are signed out
    assert sign_in(Client(), member.username, "fresh password 1").status_code == 302
    assert sign_in(Client(), member.username).status_code == 200


def test_hostile_input_is_a_4xx_never_a_5xx(settings, member, staff_user, mailoutbox):
    settings.SIGNUP_MODE = "invite"
    nasty = ["\x00", "a\x00b", "x" * 5000, "<script>alert(1)</script>", "' OR 1=1 --", "é" * 300]
    owner = signed_in(member)
    staff = signed_in(staff_user)
    for value in nasty:
        for client, url, data in [
            (Client(), SIGNUP, form(username=value, email=value, invitation_code=value)),
            (Client(), SIGNUP, {"username": [value, value], "password1": value}),
            (Client(), RESET, {"email": value}),
            (Client(), RESEND, {"email": value}),
            (owner, TOKENS, {"name": value, "expires_in_days": value}),
            (owner, CHANGE, {"old_password": value, "new_password1": value, "new_password2": value}),
            (staff, "/accounts/invitations/", {"note": value, "expires_in_days": value}),
        ]:
            response = client.post(url, data)
            assert 400 <= response.status_code < 500, (url, value[:20], response.status_code)
            assert b"<script>alert(1)</script>" not in response.content
    for url in (SIGNUP, RESET, RESEND):  # bytes that are not UTF-8 (a lone surrogate, 0xFF)
        raw = Client().post(url, "username=%ED%A0%80&email=%FF&password1=%FF",
                            content_type="application/x-www-form-urlencoded")
        assert 400 <= raw.status_code < 500, url
    for path in ["/accounts/confirm/" + "a" * 5000 + "/", "/accounts/confirm/%F0%9F%92%A5/",
                 "/accounts/reset/x/y/", "/accounts/reset/MQ/set-password/", "/accounts/signup/?code=%00"]:
        response = Client().get(path, follow=True)
        assert response.status_code < 500, path
    assert not User.objects.exclude(pk__in=[member.pk, staff_user.pk]).exists() and mailoutbox == []
    assert not ApiToken.objects.exists() and not Invitation.objects.exists()


# --- CSRF ------------------------------------------------------------------------------------------


def csrf_of(response) -> str:
    (token,) = set(re.findall(r'name="csrfmiddlewaretoken" value="([^"]+)"', response.content.decode()))
    return token


def test_csrf_is_required_on_every_account_form(settings, member, mailoutbox):
    settings.SIGNUP_MODE = "open"
    anonymous = Client(enforce_csrf_checks=True)
    assert anonymous.post(SIGNUP, form()).status_code == 403
    assert anonymous.post(RESET, {"email": member.email}).status_code == 403
    assert anonymous.post(RESEND, {"email": member.email}).status_code == 403
    assert not User.objects.filter(username="newcomer").exists() and mailoutbox == []
    token = csrf_of(anonymous.get(SIGNUP))
    assert anonymous.post(SIGNUP, {**form(), "csrfmiddlewaretoken": token}).status_code == 302
    confirm = link_in(mailoutbox[0])
    assert anonymous.post(confirm).status_code == 403
    assert anonymous.post(confirm, {"csrfmiddlewaretoken": csrf_of(anonymous.get(confirm))}).status_code == 302

    owner = Client(enforce_csrf_checks=True)
    owner.force_login(member)
    _, secret = token_create(user=member, name="kept")
    kept = ApiToken.objects.get(name="kept")
    assert owner.post(TOKENS, {"name": "no csrf"}).status_code == 403
    assert owner.post(f"/accounts/tokens/{kept.pk}/revoke/").status_code == 403
    assert owner.post(CHANGE, {"old_password": PASSWORD, "new_password1": "fresh password 1",
                               "new_password2": "fresh password 1"}).status_code == 403
    assert not ApiToken.objects.filter(name="no csrf").exists()
    kept.refresh_from_db()
    assert kept.revoked_at is None
    member.refresh_from_db()
    assert member.check_password(PASSWORD)
    token = csrf_of(owner.get(PROFILE))
    assert owner.post(TOKENS, {"name": "with csrf", "csrfmiddlewaretoken": token}).status_code == 201


# --- the embedded run's demo user, and the settings per deployment --------------------------------


def test_demo_user_prints_a_working_password_and_token():
    out = StringIO()
    call_command("demo_user", stdout=out, stderr=StringIO())
    password, secret = out.getvalue().split()
    assert sign_in(Client(), "demo", password).status_code == 302
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Token {secret}")
    assert api.get("/api/v1/tokens/").status_code == 200
    again = StringIO()
    call_command("demo_user", stdout=again, stderr=StringIO())  # each start: a fresh password
    new_password, _ = again.getvalue().split()
    assert new_password != password and sign_in(Client(), "demo", password).status_code == 200
    assert User.objects.filter(username="demo").count() == 1


def test_demo_user_is_refused_when_not_allowed(settings):
    settings.DEMO_USER_ALLOWED = False
    with pytest.raises(CommandError, match="DEMO_USER_ALLOWED"):
        call_command("demo_user", stdout=StringIO(), stderr=StringIO())
    assert not User.objects.filter(username="demo").exists()


def probe(settings_module: str, code: str, **env: str) -> subprocess.CompletedProcess:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("SIGNUP_", "EMAIL_", "DEMO_"))}
    return subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60,
        env={**base, "DJANGO_SETTINGS_MODULE": settings_module, "DJANGO_SECRET_KEY": "x",
             "DATABASE_URL": "postgres://registry:pw@postgres:5432/registry",
             "CELERY_BROKER_URL": "redis://redis:6379/0", **env},
    )


SHOW = ("import django; django.setup(); from django.conf import settings as s; "
        "print(s.SIGNUP_MODE, s.EMAIL_BACKEND, s.DEMO_USER_ALLOWED)")


def test_defaults_open_and_console_embedded_staff_and_smtp_in_production():
    embedded = probe("registry.settings.base", SHOW)
    assert embedded.returncode == 0, embedded.stderr
    assert embedded.stdout.split() == ["open", "django.core.mail.backends.console.EmailBackend", "True"]
    production = probe("registry.settings.production", SHOW)
    assert production.returncode == 0, production.stderr
    assert production.stdout.split() == ["staff", "django.core.mail.backends.smtp.EmailBackend", "False"]
    invite = probe("registry.settings.production", SHOW, SIGNUP_MODE="invite", DEMO_USER_ALLOWED="true")
    assert invite.stdout.split()[0] == "invite" and invite.stdout.split()[2] == "False"
    wrong = probe("registry.settings.base", SHOW, SIGNUP_MODE="everyone")
    assert wrong.returncode != 0 and "SIGNUP_MODE must be one of" in wrong.stderr
    refused = subprocess.run(
        [sys.executable, "manage.py", "demo_user"], cwd=ROOT, capture_output=True, text=True, timeout=60,
        env={**os.environ, "DJANGO_SETTINGS_MODULE": "registry.settings.production", "DJANGO_SECRET_KEY": "x",
             "DATABASE_URL": "postgres://registry:pw@postgres:5432/registry",
             "CELERY_BROKER_URL": "redis://redis:6379/0"},
    )
    assert refused.returncode != 0 and "DEMO_USER_ALLOWED" in refused.stderr and refused.stdout == ""

"""An invitation code for SIGNUP_MODE=invite: printed alone on stdout, with its sign-up link on stderr."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.urls import reverse

from registry.accounts.signup import invitation_create
from registry.errors import ApplicationError


class Command(BaseCommand):
    help = "Create a single-use invitation code for sign-up (SIGNUP_MODE=invite) and print it."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--note", default="", help="Who it is for (shown to staff in the admin).")
        parser.add_argument(
            "--expires-in-days", type=int, default=None,
            help=f"Days until it expires; 0 = never (default {settings.INVITATION_DEFAULT_DAYS}).",
        )

    def handle(self, *args: Any, note: str, expires_in_days: int | None, **options: Any) -> None:
        try:
            invitation = invitation_create(created_by=None, note=note, expires_in_days=expires_in_days)
        except ApplicationError as exc:
            raise CommandError(exc.message) from None
        link = f"{settings.REGISTRY_BASE_URL}{reverse('dashboard:signup')}?{urlencode({'code': invitation.code})}"
        if settings.SIGNUP_MODE != "invite":
            self.stderr.write(f"note: SIGNUP_MODE is {settings.SIGNUP_MODE!r}; the code only matters with 'invite'")
        expiry = f"expires {invitation.expires_at:%Y-%m-%d %H:%M} UTC" if invitation.expires_at else "never expires"
        self.stderr.write(f"invitation created ({expiry}); sign-up link: {link}")
        self.stdout.write(invitation.code)

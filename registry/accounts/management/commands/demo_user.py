"""The embedded run's demo user (``scripts/dev run``): created if needed, given a fresh random password
and a new API token, both printed on one line of stdout ("PASSWORD TOKEN"). Refused under the
production settings (DEMO_USER_ALLOWED is off there)."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.utils import timezone

from registry.accounts.services import token_create
from registry.accounts.signup import DEMO_USERNAME, demo_user_reset
from registry.errors import ApplicationError


class Command(BaseCommand):
    help = "Create the demo user of the embedded run with a fresh password and token; print both (never in production)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--username", default=DEMO_USERNAME)

    def handle(self, *args: Any, username: str, **options: Any) -> None:
        try:
            user, password = demo_user_reset(username=username)
        except ApplicationError as exc:
            raise CommandError(exc.message) from None
        _, secret = token_create(user=user, name=f"demo {timezone.now():%Y-%m-%d %H:%M:%S}")
        self.stderr.write(f"demo user {username!r}: a new password and token (shown only now)")
        self.stdout.write(f"{password} {secret}")

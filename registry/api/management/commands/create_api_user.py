"""Create (or reuse) a user and print a new API token: the first step of the README's curl walk-through.

Each call creates a fresh named token (the user's other tokens keep working) and prints its secret,
alone on stdout: it is shown this once, the database keeps only its hash.
"""

from __future__ import annotations

import getpass
from typing import Any

from django.contrib.auth import get_user_model
from django.contrib.auth.password_validation import validate_password
from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.utils import timezone

from registry.accounts.services import MAX_EXPIRY_DAYS, token_create
from registry.errors import ApplicationError

PROMPT = object()


class Command(BaseCommand):
    help = "Create a user if needed and print a new API token (its secret is shown only this once)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("username")
        parser.add_argument("--email", default="")
        parser.add_argument("--staff", action="store_true", help="Make the user staff (may edit any finding).")
        parser.add_argument("--name", default="", help="The token's name (default: create_api_user and the time).")
        parser.add_argument(
            "--expires-in-days", type=int, default=None, help=f"Expire the token after N days (1-{MAX_EXPIRY_DAYS})."
        )
        parser.add_argument(
            "--password",
            nargs="?",
            const=PROMPT,
            default=None,
            help="Set the user's password (for the dashboard's sign-in); without a value, prompt for it.",
        )

    def handle(
        self,
        *args: Any,
        username: str,
        email: str,
        staff: bool,
        name: str,
        expires_in_days: int | None,
        password: object,
        **options: Any,
    ) -> None:
        user, created = get_user_model().objects.get_or_create(username=username, defaults={"email": email})
        if staff and not user.is_staff:
            user.is_staff = True
            user.save(update_fields=["is_staff"])
        if password is not None:
            if password is PROMPT:
                password = getpass.getpass(f"Password for {username}: ")
                if password != getpass.getpass("Password (again): "):
                    raise CommandError("the passwords differ")
            assert isinstance(password, str)
            try:
                validate_password(password, user)
            except ValidationError as exc:
                raise CommandError("; ".join(exc.messages)) from None
            user.set_password(password)
            user.save(update_fields=["password"])
            self.stderr.write(f"password set for {username}")
        name = name or f"create_api_user {timezone.now():%Y-%m-%d %H:%M:%S}"
        try:
            token, secret = token_create(user=user, name=name, expires_in_days=expires_in_days)
        except ApplicationError as exc:
            raise CommandError(exc.message) from None
        if created:
            self.stderr.write(f"created user {username}")
        self.stderr.write(f"token {token.name!r} ({token.prefix}…) created; its secret, shown only now:")
        self.stdout.write(secret)

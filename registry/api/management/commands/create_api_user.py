"""Create (or reuse) a user and print an API token: the first step of the README's curl walk-through."""

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand
from rest_framework.authtoken.models import Token


class Command(BaseCommand):
    help = "Create a user if needed and print its API token."

    def add_arguments(self, parser) -> None:
        parser.add_argument("username")
        parser.add_argument("--email", default="")
        parser.add_argument("--staff", action="store_true", help="Make the user staff (may edit any finding).")

    def handle(self, *args, username: str, email: str, staff: bool, **options) -> None:
        user, created = get_user_model().objects.get_or_create(username=username, defaults={"email": email})
        if staff and not user.is_staff:
            user.is_staff = True
            user.save(update_fields=["is_staff"])
        token, _ = Token.objects.get_or_create(user=user)
        if created:
            self.stderr.write(f"created user {username}")
        self.stdout.write(token.key)

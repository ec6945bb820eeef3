from django.core.management.base import BaseCommand

from registry.reproductions.quotas import runs_requested_rebuild


class Command(BaseCommand):
    help = (
        "Recount the daily quota's hourly rows from the runs of the last 24 hours (each user under their quota "
        "lock: safe while the registry serves). Run it after editing runs' times by hand, or once after a rolling "
        "upgrade to the release that added the rows, when servers without them may still have created runs."
    )

    def add_arguments(self, parser) -> None:  # noqa: ANN001
        parser.add_argument("--user", action="append", dest="users", metavar="USERNAME",
                            help="only this user (repeatable); default: every user with runs or rows")

    def handle(self, *args, users: list[str] | None = None, **options) -> None:  # noqa: ANN002, ANN003
        from django.contrib.auth import get_user_model
        from django.core.management.base import CommandError

        selected = None
        if users:
            found = {u.username: u for u in get_user_model().objects.filter(username__in=users)}
            missing = sorted(set(users) - set(found))
            if missing:
                raise CommandError(f"no such user: {', '.join(missing)}")
            selected = list(found.values())
        written = runs_requested_rebuild(users=selected)
        self.stdout.write(f"{written} hourly row(s) written")

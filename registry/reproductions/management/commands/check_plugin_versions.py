from django.core.management.base import BaseCommand

from registry.reproductions.versions import findings_mark_stale


class Command(BaseCommand):
    help = "Mark findings whose results come from older plugin versions as stale (the reaper does this too)."

    def handle(self, *args, **options) -> None:
        stale = findings_mark_stale()
        self.stdout.write(f"{len(stale)} finding(s) became stale: {stale}")

from django.core.management.base import BaseCommand

from registry.findings.examples import examples_load
from registry.reproductions.services import metric_catalogue_sync_installed


class Command(BaseCommand):
    help = "Create the example findings (one per built-in plugin) and queue their reproductions."

    def add_arguments(self, parser) -> None:
        parser.add_argument("--no-reproduce", action="store_true", help="Create them without queueing runs.")
        parser.add_argument("--preset", default=None, help="Use each plugin's named preset (e.g. 'tiny').")

    def handle(self, *args, no_reproduce: bool, preset: str | None, **options) -> None:
        metric_catalogue_sync_installed()  # the catalogue GET /api/v1/metrics/ reads
        created = examples_load(reproduce=not no_reproduce, preset=preset)
        for finding in created:
            self.stdout.write(f"created example finding {finding.pk}: {finding.title}")
        if not created:
            self.stdout.write("example findings already present")

import logging

from django.apps import AppConfig, apps
from django.db.models.signals import post_migrate


def _metric_catalogue_sync(**kwargs) -> None:
    """After ``migrate``: record the installed plugins' metrics (GET /metrics/ only reads them)."""
    from registry.reproductions.services import metric_catalogue_sync_installed

    try:
        metric_catalogue_sync_installed()
    except Exception:  # noqa: BLE001 - a broken plugin (or a partial migration) must not fail migrate
        logging.getLogger(__name__).exception("could not sync the metric catalogue after migrate")


class FindingsConfig(AppConfig):
    name = "registry.findings"
    label = "findings"

    def ready(self) -> None:
        # Sent once the reproductions app (which holds the catalogue) is migrated.
        post_migrate.connect(
            _metric_catalogue_sync, sender=apps.get_app_config("reproductions"), dispatch_uid="metric_catalogue_sync"
        )

"""Effects are no longer computed on read: mark every finding with an experiment or a claim as
pending, requested long ago, so that the worker's sweep recomputes each once (with the current
computation) right after the upgrade."""

from datetime import UTC, datetime

from django.db import migrations
from django.db.models import Q

LONG_AGO = datetime(2000, 1, 1, tzinfo=UTC)


def request_recompute(apps, schema_editor) -> None:
    Finding = apps.get_model("findings", "Finding")
    FindingEffects = apps.get_model("effects", "FindingEffects")
    FindingEffects.objects.update(pending=True, requested_at=LONG_AGO)
    cached = set(FindingEffects.objects.values_list("finding_id", flat=True))
    wanted = (
        Finding.objects.filter(Q(experiments__isnull=False) | Q(claims__isnull=False))
        .distinct()
        .values_list("pk", flat=True)
    )
    FindingEffects.objects.bulk_create(
        [FindingEffects(finding_id=pk, pending=True, requested_at=LONG_AGO) for pk in wanted if pk not in cached]
    )


class Migration(migrations.Migration):
    dependencies = [
        ("effects", "0002_recompute_pending"),
        ("findings", "0002_claim_threshold_unit_status"),
        ("reproductions", "0002_censored_scale_retraction"),
    ]

    operations = [migrations.RunPython(request_recompute, migrations.RunPython.noop)]

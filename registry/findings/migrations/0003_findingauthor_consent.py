"""Co-authorship by consent: authors move from a plain many-to-many to ``FindingAuthor`` rows with
a status (invited / accepted / declined).

Every author already on record becomes ``accepted``. Those rows were written before consent
existed (anyone could name anyone), so ``accepted`` here means "was an author when consent was
introduced", not that the user agreed; their ``invited_by`` is the finding's creator for co-authors
(nobody for the creator) and their ``responded_at`` is left empty, which marks them as carried over
(an answer given through the API always sets it).
"""

import django.db.models.deletion
from django.conf import settings
from django.db import migrations, models


def authors_to_links(apps, schema_editor):
    Finding = apps.get_model("findings", "Finding")
    FindingAuthor = apps.get_model("findings", "FindingAuthor")
    through = Finding.authors.through
    created_by = dict(Finding.objects.values_list("pk", "created_by_id"))
    links = []
    for finding_id, user_id in through.objects.values_list("finding_id", "user_id").iterator():
        creator = created_by.get(finding_id)
        links.append(
            FindingAuthor(
                finding_id=finding_id,
                user_id=user_id,
                status="accepted",
                invited_by_id=None if user_id == creator else creator,
            )
        )
        if len(links) >= 1000:
            FindingAuthor.objects.bulk_create(links, ignore_conflicts=True)
            links = []
    FindingAuthor.objects.bulk_create(links, ignore_conflicts=True)
    # the creator was always an author (the old services added them); make sure of it
    linked = set(FindingAuthor.objects.filter(status="accepted").values_list("finding_id", "user_id"))
    missing = [
        FindingAuthor(finding_id=f, user_id=u, status="accepted")
        for f, u in created_by.items()
        if (f, u) not in linked
    ]
    FindingAuthor.objects.bulk_create(missing, ignore_conflicts=True)


def links_to_authors(apps, schema_editor):
    """Backwards: accepted authors only (invitations and refusals have no place in the old schema)."""
    Finding = apps.get_model("findings", "Finding")
    FindingAuthor = apps.get_model("findings", "FindingAuthor")
    through = Finding.authors.through
    through.objects.bulk_create(
        [
            through(finding_id=f, user_id=u)
            for f, u in FindingAuthor.objects.filter(status="accepted").values_list("finding_id", "user_id")
        ],
        ignore_conflicts=True,
    )


class Migration(migrations.Migration):

    dependencies = [
        ("findings", "0002_claim_threshold_unit_status"),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.CreateModel(
            name="FindingAuthor",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                (
                    "status",
                    models.CharField(
                        choices=[("invited", "Invited"), ("accepted", "Accepted"), ("declined", "Declined")],
                        default="invited",
                        max_length=16,
                    ),
                ),
                ("created_at", models.DateTimeField(auto_now_add=True)),
                ("responded_at", models.DateTimeField(blank=True, null=True)),
                (
                    "finding",
                    models.ForeignKey(
                        on_delete=django.db.models.deletion.CASCADE, related_name="author_links", to="findings.finding"
                    ),
                ),
                (
                    "invited_by",
                    models.ForeignKey(
                        blank=True,
                        null=True,
                        on_delete=django.db.models.deletion.SET_NULL,
                        related_name="+",
                        to=settings.AUTH_USER_MODEL,
                    ),
                ),
                (
                    "user",
                    models.ForeignKey(
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="authorships",
                        to=settings.AUTH_USER_MODEL,
                    ),
                ),
            ],
            options={
                "ordering": ["id"],
                "indexes": [models.Index(fields=["user", "status"], name="findings_fi_user_id_7fd913_idx")],
                "constraints": [models.UniqueConstraint(fields=("finding", "user"), name="finding_author_unique")],
            },
        ),
        migrations.RunPython(authors_to_links, links_to_authors),
        migrations.RemoveField(model_name="finding", name="authors"),
    ]

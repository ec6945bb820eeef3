"""Full-text search of findings on PostgreSQL: a GIN expression index on the words of title +
summary (the ``simple`` configuration: lower-cased words, no stemming, no stop words), exactly the
expression ``registry.findings.selectors.finding_search_filter`` filters on. SQLite (the embedded
default) has no such index and searches with ``icontains``: nothing is done there."""

from django.contrib.postgres.indexes import GinIndex
from django.contrib.postgres.search import SearchVector
from django.db import migrations

INDEX_NAME = "finding_search_gin"


def _index() -> GinIndex:
    return GinIndex(SearchVector("title", "summary", config="simple"), name=INDEX_NAME)


def create(apps, schema_editor) -> None:
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.add_index(apps.get_model("findings", "Finding"), _index())


def drop(apps, schema_editor) -> None:
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.remove_index(apps.get_model("findings", "Finding"), _index())


class Migration(migrations.Migration):
    dependencies = [("findings", "0004_finding_list_indexes")]

    operations = [migrations.RunPython(create, drop, elidable=False)]

"""Carry rest_framework.authtoken's clear-text keys over as hashed tokens, then empty its table.

The keys keep working (their hash is what is now looked up); the database keeps no usable key.
Raw SQL: the authtoken app is no longer installed, and on a fresh database its table never existed.
"""

import hashlib
from datetime import UTC

from django.db import migrations
from django.utils import timezone
from django.utils.dateparse import parse_datetime

TABLE = "authtoken_token"


def forwards(apps, schema_editor):
    connection = schema_editor.connection
    if TABLE not in connection.introspection.table_names():
        return
    ApiToken = apps.get_model("accounts", "ApiToken")
    quoted = schema_editor.quote_name(TABLE)
    with connection.cursor() as cursor:
        cursor.execute(f'SELECT {schema_editor.quote_name("key")}, user_id, created FROM {quoted}')
        rows = cursor.fetchall()
    for key, user_id, created in rows:
        digest = hashlib.sha256(key.encode("utf-8")).hexdigest()
        if ApiToken.objects.filter(key_hash=digest).exists():
            continue
        if isinstance(created, str):
            created = parse_datetime(created)
        if created is not None and timezone.is_naive(created):
            created = timezone.make_aware(created, UTC)  # stored naive in UTC (SQLite)
        ApiToken.objects.create(
            user_id=user_id, name="token from before hashing", prefix=key[:12], key_hash=digest,
            created_at=created or timezone.now(),
        )
    with connection.cursor() as cursor:
        cursor.execute(f"DELETE FROM {quoted}")


class Migration(migrations.Migration):
    dependencies = [("accounts", "0001_initial")]

    operations = [migrations.RunPython(forwards, migrations.RunPython.noop)]

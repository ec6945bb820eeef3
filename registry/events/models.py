from django.db import models


class Event(models.Model):
    """Append-only log, written in the same transaction as the change it describes.

    The id is monotonic: readers page with ``?after=<id>``.
    """

    type = models.CharField(max_length=64)
    finding_id = models.BigIntegerField(null=True, blank=True, db_index=True)
    plugin = models.CharField(max_length=100, blank=True)
    payload = models.JSONField(default=dict)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["id"]
        indexes = [models.Index(fields=["type"])]

    def __str__(self) -> str:
        return f"#{self.pk} {self.type}"

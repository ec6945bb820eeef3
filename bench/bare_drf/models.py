from django.db import models


class Result(models.Model):
    """One recorded result: the same fields as the registry's self-reported run body."""

    seed = models.IntegerField()
    measurements = models.JSONField()
    params = models.JSONField(default=dict)
    hardware = models.CharField(max_length=200)
    environment = models.JSONField(default=dict)
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return f"result {self.pk} (seed {self.seed})"

from django.db import models
from django.db.models.fields.json import KT
from django.db.models.functions import Cast

from registry.findings.models import Claim, Finding


def _stored(path: str, field: models.Field) -> models.GeneratedField:
    """A column the database derives from ``data`` on every write (whatever writes it): the
    landscape aggregates these narrow columns instead of reading each finding's JSON."""
    return models.GeneratedField(
        expression=Cast(KT(f"data__{path}"), field) if not isinstance(field, models.CharField) else KT(f"data__{path}"),
        output_field=field,
        db_persist=True,
    )


class FindingEffects(models.Model):
    """Cached effects of a finding, recomputed by the ``worker.effects_recompute`` task whenever a
    change can move them (``effects_recompute_request``). Reads only ever read this row.

    ``data`` is ``{}`` until the first recompute has stored something. It holds the summary
    (estimates, intervals, verdicts, counts), of a size that does not grow with the number of runs
    or reproductions; their lists are in ``detail`` (``registry.effects.services.effects_split``).
    """

    finding = models.OneToOneField(Finding, on_delete=models.CASCADE, related_name="effects_cache")
    data = models.JSONField(default=dict, help_text="The summary the effects endpoint serves.")
    detail = models.JSONField(
        default=list,
        help_text="Per-run and per-reproduction detail taken out of ``data`` (run ids, per-reproduction "
        "effects and verdicts) as [path, value] pairs; served only on request (``?detail=runs``).",
    )
    computed_at = models.DateTimeField(auto_now=True)
    pending = models.BooleanField(default=False, help_text="A recompute is requested and not yet done.")
    requested_at = models.DateTimeField(null=True, blank=True, help_text="When the pending recompute was requested.")
    requested_seq = models.BigIntegerField(
        default=0,
        help_text="Bumped by every recompute request; a recompute clears ``pending`` only if no request "
        "arrived while it computed (it holds no lock meanwhile, so writers never wait for it).",
    )
    error = models.TextField(blank=True, help_text="Why the last recompute failed; empty when it succeeded.")
    # Small per-finding summary of ``data`` for the landscape (generated: always in step with it).
    lean = _stored("lean", models.CharField(max_length=32, null=True))
    safety_score = _stored("axis_scores__safety__score", models.FloatField(null=True))
    safety_ci_low = _stored("axis_scores__safety__ci_low", models.FloatField(null=True))
    safety_ci_high = _stored("axis_scores__safety__ci_high", models.FloatField(null=True))
    safety_n_seeds = _stored("axis_scores__safety__n_seeds", models.FloatField(null=True))
    safety_confidence = _stored("axis_scores__safety__confidence", models.FloatField(null=True))
    capability_score = _stored("axis_scores__capability__score", models.FloatField(null=True))

    class Meta:
        indexes = [
            # the newest recompute, by an index scan: the version the landscape's cached aggregates are kept under
            models.Index(fields=["computed_at"], name="effects_computed_at"),
        ]

    def __str__(self) -> str:
        return f"effects of finding {self.finding_id}"


class ClaimVerdict(models.Model):
    class Verdict(models.TextChoices):
        CONFIRMED = "confirmed"
        REFUTED = "refuted"
        INCONCLUSIVE = "inconclusive"

    claim = models.OneToOneField(Claim, on_delete=models.CASCADE, related_name="verdict")
    verdict = models.CharField(max_length=16, choices=Verdict.choices, default=Verdict.INCONCLUSIVE)
    evidence = models.CharField(max_length=32, blank=True, help_text="Which rung of evidence decided it.")
    run_ids = models.JSONField(default=list)
    updated_at = models.DateTimeField(auto_now=True)

    def __str__(self) -> str:
        return f"claim {self.claim_id}: {self.verdict}"

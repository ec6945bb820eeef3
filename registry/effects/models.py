from django.db import models

from registry.findings.models import Claim, Finding


class FindingEffects(models.Model):
    """Cached effects of a finding, recomputed by the ``worker.effects_recompute`` task whenever a
    change can move them (``effects_recompute_request``). Reads only ever read this row.

    ``data`` is ``{}`` until the first recompute has stored something.
    """

    finding = models.OneToOneField(Finding, on_delete=models.CASCADE, related_name="effects_cache")
    data = models.JSONField(default=dict)
    computed_at = models.DateTimeField(auto_now=True)
    pending = models.BooleanField(default=False, help_text="A recompute is requested and not yet done.")
    requested_at = models.DateTimeField(null=True, blank=True, help_text="When the pending recompute was requested.")
    error = models.TextField(blank=True, help_text="Why the last recompute failed; empty when it succeeded.")

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

"""Forms of the dashboard: the GET filters and the reproduction request."""

from __future__ import annotations

from django import forms
from django.conf import settings

from registry.findings.models import Finding
from registry.reproductions.models import Experiment


def _choices(values: list[str], empty: str) -> list[tuple[str, str]]:
    return [("", empty), *((value, value) for value in values)]


class FindingFilterForm(forms.Form):
    """Search and filters of the findings list. Invalid values are ignored, never an error page."""

    q = forms.CharField(required=False, max_length=200, label="Search",
                        widget=forms.TextInput(attrs={"type": "search", "placeholder": "title or summary"}))
    kind = forms.ChoiceField(required=False, choices=[("", "any kind"), *Finding.Kind.choices])
    status = forms.ChoiceField(required=False, choices=[("", "any status"), *Finding.Status.choices])
    tag = forms.ChoiceField(required=False)
    plugin = forms.ChoiceField(required=False)

    def __init__(self, *args, tags: list[str], plugins: list[str], **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["tag"].choices = _choices(tags, "any tag")
        self.fields["plugin"].choices = _choices(plugins, "any plugin")

    def filters(self) -> dict[str, str]:
        """The valid filters (an unknown tag or kind is dropped rather than failing the page)."""
        if not self.is_bound:
            return {}
        self.is_valid()
        return {name: value for name, value in self.cleaned_data.items() if value}


class LandscapeFilterForm(FindingFilterForm):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        del self.fields["q"]
        del self.fields["status"]


def reproducible_experiments(finding: Finding):
    """The finding's experiments that may be reproduced: every one not retracted, oldest first."""
    return finding.experiments.filter(retracted_at__isnull=True).order_by("id")


class ReproductionRequestForm(forms.Form):
    experiment = forms.ModelChoiceField(queryset=Experiment.objects.none(), empty_label=None)
    n_seeds = forms.IntegerField(
        label="Number of seeds",
        min_value=1,
        max_value=settings.MAX_SEEDS_PER_REPRODUCTION,
        help_text="One run per seed (seeds 0, 1, 2, …).",
    )

    def __init__(self, *args, finding: Finding, **kwargs):
        super().__init__(*args, **kwargs)
        # A retracted experiment is never reproduced again: it is neither offered nor accepted.
        experiments = reproducible_experiments(finding)
        self.fields["experiment"].queryset = experiments
        self.fields["experiment"].label_from_instance = lambda e: f"#{e.pk} {e.plugin}"
        first = experiments.first()
        if first is not None and not self.is_bound:
            self.initial.setdefault("experiment", first.pk)
            self.initial.setdefault("n_seeds", first.default_seeds)

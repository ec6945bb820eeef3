"""Dashboard pages that write: the finding form (create, edit), claims, experiments (the parameter
fields generated from the plugin's JSON Schema) and retracting an experiment, with their htmx
fragments (Markdown preview, builds-on search, a plugin's metrics, a plugin's parameters).

Thin: every write goes through ``registry.dashboard.submissions``, i.e. the API's serializers and
services. Signed-in users only (anonymous visitors are sent to sign in); changing a finding is
for its authors and staff (others: 403, or 404 for a finding they cannot see).
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from registry.dashboard import selectors, submissions
from registry.dashboard.forms import FindingForm, RetractForm
from registry.findings.models import Finding
from registry.findings.services import finding_can_edit
from registry.reproductions.models import Experiment

FORM_PAGE = "dashboard/submit/finding_form.html"


def _editable(request: HttpRequest, pk: int) -> Finding:
    """A finding the signed-in user may change: 404 when they cannot even see it, 403 when they
    can see it but are not an author (nor staff)."""
    finding = selectors.finding_get(user=request.user, pk=pk)
    if not finding_can_edit(finding=finding, user=request.user):
        raise PermissionDenied("only the finding's authors or staff may change it")
    return finding


def _answer(request: HttpRequest, template: str, context: dict[str, Any], outcome: submissions.Outcome) -> HttpResponse:
    response = render(request, template, context, status=outcome.status if outcome.obj is None else 200)
    for name, value in outcome.headers.items():
        response[name] = value
    return response


def _finding_page(
    request: HttpRequest, form: FindingForm, finding: Finding | None, outcome: submissions.Outcome
) -> HttpResponse:
    picker = submissions.builds_on_choices(
        user=request.user, selected=form.builds_on_ids(), exclude=finding.pk if finding else None
    )
    return _answer(request, FORM_PAGE, {"form": form, "finding": finding, "picker": picker}, outcome)


@never_cache
@login_required
@require_http_methods(["GET", "POST"])
def finding_create(request: HttpRequest) -> HttpResponse:
    if request.method == "GET":
        form = FindingForm(initial={"kind": Finding.Kind.OBSERVATION})
        return _finding_page(request, form, None, submissions.Outcome())
    form = FindingForm(request.POST)
    outcome = submissions.finding_save(form=form, request=request)
    if outcome.obj is None:
        return _finding_page(request, form, None, outcome)
    messages.success(request, "Finding created. Add its claims and an experiment to have it reproduced.")
    return redirect("dashboard:finding-detail", outcome.obj.pk)


@never_cache
@login_required
@require_http_methods(["GET", "POST"])
def finding_edit(request: HttpRequest, pk: int) -> HttpResponse:
    finding = _editable(request, pk)
    if request.method == "GET":
        form = FindingForm(initial=FindingForm.initial_for(finding))
        return _finding_page(request, form, finding, submissions.Outcome())
    form = FindingForm(request.POST)
    outcome = submissions.finding_save(form=form, request=request, finding=finding)
    if outcome.obj is None:
        return _finding_page(request, form, finding, outcome)
    messages.success(request, "Finding saved.")
    return redirect("dashboard:finding-detail", finding.pk)


@never_cache
@login_required
@require_http_methods(["GET", "POST"])
def claim_create(request: HttpRequest, pk: int) -> HttpResponse:
    finding = _editable(request, pk)
    source = request.POST if request.method == "POST" else request.GET
    form = submissions.claim_form(
        data=request.POST if request.method == "POST" else None, finding=finding, plugin=source.get("plugin")
    )
    outcome = submissions.Outcome()
    if request.method == "POST":
        outcome = submissions.claim_add(form=form, request=request, finding=finding)
        if outcome.obj is not None:
            messages.success(request, f"Claim on {outcome.obj.metric} added.")
            if "add_another" in request.POST:
                again = reverse("dashboard:claim-create", args=[finding.pk])
                return redirect(f"{again}?{urlencode({'plugin': form['plugin'].value() or ''})}")
            return redirect(reverse("dashboard:finding-detail", args=[finding.pk]) + "#claims-heading")
    context = {"form": form, "finding": finding, "arms": submissions.plugin_arms(form["plugin"].value())}
    return _answer(request, "dashboard/submit/claim_form.html", context, outcome)


@never_cache
@login_required
@require_http_methods(["GET", "POST"])
def experiment_create(request: HttpRequest, pk: int) -> HttpResponse:
    finding = _editable(request, pk)
    source = request.POST if request.method == "POST" else request.GET
    # "Apply" (the button shown without JavaScript): the chosen plugin's fields filled from the
    # chosen preset, nothing saved; with JavaScript htmx swaps them in on each choice instead
    applying = request.method == "POST" and "apply_preset" in request.POST
    form = submissions.experiment_form(
        data=request.POST if request.method == "POST" and not applying else None, finding=finding,
        plugin=source.get("plugin"), preset=source.get("preset", ""),
    )
    outcome = submissions.Outcome()
    if request.method == "POST" and not applying:
        outcome = submissions.experiment_add(form=form, request=request, finding=finding)
        if outcome.obj is not None:
            experiment = outcome.obj
            queued = experiment.reproductions.first()
            note = f" and {len(queued.seeds)} run(s) queued" if queued else ""
            messages.success(request, f"Experiment #{experiment.pk} ({experiment.plugin}) added{note}.")
            return redirect(reverse("dashboard:finding-detail", args=[finding.pk]) + ("#runs" if queued else ""))
    return _answer(request, "dashboard/submit/experiment_form.html", {"form": form, "finding": finding}, outcome)


def _retractable(request: HttpRequest, pk: int) -> Experiment:
    experiment = Experiment.objects.filter(pk=pk).first()
    if experiment is None:
        raise Http404("no such experiment")
    _editable(request, experiment.finding_id)
    return experiment


@never_cache
@login_required
@require_http_methods(["GET", "POST"])
def experiment_retract(request: HttpRequest, pk: int) -> HttpResponse:
    """GET: the confirmation (what retracting does, and the reason to give); POST: retract."""
    experiment = _retractable(request, pk)
    form = RetractForm(request.POST if request.method == "POST" else None)
    outcome = submissions.Outcome()
    if request.method == "POST":
        outcome = submissions.experiment_retract(form=form, request=request, experiment=experiment)
        if outcome.obj is not None:
            messages.success(request, f"Experiment #{experiment.pk} retracted.")
            return redirect(reverse("dashboard:finding-detail", args=[experiment.finding_id]) + "#effects-heading")
    context = {"form": form, "experiment": experiment, "finding": experiment.finding,
               "params": selectors.params_summary(experiment.params)}
    return _answer(request, "dashboard/submit/retract_confirm.html", context, outcome)


# ---------------------------------------------------------------- htmx fragments


@login_required
@require_POST
def summary_preview(request: HttpRequest) -> HttpResponse:
    """The summary rendered as the finding page renders it (POST: a summary can be long)."""
    html = submissions.summary_preview(request.POST.get("summary", ""))
    return render(request, "dashboard/submit/_preview.html", {"html": html})


@login_required
@require_GET
def builds_on_search(request: HttpRequest) -> HttpResponse:
    """The builds-on picker: the findings already chosen (still chosen) and those matching the
    search, among the findings this user may see."""
    exclude = request.GET.get("exclude", "")
    picker = submissions.builds_on_choices(
        user=request.user,
        query=request.GET.get("builds_on_q", ""),
        selected=request.GET.getlist("builds_on"),
        exclude=int(exclude) if exclude.isascii() and exclude.isdigit() and len(exclude) < 19 else None,
    )
    return render(request, "dashboard/submit/_builds_on.html", {"picker": picker})


@login_required
@require_GET
def plugin_metrics(request: HttpRequest) -> HttpResponse:
    """The claim form's metric field for the chosen plugin."""
    form = submissions.claim_form(finding=None, plugin=request.GET.get("plugin"))
    context = {"form": form, "arms": submissions.plugin_arms(form["plugin"].value())}
    return render(request, "dashboard/submit/_claim_metric.html", context)


@login_required
@require_GET
def plugin_params(request: HttpRequest) -> HttpResponse:
    """The experiment form's preset and parameter fields for the chosen plugin (and preset)."""
    form = submissions.experiment_form(
        finding=None, plugin=request.GET.get("plugin"), preset=request.GET.get("preset", "")
    )
    return render(request, "dashboard/submit/_params.html", {"form": form})

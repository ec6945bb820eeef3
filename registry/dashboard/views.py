"""Dashboard pages. Thin: parse the request, call a selector or service, render a template."""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.views import redirect_to_login
from django.core.paginator import EmptyPage
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils.cache import get_conditional_response, patch_cache_control, patch_vary_headers
from django.views.decorators.http import require_GET, require_POST

from registry.api.pagination import EstimatedCountPaginator
from registry.api.throttling import ReproductionRateThrottle, throttle_wait
from registry.dashboard import selectors
from registry.dashboard.forms import (
    FindingFilterForm,
    LandscapeFilterForm,
    ReproductionRequestForm,
    reproducible_experiments,
)
from registry.dashboard.landscape import landscape_page
from registry.errors import ApplicationError
from registry.findings.models import Finding
from registry.findings.services import finding_can_edit
from registry.reproductions.services import reproduction_request

PAGE_SIZE = 20


def _filter_form(form_class: type[FindingFilterForm], request: HttpRequest) -> FindingFilterForm:
    return form_class(
        request.GET or None, tags=selectors.visible_tags(user=request.user), plugins=selectors.plugin_names()
    )


@require_GET
def finding_list(request: HttpRequest) -> HttpResponse:
    form = _filter_form(FindingFilterForm, request)
    findings = selectors.finding_search(user=request.user, **form.filters())
    # past EXACT_COUNT_LIMIT matches the count is PostgreSQL's estimate (counting 100,000 rows
    # through a full-text match took ~0.4 s); the page then says "about"
    paginator = EstimatedCountPaginator(findings, PAGE_SIZE)
    try:
        page = paginator.get_page(request.GET.get("page"))
    except EmptyPage:  # past the last page of an estimated count
        page = paginator.page(1)
    return render(
        request,
        "dashboard/finding_list.html",
        {"form": form, "page": page, "rows": selectors.finding_rows(list(page.object_list))},
    )


def _finding_page(
    request: HttpRequest, finding: Finding, *, form: ReproductionRequestForm | None = None, status: int = 200
) -> HttpResponse:
    context = selectors.finding_detail(finding=finding, user=request.user)
    can_edit = finding_can_edit(finding=finding, user=request.user)
    # Any signed-in user may reproduce a finding: a reproduction by someone other than its
    # authors is the "independent" rung of the evidence ladder.
    can_reproduce = request.user.is_authenticated
    if can_reproduce and form is None and reproducible_experiments(finding).exists():
        form = ReproductionRequestForm(finding=finding)
    context.update(
        runs=selectors.finding_runs(finding=finding, page=request.GET.get("runs_page")),
        can_edit=can_edit,
        form=form if can_reproduce else None,
    )
    return render(request, "dashboard/finding_detail.html", context, status=status)


@require_GET
def finding_detail(request: HttpRequest, pk: int) -> HttpResponse:
    return _finding_page(request, selectors.finding_get(user=request.user, pk=pk))


@require_GET
def finding_runs(request: HttpRequest, pk: int) -> HttpResponse:
    """The live fragment the finding page polls while runs are queued or running."""
    finding = selectors.finding_get(user=request.user, pk=pk)
    runs = selectors.finding_runs(finding=finding, page=request.GET.get("runs_page"))
    return render(request, "dashboard/_runs.html", {"runs": runs})


@require_GET
def finding_evidence(request: HttpRequest, pk: int) -> HttpResponse:
    """The evidence part of a finding page (status, claims and verdicts, measured effects, axis
    scores), polled by the page. Visibility first (a hidden finding is a 404 whatever the
    request's validators); then a 304 when the ETag the page holds (``If-None-Match``) is still
    the evidence's (two queries: nothing is rendered), else the fragment with its new ETag."""
    finding = selectors.finding_get(user=request.user, pk=pk)
    state = selectors.evidence_state(finding)
    not_modified = get_conditional_response(request, etag=state["etag"])
    if not_modified is None:
        context = {**selectors.finding_evidence(finding=finding, user=request.user, state=state), "fragment": True}
        response = render(request, "dashboard/_evidence.html", context)
    else:
        response = not_modified
    response["ETag"] = state["etag"]
    # revalidate every time: the page itself sends If-None-Match (progress.js), no cache keeps it
    patch_cache_control(response, private=True, no_cache=True)
    patch_vary_headers(response, ["Cookie"])
    return response


@require_POST
def reproduction_create(request: HttpRequest, pk: int) -> HttpResponse:
    finding = selectors.finding_get(user=request.user, pk=pk)
    finding_url = reverse("dashboard:finding-detail", args=[finding.pk])
    if not request.user.is_authenticated:
        return redirect_to_login(finding_url, reverse("dashboard:login"))
    form = ReproductionRequestForm(request.POST, finding=finding)
    status, retry_after = 400, None
    # the API's reproduction rate limit, same counts (registry.api.throttling)
    wait = throttle_wait(request, ReproductionRateThrottle)
    if wait is not None:
        form.add_error(None, f"Too many reproduction requests: please wait {wait} s before asking again.")
        status, retry_after = 429, str(wait)
    elif form.is_valid():
        try:
            reproduction = reproduction_request(
                experiment=form.cleaned_data["experiment"], user=request.user, n_seeds=form.cleaned_data["n_seeds"]
            )
        except ApplicationError as exc:
            form.add_error(None, exc.message)
            if exc.status == 429:  # a quota (registry.reproductions.quotas)
                status, retry_after = 429, exc.headers.get("Retry-After")
        else:
            messages.success(
                request, f"Reproduction #{reproduction.pk} requested: {len(reproduction.seeds)} run(s) queued."
            )
            return redirect(finding_url + "#runs")
    messages.error(request, "The reproduction was not requested: please correct the form below.")
    response = _finding_page(request, finding, form=form, status=status)
    if retry_after:
        response["Retry-After"] = retry_after
    return response


@require_GET
def run_detail(request: HttpRequest, pk: int) -> HttpResponse:
    run = selectors.run_get(user=request.user, pk=pk)
    return render(request, "dashboard/run_detail.html", selectors.run_detail(run))


@require_GET
def landscape(request: HttpRequest) -> HttpResponse:
    form = _filter_form(LandscapeFilterForm, request)
    context = landscape_page(user=request.user, **form.filters())
    return render(request, "dashboard/landscape.html", {"form": form, **context})


@require_GET
def workers(request: HttpRequest) -> HttpResponse:
    """The workers and queues: who is live, on which hardware, what waits where."""
    return render(request, "dashboard/workers.html", selectors.workers_overview())


@require_GET
def plugin_list(request: HttpRequest) -> HttpResponse:
    return render(request, "dashboard/plugins.html", {"plugins": selectors.plugin_catalogue()})

"""The dashboard's pages, rendered through Django's test client on the real database."""

from __future__ import annotations

import re

import pytest
from django.contrib.staticfiles import finders
from django.test import Client

from plugins.registry import register_temporarily
from registry.findings.models import Finding
from registry.reproductions.models import Reproduction, Run
from tests.dashboard import builders as b
from tests.factories import FindingFactory
from tests.fakes.plugins import NoMetricsExperiment

pytestmark = pytest.mark.django_db

EXTERNAL_ASSET = re.compile(r"<(?:script|link)\b[^>]*\b(?:src|href)\s*=\s*[\"']?(?:https?:)?//", re.IGNORECASE)


@pytest.fixture
def author_client(client, user):
    client.force_login(user)
    return client


@pytest.fixture
def other_client(other_user):
    client = Client()
    client.force_login(other_user)
    return client


@pytest.fixture
def measured_finding(user, other_user):
    """A fix with an echo experiment, claims, five succeeded runs and a parent theory."""
    theory = b.finding(user, title="Overlap paints checkerboards", kind=Finding.Kind.THEORY, tags=["vision"])
    fix = b.finding(
        user,
        title="Resize-convolution removes checkerboards",
        summary="Use **resize** then convolve.\n\n<script>alert('x')</script>\n\n[bad](javascript:alert(1))",
        tags=["vision", "generative"],
        references=["https://distill.pub/2016/deconv-checkerboard/", "doi:10.23915/distill.00003", "arXiv:1603.07285"],
        builds_on=[theory],
        xrisk_sheet={
            "expected_safety_effects": "Fewer artifacts a monitor could miss.",
            "expected_capability_effects": "Slightly better samples.",
            "dual_use": False,
        },
    )
    experiment = b.echo_experiment(fix, user)
    b.claim(fix, user, "risk", "decrease", min_relative_effect=0.3, statement="Risk halves.")
    b.claim(fix, user, "skill", "non_inferior", margin=0.05)
    reproduction = b.measured(experiment)
    b.artifact(reproduction.runs.first())
    b.artifact(reproduction.runs.first(), name="values.json", content_type="application/json")
    return fix


def page(client, url: str, status: int = 200) -> str:
    response = client.get(url)
    assert response.status_code == status, (url, response.status_code)
    return response.content.decode()


# ---------------------------------------------------------------- findings list


def test_list_shows_findings_with_kind_status_tags_and_lean(client, measured_finding):
    html = page(client, "/")
    assert "Resize-convolution removes checkerboards" in html
    assert "Overlap paints checkerboards" in html
    row = html.split(f'data-finding="{measured_finding.pk}"')[1].split("</tr>")[0]
    assert "badge--status-reproduced" in row  # risk halves (confirmed), skill not worse (confirmed)
    assert "generative" in row and "vision" in row
    assert "badge--lean-safety-leaning" in row
    theory_row = html.split(f'data-finding="{measured_finding.builds_on.get().pk}"')[1].split("</tr>")[0]
    assert "not measured" in theory_row


@pytest.mark.parametrize(
    ("query", "shown", "hidden"),
    [
        ("q=resize", "Resize-convolution", "Overlap paints"),
        ("kind=theory", "Overlap paints", "Resize-convolution"),
        ("status=reproduced", "Resize-convolution", "Overlap paints"),
        ("tag=generative", "Resize-convolution", "Overlap paints"),
        ("plugin=echo", "Resize-convolution", "Overlap paints"),
    ],
)
def test_list_filters(client, measured_finding, query, shown, hidden):
    html = page(client, f"/?{query}")
    assert shown in html
    assert hidden not in html


def test_list_ignores_invalid_filter_values(client, measured_finding):
    html = page(client, "/?kind=bogus&status=nope&tag=%00&plugin=missing&page=abc")
    assert "Resize-convolution" in html


def test_list_paginates_and_keeps_the_filters(client, user):
    for i in range(23):
        FindingFactory(title=f"Paged finding {i:02d}", created_by=user, kind=Finding.Kind.OBSERVATION)
    first = page(client, "/?kind=observation")
    assert "Page 1 of 2" in first
    assert "kind=observation" in first.split('rel="next"')[0].rsplit("href=", 1)[1]
    second = page(client, "/?kind=observation&page=2")
    assert second.count("Paged finding") == 3


# ---------------------------------------------------------------- finding page


def test_finding_page_renders_claims_effects_lineage_and_runs(client, measured_finding):
    html = page(client, f"/findings/{measured_finding.pk}/")
    assert "<strong>resize</strong>" in html  # markdown rendered
    assert "Risk halves." in html
    assert "badge--verdict-confirmed" in html
    assert 'class="chart chart--interval"' in html and "<svg" in html
    assert "chart__reference" in html  # the claimed effect drawn on the interval plot
    # measured effects: risk about -51%, a safety axis score, the diagnostic width shown apart
    assert 'data-metric="risk"' in html and 'data-metric="width"' in html
    experiment = measured_finding.experiments.get()
    block = html.split(f'id="effects-experiment-{experiment.pk}"')[1]
    assert f"Experiment #{experiment.pk}: echo" in block and "badge--summary" in block
    assert "Axis scores" in html and "log units" in html and "×2.0 better" in html  # risk halves
    # the x-risk sheet in its own box, labelled as the authors' statement
    statement = html.split('<aside class="statement"')[1].split("</aside>")[0]
    assert "Authors' own statement" in statement and "Not measured" in statement
    assert "Fewer artifacts a monitor could miss." in statement
    # references, lineage
    assert 'href="https://doi.org/10.23915/distill.00003"' in html
    assert 'href="https://arxiv.org/abs/1603.07285"' in html
    theory = measured_finding.builds_on.get()
    assert f'href="/findings/{theory.pk}/"' in html
    # runs: progress bars, per-arm values and plots, artifacts
    assert html.count('role="progressbar"') == 5
    assert 'aria-valuenow="100"' in html
    assert "chart--dots" in html and "Per-arm values" in html
    png = measured_finding.experiments.get().reproductions.get().runs.first().artifacts.get(name="samples.png")
    assert f'<img src="/api/v1/artifacts/{png.pk}/download/"' in html
    assert 'alt="samples.png from run' in html
    assert "values.json" in html
    assert 'data-polling="off"' in html and "hx-trigger" not in html


def test_finding_page_sanitises_the_markdown(client, measured_finding):
    html = page(client, f"/findings/{measured_finding.pk}/")
    summary = html.split('class="summary prose"')[1].split("</section>")[0]
    assert "<script" not in summary
    assert "alert('x')" not in summary or "&lt;script" in summary
    assert "javascript:" not in html
    assert "<script>alert" not in html


def test_theory_page_shows_what_was_built_on_it(client, measured_finding):
    theory = measured_finding.builds_on.get()
    html = page(client, f"/findings/{theory.pk}/")
    assert f'href="/findings/{measured_finding.pk}/"' in html
    assert "Built upon by" in html
    assert "Downstream effects of this theory" in html


def test_finding_without_experiments_or_effects(client, user):
    finding = b.finding(user, title="Bare observation", kind=Finding.Kind.OBSERVATION)
    html = page(client, f"/findings/{finding.pk}/")
    assert "This finding makes no checkable claim yet." in html
    assert "No experiment is attached" in html
    assert "Authors' own statement" not in html


def test_runs_fragment_polls_only_while_runs_are_active(client, user):
    finding = b.finding(user)
    experiment = b.echo_experiment(finding, user)
    reproduction = b.queued(experiment, 2)
    html = page(client, f"/findings/{finding.pk}/")
    assert f'hx-get="/findings/{finding.pk}/runs/"' in html and 'hx-trigger="every 2s"' in html
    fragment = page(client, f"/findings/{finding.pk}/runs/")
    assert fragment.lstrip().startswith("<section") and "<html" not in fragment
    assert 'hx-trigger="every 2s"' in fragment and 'aria-valuenow="0"' in fragment

    reproduction.runs.update(state=Run.State.RUNNING, progress=0.42, progress_message="step 4")
    fragment = page(client, f"/findings/{finding.pk}/runs/")
    assert 'aria-valuenow="42"' in fragment and "step 4" in fragment

    reproduction.runs.update(state=Run.State.FAILED, error="boom")
    fragment = page(client, f"/findings/{finding.pk}/runs/")
    assert "hx-trigger" not in fragment and 'data-polling="off"' in fragment
    assert "boom" in fragment


# ---------------------------------------------------------------- visibility


@pytest.fixture
def restricted(user):
    finding = b.finding(user, title="Dual-use capability trick", visibility=Finding.Visibility.RESTRICTED,
                        tags=["secret-tag"])
    experiment = b.echo_experiment(finding, user)
    b.measured(experiment)
    return finding


def test_restricted_finding_is_hidden_from_others(client, other_client, restricted):
    run = Run.objects.filter(reproduction__experiment__finding=restricted).first()
    for viewer in (client, other_client):
        for url in (f"/findings/{restricted.pk}/", f"/findings/{restricted.pk}/runs/", f"/runs/{run.pk}/"):
            page(viewer, url, status=404)
        for url in ("/", "/landscape/", "/?tag=secret-tag"):
            html = page(viewer, url)
            assert "Dual-use capability trick" not in html
            assert 'value="secret-tag"' not in html  # its tag is not offered as a filter either
    response = other_client.post(f"/findings/{restricted.pk}/reproductions/", {"n_seeds": 2})
    assert response.status_code == 404


def test_restricted_finding_is_shown_to_its_author_and_named_readers(author_client, other_user, restricted):
    assert "Dual-use capability trick" in page(author_client, "/")
    assert "badge--restricted" in page(author_client, f"/findings/{restricted.pk}/")
    restricted.restricted_to.add(other_user)
    reader = Client()
    reader.force_login(other_user)
    assert "Dual-use capability trick" in page(reader, f"/findings/{restricted.pk}/")


# ---------------------------------------------------------------- request a reproduction


def test_author_requests_a_reproduction(author_client, user):
    finding = b.finding(user)
    experiment = b.echo_experiment(finding, user)
    html = page(author_client, f"/findings/{finding.pk}/")
    assert "Request reproduction" in html and 'name="csrfmiddlewaretoken"' in html
    response = author_client.post(
        f"/findings/{finding.pk}/reproductions/", {"experiment": experiment.pk, "n_seeds": 4}, follow=True
    )
    assert response.status_code == 200
    reproduction = Reproduction.objects.get(experiment=experiment)
    assert reproduction.runs.count() == 4 and reproduction.requested_by == user
    assert set(reproduction.runs.values_list("state", flat=True)) == {Run.State.QUEUED}
    html = response.content.decode()
    assert f"Reproduction #{reproduction.pk} requested" in html
    assert 'hx-trigger="every 2s"' in html


def test_any_signed_in_user_may_reproduce_but_anonymous_visitors_must_sign_in(client, other_client, user):
    finding = b.finding(user)
    experiment = b.echo_experiment(finding, user)
    response = client.post(f"/findings/{finding.pk}/reproductions/", {"experiment": experiment.pk, "n_seeds": 2})
    assert response.status_code == 302 and response["Location"].startswith("/accounts/login/")
    assert not Reproduction.objects.exists()
    assert "Request reproduction" in page(other_client, f"/findings/{finding.pk}/")
    response = other_client.post(f"/findings/{finding.pk}/reproductions/", {"experiment": experiment.pk, "n_seeds": 2})
    assert response.status_code == 302
    reproduction = Reproduction.objects.get()
    assert reproduction.requested_by != user and reproduction.runs.count() == 2


@pytest.mark.parametrize("n_seeds", ["0", "-3", "abc", "", "100000", "2.5"])
def test_bad_seed_counts_are_refused_with_a_message(author_client, user, n_seeds):
    finding = b.finding(user)
    experiment = b.echo_experiment(finding, user)
    response = author_client.post(
        f"/findings/{finding.pk}/reproductions/", {"experiment": experiment.pk, "n_seeds": n_seeds}
    )
    assert response.status_code == 400
    html = response.content.decode()
    assert "The reproduction was not requested" in html
    assert 'class="field__error"' in html
    assert not Reproduction.objects.exists()


def test_an_experiment_of_another_finding_is_refused(author_client, user):
    finding, elsewhere = b.finding(user), b.finding(user, title="Elsewhere")
    b.echo_experiment(finding, user)
    foreign = b.echo_experiment(elsewhere, user)
    response = author_client.post(f"/findings/{finding.pk}/reproductions/", {"experiment": foreign.pk, "n_seeds": 2})
    assert response.status_code == 400
    assert not Reproduction.objects.exists()


def test_reproduction_form_needs_a_csrf_token(user):
    finding = b.finding(user)
    experiment = b.echo_experiment(finding, user)
    client = Client(enforce_csrf_checks=True)
    client.force_login(user)
    response = client.post(f"/findings/{finding.pk}/reproductions/", {"experiment": experiment.pk, "n_seeds": 2})
    assert response.status_code == 403
    assert not Reproduction.objects.exists()


# ---------------------------------------------------------------- landscape, plugins, runs


def test_landscape_plots_one_point_per_measured_finding(client, user, measured_finding):
    capability = b.finding(user, title="Scaling trick", tags=["lm"])
    b.measured(b.echo_experiment(capability, user), {"risk": b.RISK_UP, "skill": b.SKILL_UP})
    html = page(client, "/landscape/")
    svg = html.split('class="chart chart--scatter"')[1].split("</svg>")[0]
    assert svg.count("data-finding=") == 2
    assert f'href="/findings/{measured_finding.pk}/"' in svg and f'href="/findings/{capability.pk}/"' in svg
    assert "chart__point--safety-leaning" in svg and "chart__point--capability-leaning" in svg
    assert "The aggregate answer" in html
    assert "lean-count--safety-leaning" in html
    assert "Correlation of safety and capability scores" in html
    assert "not shown: withheld" in html  # two findings: no correlation, no trend
    assert "capability score (log units" in svg and "safety score (log units" in svg
    assert "(not plotted)" in html  # the theory has no measured effects

    filtered = page(client, "/landscape/?tag=lm")
    svg = filtered.split('class="chart chart--scatter"')[1].split("</svg>")[0]
    assert svg.count("data-finding=") == 1 and "Resize-convolution" not in filtered


def test_plugins_catalogue(client):
    with register_temporarily(NoMetricsExperiment):
        html = page(client, "/plugins/")
    echo = html.split('id="plugin-echo"')[1].split("</section>")[0]
    assert "v1.0.0" in echo and "badge--available" in echo
    assert "<code>risk</code>" in echo and "axis--safety" in echo and "axis--capability" in echo
    assert "<td>ratio</td>" in echo and "intervals" not in echo
    params = echo.split("params-table")[1]
    assert "<code>baseline</code>" in params and "number" in params and "<code>1.0</code>" in params
    assert "Value of the safety metric in the baseline arm." in params
    assert "≥ 0.0" in params and "≤ 120.0" in params
    broken = html.split('id="plugin-no_metrics"')[1].split("</section>")[0]
    assert "badge--unavailable" in broken and "declares no metrics" in broken


def test_run_page(client, user, measured_finding):
    run = Run.objects.filter(reproduction__experiment__finding=measured_finding).first()
    Run.objects.filter(pk=run.pk).update(error="ValueError: bad", traceback="Traceback (most recent call last)")
    b.artifact(run, name="grid.png")
    html = page(client, f"/runs/{run.pk}/")
    assert f"Run #{run.pk}" in html and "badge--state-succeeded" in html
    assert "echo seed 0" in html and '<pre class="log"' in html
    assert "Traceback (most recent call last)" in html and "ValueError: bad" in html
    assert "2.x" in html  # environment
    assert "<th scope=\"col\">risk</th>" in html
    assert 'alt="grid.png from run' in html
    assert 'role="progressbar"' in html and "hx-trigger" not in html


def test_active_run_page_polls(client, user):
    experiment = b.echo_experiment(b.finding(user), user)
    run = b.queued(experiment, 1).runs.get()
    assert 'hx-select="#run-live"' in page(client, f"/runs/{run.pk}/")


def test_missing_objects_are_404(client):
    for url in ("/findings/999999/", "/findings/999999/runs/", "/runs/999999/", "/no-such-page/"):
        html = page(client, url, status=404)
        assert "<h1>Not found</h1>" in html and 'class="site-header"' in html


# ---------------------------------------------------------------- sign in, sign out


def test_sign_in_and_out(client, user):
    user.set_password("correct horse")
    user.save()
    html = page(client, "/accounts/login/")
    assert 'for="id_username"' in html and 'for="id_password"' in html
    bad = client.post("/accounts/login/", {"username": user.username, "password": "nope"})
    assert bad.status_code == 200 and "form-errors" in bad.content.decode()
    response = client.post("/accounts/login/", {"username": user.username, "password": "correct horse"})
    assert response.status_code == 302 and response["Location"] == "/"
    html = page(client, "/")
    assert f'<strong class="site-user__name">{user.username}</strong>' in html
    assert 'action="/accounts/logout/"' in html
    response = client.post("/accounts/logout/")
    assert response.status_code == 302
    assert "Sign in" in page(client, "/")


def test_sign_in_returns_to_the_next_page(client, user):
    user.set_password("correct horse")
    user.save()
    response = client.post(
        "/accounts/login/", {"username": user.username, "password": "correct horse", "next": "/landscape/"}
    )
    assert response["Location"] == "/landscape/"


# ---------------------------------------------------------------- offline


def test_no_page_loads_scripts_or_styles_from_elsewhere(client, user, measured_finding):
    run = Run.objects.filter(reproduction__experiment__finding=measured_finding).first()
    assert not EXTERNAL_ASSET.search(page(client, "/accounts/login/"))
    client.force_login(user)
    urls = ["/", f"/findings/{measured_finding.pk}/", f"/findings/{measured_finding.pk}/runs/", "/landscape/",
            "/plugins/", f"/runs/{run.pk}/"]
    for url in urls:
        html = page(client, url)
        assert not EXTERNAL_ASSET.search(html), url
        assert 'src="http' not in html and "src='http" not in html, url
        for tag in re.findall(r"<link\b[^>]*>", html):
            assert 'href="http' not in tag, (url, tag)
    html = page(client, "/")
    assert 'src="/static/dashboard/vendor/htmx.min.js"' in html
    assert 'href="/static/dashboard/dashboard.css"' in html


def test_static_files_are_local():
    for name in ("dashboard/vendor/htmx.min.js", "dashboard/dashboard.css", "dashboard/favicon.svg"):
        path = finders.find(name)
        assert path, name
    with open(finders.find("dashboard/vendor/htmx.min.js"), encoding="utf-8") as handle:
        assert 'version:"2.' in handle.read()


def test_server_error_page_renders_without_a_request():
    from django.template import loader

    html = loader.get_template("500.html").render()
    assert "Something went wrong" in html and "/static/dashboard/dashboard.css" in html

"""The small defects of issue 13 (part 9), each with its test: a reproduction whose runs were all
cancelled is not a green "finished"; claims before any data do not read "inconclusive"; a running
run's empty log is not "Empty."; a null environment value (CUDA) is said in words; artifact images
have alt text and a caption; breadcrumbs are links; timestamps say their time zone (UTC, in a
<time> element with an ISO datetime)."""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, timedelta
from datetime import timezone as dt_timezone

import pytest
from django.test import Client

from registry.dashboard.selectors import environment_items
from registry.dashboard.templatetags.dashboard_time import utc
from registry.findings.models import Finding
from registry.reproductions.models import Run
from tests.dashboard import builders as b
from tests.dashboard.test_effects_pages import claim_row
from tests.dashboard.test_views import page

pytestmark = pytest.mark.django_db


@pytest.fixture
def all_readers(readers, user) -> dict[str, Client]:
    owner = Client()
    owner.force_login(user)
    return {**readers, "owner": owner}


def reproduction_header(html: str, reproduction_pk: int) -> str:
    return html.split(f'id="reproduction-{reproduction_pk}"')[1].split("</h4>")[0]


# ---------------------------------------------------------------- reproduction badges


def test_all_cancelled_reproduction_says_cancelled_not_finished(all_readers, user):
    finding = b.finding(user)
    experiment = b.echo_experiment(finding, user)
    cancelled = b.queued(experiment, 2, state=Run.State.CANCELLED)
    failed = b.queued(experiment, 2, state=Run.State.FAILED)
    mixed = b.queued(experiment, 2, state=Run.State.CANCELLED)
    Run.objects.filter(pk=mixed.runs.order_by("id").first().pk).update(state=Run.State.TIMED_OUT)
    done = b.measured(experiment)
    for who, client in all_readers.items():
        html = page(client, f"/findings/{finding.pk}/")
        header = reproduction_header(html, cancelled.pk)
        assert 'badge--state-cancelled">cancelled<' in header, who
        assert "finished" not in header and "badge--state-finished" not in header
        assert 'badge--state-failed">failed<' in reproduction_header(html, failed.pk)
        assert 'badge--state-failed">failed<' in reproduction_header(html, mixed.pk)  # none succeeded
        assert 'badge--state-finished">finished<' in reproduction_header(html, done.pk)
        assert f'id="reproduction-{cancelled.pk}" data-reproduction="{cancelled.pk}" data-state="cancelled"' in html


# ---------------------------------------------------------------- claims before data


def test_claims_before_data_say_awaiting_or_no_data_never_inconclusive(all_readers, user):
    finding = b.finding(user)
    experiment = b.echo_experiment(finding, user)
    claim = b.claim(finding, user, "risk", "decrease", min_relative_effect=0.3)
    b.recompute(finding)
    for client in all_readers.values():
        row = claim_row(page(client, f"/findings/{finding.pk}/"), claim.pk)
        assert "no data yet" in row and ">inconclusive<" not in row
    reproduction = b.queued(experiment, 3)
    for who, client in all_readers.items():
        row = claim_row(page(client, f"/findings/{finding.pk}/"), claim.pk)
        assert 'badge--verdict-none">awaiting data<' in row, who
        assert "inconclusive" not in row.split('data-unit=')[1]  # only the machine-readable attribute says it
    Run.objects.filter(reproduction=reproduction).update(state=Run.State.RUNNING)
    assert "awaiting data" in claim_row(page(all_readers["anonymous"], f"/findings/{finding.pk}/"), claim.pk)


# ---------------------------------------------------------------- the run log


@pytest.mark.parametrize("state", [Run.State.QUEUED, Run.State.RUNNING])
def test_empty_log_of_an_active_run_says_no_lines_yet(all_readers, user, state):
    finding = b.finding(user)
    run = b.queued(b.echo_experiment(finding, user), 1, state=state).runs.get()
    for who, client in all_readers.items():
        html = page(client, f"/runs/{run.pk}/")
        log = html.split('id="run-log"')[1].split("</section>")[0]
        assert f"No log lines yet: the run is {state}" in log, who
        assert "Empty." not in html
        # the log section is refreshed with the run's live part (selected out of band)
        assert 'hx-select-oob="#run-state-badge,#run-measurements,#run-curves,#run-artifacts,#run-log"' in html


def test_the_log_of_a_running_run_is_shown_and_followed(client, user):
    """Its log is stored while it runs (worker heartbeat): shown, marked to keep its newest lines
    in view as the page refreshes it (progress.js), and no longer marked once the run ended."""
    finding = b.finding(user)
    run = b.queued(b.echo_experiment(finding, user), 1, state=Run.State.RUNNING).runs.get()
    Run.objects.filter(pk=run.pk).update(logs="step 1\nstep 2")
    html = page(client, f"/runs/{run.pk}/")
    assert '<pre class="log" tabindex="0" data-follow>step 1\nstep 2</pre>' in html
    Run.objects.filter(pk=run.pk).update(state=Run.State.SUCCEEDED)
    assert '<pre class="log" tabindex="0">step 1\nstep 2</pre>' in page(client, f"/runs/{run.pk}/")


def test_log_of_an_ended_run(client, user):
    finding = b.finding(user)
    experiment = b.echo_experiment(finding, user)
    silent = b.queued(experiment, 1, state=Run.State.FAILED).runs.get()
    html = page(client, f"/runs/{silent.pk}/")
    assert "This run wrote no log lines." in html and "No log lines yet" not in html and "Empty." not in html
    talkative = b.measured(experiment).runs.first()
    html = page(client, f"/runs/{talkative.pk}/")
    assert '<pre class="log" tabindex="0">echo seed 0</pre>' in html and "hx-select-oob" not in html


# ---------------------------------------------------------------- the environment


def test_null_environment_values_are_said_in_words(all_readers, user):
    finding = b.finding(user)
    run = b.measured(b.echo_experiment(finding, user)).runs.first()
    Run.objects.filter(pk=run.pk).update(
        environment={"cuda": None, "cudnn": None, "torch": "2.5.1", "deterministic": True, "gpu_count": 0,
                     "something_new": None}
    )
    for who, client in all_readers.items():
        html = page(client, f"/runs/{run.pk}/")
        environment = html.split('class="meta meta--grid environment"')[1].split("</dl>")[0]
        assert "null" not in environment and "None" not in environment, who
        cuda = environment.split('data-key="cuda"')[1].split("</div>")[0]
        assert "<dt>CUDA</dt>" in cuda and "none (a CPU-only build of PyTorch)" in cuda
        assert "<dt>PyTorch</dt><dd><code>2.5.1</code>" in environment
        assert "<dt>Deterministic</dt><dd><code>yes</code>" in environment
        assert "<dt>Something new</dt><dd><span class=\"muted\">not recorded</span>" in environment


def test_environment_items():
    assert environment_items(None) == [] and environment_items(["not", "a", "dict"]) == []
    items = {i["key"]: i for i in environment_items({"cuda": None, "driver": "", "gpu_count": 2, "flag": False,
                                                      "list": [1, 2]})}
    assert items["cuda"] == {"key": "cuda", "label": "CUDA", "value": "none (a CPU-only build of PyTorch)",
                             "missing": True}
    assert items["driver"]["value"] == "none (no NVIDIA driver found)" and items["driver"]["missing"]
    assert items["gpu_count"]["value"] == "2" and items["gpu_count"]["label"] == "GPUs"
    assert items["flag"]["value"] == "no" and items["list"]["value"] == "[1, 2]"


# ---------------------------------------------------------------- artifact images


def test_artifact_images_have_alt_text_and_a_caption(all_readers, user):
    finding = b.finding(user)
    run = b.measured(b.echo_experiment(finding, user)).runs.order_by("id").first()
    png = b.artifact(run, "samples.png")
    b.artifact(run, "values.json", content_type="application/json")
    alt = f'alt="samples.png from run {run.pk} (seed {run.seed})"'
    for who, client in all_readers.items():
        for url in (f"/findings/{finding.pk}/", f"/runs/{run.pk}/"):
            html = page(client, url)
            figure = html.split('<figure class="artifact-figure">')[1].split("</figure>")[0]
            assert f'<img src="/api/v1/artifacts/{png.pk}/download/" {alt}>' in figure, (who, url)
            caption = figure.split("<figcaption>")[1].split("</figcaption>")[0]
            assert "samples.png</a>" in caption
            assert html.count('<figure class="artifact-figure">') == 1  # the JSON file is a link, no figure
            assert "values.json</a>" in html


# ---------------------------------------------------------------- breadcrumbs


def test_run_breadcrumbs_are_links_to_where_they_name(all_readers, user):
    finding = b.finding(user, title="Crumbs & <things>")
    experiment = b.echo_experiment(finding, user)
    reproduction = b.measured(experiment)
    run = reproduction.runs.order_by("id").first()
    for who, client in all_readers.items():
        html = page(client, f"/runs/{run.pk}/")
        nav = html.split('<nav class="breadcrumb" aria-label="Breadcrumb">')[1].split("</nav>")[0]
        links = re.findall(r'<a href="([^"]+)">([^<]+)</a>', nav)
        assert links == [
            (f"/findings/{finding.pk}/", "Crumbs &amp; &lt;things&gt;"),
            (f"/findings/{finding.pk}/#experiment-{experiment.pk}", f"Experiment #{experiment.pk} (echo)"),
            (f"/findings/{finding.pk}/#reproduction-{reproduction.pk}", f"Reproduction #{reproduction.pk}"),
        ], who
        assert f'<span aria-current="page">Run #{run.pk}</span>' in nav
        # the anchors exist on the finding page
        finding_page = page(client, f"/findings/{finding.pk}/")
        assert f'id="experiment-{experiment.pk}"' in finding_page
        assert f'id="reproduction-{reproduction.pk}"' in finding_page


def test_hidden_runs_stay_hidden(all_readers, other_user):
    hidden = b.finding(other_user, title="Hidden", visibility=Finding.Visibility.RESTRICTED)
    run = b.measured(b.echo_experiment(hidden, other_user)).runs.first()
    for who in ("anonymous", "owner"):  # "owner" is the fixture's user: not this finding's author
        assert all_readers[who].get(f"/runs/{run.pk}/").status_code == 404, who
    assert all_readers["stranger"].get(f"/runs/{run.pk}/").status_code == 200  # other_user wrote it


# ---------------------------------------------------------------- time zones


def test_timestamps_say_utc_in_time_elements(all_readers, user):
    finding = b.finding(user)
    run = b.measured(b.echo_experiment(finding, user)).runs.first()
    started = datetime(2026, 3, 4, 5, 6, 7, tzinfo=UTC)
    Run.objects.filter(pk=run.pk).update(started_at=started, finished_at=started + timedelta(minutes=2))
    for who, client in all_readers.items():
        html = page(client, f"/runs/{run.pk}/")
        assert '<dd><time datetime="2026-03-04T05:06:07Z">2026-03-04 05:06:07 UTC</time></dd>' in html, who
        assert '<time datetime="2026-03-04T05:08:07Z">2026-03-04 05:08:07 UTC</time>' in html
        created = html.split("<dt>Created</dt>")[1].split("</dd>")[0]
        assert re.search(r'<time datetime="\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ">[^<]+ UTC</time>', created)
        finding_page = page(client, f"/findings/{finding.pk}/")
        posted = finding_page.split("<dt>Posted</dt>")[1].split("</dd>")[0]
        assert re.search(r'<time datetime="[^"]+Z">\d{4}-\d\d-\d\d \d\d:\d\d UTC</time>', posted)
        requested = finding_page.split("requested by")[1].split("</p>")[0]
        assert re.search(r'<time datetime="[^"]+Z">[^<]+ UTC</time>', requested)


def _cells(html: str, table_after: str) -> list[list[str]]:
    """The body cells of the first table after ``table_after``, row by row."""
    body = html.split(table_after)[1].split("<tbody>")[1].split("</tbody>")[0]
    return [re.findall(r"<td>(.*?)</td>", row, re.S) for row in body.split("</tr>") if "<td>" in row]


def test_token_and_invitation_tables_say_utc_in_time_elements(all_readers, user):
    """The profile's tokens (created, expires, last used) and the invitations (created, expires,
    used) say UTC in <time> elements, as the run and finding pages do."""
    from registry.accounts.models import ApiToken, Invitation
    from registry.accounts.services import token_create
    from tests.factories import UserFactory

    moment = datetime(2030, 3, 4, 5, 6, 7, tzinfo=UTC)
    token, _ = token_create(user=user, name="laptop")
    ApiToken.objects.filter(pk=token.pk).update(
        created_at=moment, expires_at=moment + timedelta(days=1), last_used_at=moment + timedelta(hours=1))
    owner = all_readers["owner"]
    (cells,) = _cells(page(owner, "/accounts/profile/"), 'id="tokens-list-heading"')
    assert cells[2:5] == ['<time datetime="2030-03-04T05:06:07Z">2030-03-04 05:06 UTC</time>',
                          '<time datetime="2030-03-05T05:06:07Z">2030-03-05 05:06 UTC</time>',
                          '<time datetime="2030-03-04T06:06:07Z">2030-03-04 06:06 UTC</time>'], cells

    type(user).objects.filter(pk=user.pk).update(is_staff=True)
    Invitation.objects.create(code="c" * 20, created_by=user, created_at=moment,
                              expires_at=moment + timedelta(days=2), used_by=UserFactory(username="newcomer"),
                              used_at=moment + timedelta(minutes=30))
    (cells,) = _cells(page(owner, "/accounts/invitations/"), 'id="list-heading"')
    assert cells[2] == f'<time datetime="2030-03-04T05:06:07Z">2030-03-04 05:06 UTC</time> by {user.username}'
    assert cells[3] == '<time datetime="2030-03-06T05:06:07Z">2030-03-06 05:06 UTC</time>'
    assert cells[4] == 'newcomer (<time datetime="2030-03-04T05:36:07Z">2030-03-04 05:36 UTC</time>)'


def test_utc_filter():
    paris = dt_timezone(timedelta(hours=1))
    assert utc(datetime(2026, 1, 2, 13, 30, 59, tzinfo=paris)) == (
        '<time datetime="2026-01-02T12:30:59Z">2026-01-02 12:30 UTC</time>'
    )
    assert utc(datetime(2026, 1, 2, 13, 30, 59, tzinfo=paris), "seconds").endswith(">2026-01-02 12:30:59 UTC</time>")
    assert utc(datetime(2026, 1, 2, 3, 4)) == '<time datetime="2026-01-02T03:04:00Z">2026-01-02 03:04 UTC</time>'
    assert utc(date(2026, 1, 2)) == '<time datetime="2026-01-02">2026-01-02</time>'
    assert utc(None) == "" and utc("2026-01-02") == ""


def test_embargo_end_says_utc(all_readers, user):
    until = datetime(2030, 5, 6, 7, 8, tzinfo=UTC)
    finding = b.finding(user, title="Embargoed", visibility=Finding.Visibility.RESTRICTED, embargo_until=until)
    html = page(all_readers["owner"], f"/findings/{finding.pk}/")
    badge = html.split('class="badge badge--restricted"')[1].split("</span>")[0]
    assert 'until <time datetime="2030-05-06T07:08:00Z">2030-05-06 07:08 UTC</time>' in badge
    for who in ("anonymous", "stranger"):
        assert all_readers[who].get(f"/findings/{finding.pk}/").status_code == 404
        assert all_readers[who].get(f"/findings/{finding.pk}/evidence/").status_code == 404


def test_the_embargo_field_says_and_reads_utc(all_readers, user, settings):
    """The form's embargo is read as UTC, as its help text says, whatever the server's TIME_ZONE,
    and shown back in UTC."""
    settings.TIME_ZONE = "America/New_York"  # UTC-5 in January: a reading in it would be off by 5 h
    finding = b.finding(user, title="Embargoed")
    owner = all_readers["owner"]
    form = page(owner, f"/findings/{finding.pk}/edit/")
    help_text = form.split('name="embargo_until"')[1].split("</div>")[0]
    assert "in UTC" in help_text and "your time zone" not in form
    from tests.dashboard.test_submit_forms import FINDING_POST

    post = {**FINDING_POST, "visibility": "restricted", "embargo_until": "2031-01-02T03:04"}
    assert owner.post(f"/findings/{finding.pk}/edit/", post).status_code == 302
    finding.refresh_from_db()
    assert finding.embargo_until == datetime(2031, 1, 2, 3, 4, tzinfo=UTC)
    assert 'value="2031-01-02T03:04"' in page(owner, f"/findings/{finding.pk}/edit/")
    # typed with a space (a browser without a date-time picker): UTC too
    post = {**FINDING_POST, "visibility": "restricted", "embargo_until": "2031-01-02 05:06"}
    assert owner.post(f"/findings/{finding.pk}/edit/", post).status_code == 302
    finding.refresh_from_db()
    assert finding.embargo_until == datetime(2031, 1, 2, 5, 6, tzinfo=UTC)


def test_help_texts_are_described_by_ids_that_exist(all_readers, user, settings):
    """Django names a field's help ``<auto_id>_helptext`` in its ``aria-describedby``: the help
    paragraph carries that id, so a screen reader reads it with the field."""
    settings.SIGNUP_MODE = "open"
    type(user).objects.filter(pk=user.pk).update(is_staff=True)
    finding = b.finding(user)
    experiment = b.echo_experiment(finding, user)
    urls = ["/findings/new/", f"/findings/{finding.pk}/edit/", f"/findings/{finding.pk}/claims/new/",
            f"/findings/{finding.pk}/experiments/new/", f"/experiments/{experiment.pk}/retract/",
            "/accounts/profile/", "/accounts/invitations/"]
    pages = [(url, page(all_readers["owner"], url)) for url in urls]
    pages.append(("/accounts/signup/", page(all_readers["anonymous"], "/accounts/signup/")))
    described = 0
    for url, html in pages:
        ids = set(re.findall(r'\sid="([^"]+)"', html))
        for refs in re.findall(r'aria-describedby="([^"]+)"', html):
            for ref in refs.split():
                described += 1
                assert ref in ids, (url, ref)
    assert described >= 10, described

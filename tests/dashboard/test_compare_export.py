"""Compare and export (issue 13, part 7): runs and reproductions of a finding side by side with a
config diff against the finding's original run; CSV and JSON exports of a finding, a run and the
landscape, under the pages' visibility rules (anonymous, a signed-in stranger, the owner), with a
constant number of queries and never a write."""

from __future__ import annotations

import csv
import io
import json

import pytest
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext

from registry.findings.models import Finding
from registry.reproductions.models import Measurement, Run
from tests.dashboard import builders as b
from tests.dashboard.test_views import page

pytestmark = pytest.mark.django_db


@pytest.fixture
def clients(client, other_user, user) -> dict[str, Client]:
    stranger, owner = Client(), Client()
    stranger.force_login(other_user)
    owner.force_login(user)
    return {"anonymous": client, "stranger": stranger, "owner": owner}


def _elsewhere(reproduction, *, hardware: str, plugin_version: str, torch: str) -> None:
    """The runs of a reproduction as if they had run on other hardware with other versions."""
    for run in reproduction.runs.all():
        run.hardware, run.plugin_version = hardware, plugin_version
        run.environment = {**run.environment, "torch": torch}
        run.save(update_fields=["hardware", "plugin_version", "environment"])


@pytest.fixture
def measured(user, other_user):
    """A public finding: its original reproduction (cpu, plugin 1.0.0) and a stranger's one on a GPU
    with plugin 1.1.0 and another torch."""
    finding = b.finding(user, title="Compared finding")
    experiment = b.echo_experiment(finding, user, params={"effect": -0.5})
    original = b.measured(experiment, recompute=False)
    second = b.measured(experiment, user=other_user)
    _elsewhere(second, hardware="NVIDIA H100", plugin_version="1.1.0", torch="2.5")
    return finding, original, second


@pytest.fixture
def secret(user):
    finding = b.finding(user, title="Secret finding", visibility=Finding.Visibility.RESTRICTED)
    reproduction = b.measured(b.echo_experiment(finding, user))
    return finding, reproduction


def _column(html: str, key: str) -> str:
    return html.split(f'data-key="{key}"')[1].split("</tr>")[0]


# ---------------------------------------------------------------- compare


def test_reproductions_side_by_side_with_a_config_diff(clients, measured):
    finding, original, second = measured
    url = f"/findings/{finding.pk}/compare/?reproduction={original.pk}&reproduction={second.pk}"
    for who, client in clients.items():
        html = page(client, url)
        metrics = html.split('class="table compare-table compare-metrics"')[1].split("</table>")[0]
        assert f"Reproduction #{original.pk}" in metrics and f"Reproduction #{second.pk}" in metrics, who
        assert "badge--original" in metrics
        risk_baseline = metrics.split('data-metric="risk" data-arm="baseline"')[1].split("</tr>")[0]
        assert risk_baseline.count("(n=5)") == 2  # both reproductions: mean ± SD over 5 seeds
        change = metrics.split('data-metric="risk" data-arm="intervention − baseline"')[1].split("</tr>")[0]
        assert change.count("%") == 2  # the relative change of each
        diff = html.split('class="table compare-table config-diff"')[1].split("</table>")[0]
        hardware = _column(diff, "hardware")
        assert "<code>cpu</code>" in hardware and "NVIDIA H100" in hardware and 'data-changed="true"' in hardware
        assert "1.1.0" in _column(diff, "plugin version") and 'data-changed="true"' in _column(diff, "plugin version")
        assert 'data-changed="true"' in _column(diff, "environment torch")
        assert 'data-changed="true"' not in _column(diff, "parameter effect")  # same experiment
        assert "environment seed" not in diff  # seeds differ by design
        assert "<strong>3</strong> settings differ" in html


def test_single_runs_are_compared_with_the_original_run(clients, measured):
    finding, original, second = measured
    first_run = original.runs.order_by("id").first()
    other_run = second.runs.order_by("id").last()
    html = page(clients["stranger"], f"/findings/{finding.pk}/compare/?run={other_run.pk}")
    assert f"Run #{first_run.pk} (the finding&#x27;s original run)" in html
    assert f"Run #{other_run.pk}" in html
    assert f'data-item="run-{other_run.pk}"' in html


def test_no_selection_compares_every_reproduction(clients, measured):
    finding, original, second = measured
    html = page(clients["anonymous"], f"/findings/{finding.pk}/compare/")
    assert f'data-item="reproduction-{original.pk}"' in html and f'data-item="reproduction-{second.pk}"' in html
    assert "Nothing was selected" in html


@pytest.mark.parametrize(
    ("query", "field", "words"),
    [
        ("run=abc", "run", "is not a run number"),
        ("reproduction=-3", "reproduction", "is not a reproduction number"),
        ("run=" + "&run=".join(str(i) for i in range(1, 15)), "run", "at most 12"),
    ],
)
def test_bad_selections_are_400_with_the_error_beside_its_field(clients, measured, query, field, words):
    finding, *_ = measured
    html = page(clients["owner"], f"/findings/{finding.pk}/compare/?{query}", status=400)
    errors = html.split(f'id="compare-{field}-errors"')[1].split("</div>")[0]
    assert words in errors and 'class="field__error"' in errors
    assert 'class="table compare-table' not in html  # nothing compared
    assert f'name="reproduction" value="{measured[1].pk}"' in html  # the choices stay, to correct


def test_runs_of_another_finding_are_refused_by_name(clients, measured, secret):
    finding, *_ = measured
    _, hidden = secret
    foreign = hidden.runs.first()
    for client in clients.values():
        html = page(client, f"/findings/{finding.pk}/compare/?run={foreign.pk}", status=400)
        errors = html.split('id="compare-run-errors"')[1].split("</div>")[0]
        assert f"run {foreign.pk} is not a run of this finding" in errors
        assert "Secret finding" not in html  # nothing of the other finding leaks


def test_the_runs_list_offers_checkboxes_and_exports(clients, measured):
    finding, original, _ = measured
    html = page(clients["anonymous"], f"/findings/{finding.pk}/")
    runs = html.split('id="runs"')[1]
    assert f'action="/findings/{finding.pk}/compare/"' in runs
    assert f'name="reproduction" value="{original.pk}"' in runs
    run = original.runs.first()
    assert f'form="compare-runs" name="run" value="{run.pk}"' in runs
    assert f'href="/findings/{finding.pk}/export.csv"' in runs and f'href="/findings/{finding.pk}/export.json"' in runs
    run_page = page(clients["anonymous"], f"/runs/{run.pk}/")
    assert f'href="/runs/{run.pk}/export.csv"' in run_page and f'href="/runs/{run.pk}/export.json"' in run_page
    assert f"/findings/{finding.pk}/compare/?run={run.pk}" in run_page
    landscape = page(clients["anonymous"], "/landscape/?kind=fix")
    assert 'href="/landscape/export.csv?kind=fix"' in landscape


# ---------------------------------------------------------------- exports


def _csv(response) -> list[dict[str, str]]:
    assert response["Content-Type"].startswith("text/csv")
    assert response["Content-Disposition"].startswith("attachment; filename=")
    return list(csv.DictReader(io.StringIO(response.content.decode())))


def _json(response) -> dict:
    assert response["Content-Type"] == "application/json"
    assert response["Content-Disposition"].startswith("attachment; filename=")
    return json.loads(response.content)


def test_finding_export_csv_and_json(clients, measured):
    finding, original, second = measured
    n_measurements = Measurement.objects.filter(run__reproduction__experiment__finding=finding).count()
    for client in clients.values():
        response = client.get(f"/findings/{finding.pk}/export.csv")
        assert response.status_code == 200
        assert f'filename="finding-{finding.pk}.csv"' in response["Content-Disposition"]
        rows = _csv(response)
        assert len(rows) == n_measurements == 2 * 5 * 3 * 2  # reproductions, seeds, metrics, arms
        first = rows[0]
        assert first["finding"] == str(finding.pk) and first["plugin"] == "echo"
        assert {r["hardware"] for r in rows} == {"cpu", "NVIDIA H100"}
        assert all(float(r["value"]) > 0 for r in rows) and {r["arm"] for r in rows} == {"baseline", "intervention"}
        response = client.get(f"/findings/{finding.pk}/export.json")
        assert response.status_code == 200
        data = _json(response)
        assert data["finding"]["id"] == finding.pk and data["finding"]["title"] == "Compared finding"
        assert len(data["runs"]) == 10 and data["runs"][0]["params"]["effect"] == -0.5  # defaults filled in
        assert sum(len(r["measurements"]) for r in data["runs"]) == n_measurements
        assert data["effects"]["lean"] in ("safety-leaning", "capability-leaning", "dual", "neither")


def test_run_export_csv_and_json(clients, measured):
    _, original, _ = measured
    run = original.runs.order_by("id").first()
    for client in clients.values():
        rows = _csv(client.get(f"/runs/{run.pk}/export.csv"))
        assert {r["run"] for r in rows} == {str(run.pk)} and len(rows) == 6
        data = _json(client.get(f"/runs/{run.pk}/export.json"))
        assert data["run"]["run"] == run.pk and data["run"]["environment"]["torch"] == "2.x"


def test_a_run_without_measurements_still_has_its_row(clients, measured):
    finding, *_ = measured
    queued = b.queued(finding.experiments.first(), 1)
    run = queued.runs.get()
    (row,) = _csv(clients["anonymous"].get(f"/runs/{run.pk}/export.csv"))
    assert row["state"] == "queued" and row["metric"] == "" and row["value"] == ""


def test_landscape_export_csv_and_json(clients, measured, secret, user):
    finding, *_ = measured
    hidden, _ = secret
    b.recompute(finding)
    for who, client in clients.items():
        rows = _csv(client.get("/landscape/export.csv"))
        ids = {int(r["finding"]) for r in rows}
        assert finding.pk in ids
        assert (hidden.pk in ids) == (who == "owner"), who
        mine = next(r for r in rows if int(r["finding"]) == finding.pk)
        assert float(mine["safety_score"]) > 0 and mine["lean"] == "safety-leaning"
        data = _json(client.get("/landscape/export.json"))
        assert {f["finding"] for f in data["findings"]} == ids
        assert data["aggregate"]["n_findings"] == len(ids) and "answer" in data["aggregate"]
        assert "findings" not in data["aggregate"]["differential_progress"]
    filtered = _csv(clients["owner"].get("/landscape/export.csv?kind=theory"))
    assert filtered == []


def test_csv_cells_that_look_like_formulas_are_defused(clients, user):
    b.finding(user, title="=HYPERLINK(\"http://evil.example\",\"x\")")
    rows = _csv(clients["anonymous"].get("/landscape/export.csv"))
    assert rows[0]["title"].startswith("'=HYPERLINK")


@pytest.mark.parametrize("who", ["anonymous", "stranger"])
def test_private_exports_and_comparison_are_404_for_others(clients, secret, who):
    finding, reproduction = secret
    run = reproduction.runs.first()
    client = clients[who]
    for url in (f"/findings/{finding.pk}/export.csv", f"/findings/{finding.pk}/export.json",
                f"/runs/{run.pk}/export.csv", f"/runs/{run.pk}/export.json", f"/findings/{finding.pk}/compare/"):
        response = client.get(url)
        assert response.status_code == 404, url
        assert b"Secret finding" not in response.content


def test_private_exports_are_served_to_the_owner(clients, secret):
    finding, reproduction = secret
    run = reproduction.runs.first()
    owner = clients["owner"]
    assert len(_csv(owner.get(f"/findings/{finding.pk}/export.csv"))) == 5 * 3 * 2
    assert _json(owner.get(f"/runs/{run.pk}/export.json"))["run"]["run"] == run.pk
    assert page(owner, f"/findings/{finding.pk}/compare/").count("data-item=") == 1


def test_unknown_format_is_404_and_writes_are_refused(clients, measured):
    finding, *_ = measured
    assert clients["owner"].get(f"/findings/{finding.pk}/export.xml").status_code == 404
    assert clients["owner"].post(f"/findings/{finding.pk}/export.csv").status_code == 405


# ---------------------------------------------------------------- queries: constant, read-only


def _queries(client: Client, url: str) -> list[str]:
    with CaptureQueriesContext(connection) as ctx:
        response = client.get(url)
    assert response.status_code == 200, url
    return [q["sql"] for q in ctx.captured_queries]


def test_exports_and_comparison_run_a_constant_number_of_queries_and_never_write(clients, measured, user):
    finding, original, _ = measured
    run = original.runs.first()
    urls = [f"/findings/{finding.pk}/export.csv", f"/findings/{finding.pk}/export.json",
            f"/runs/{run.pk}/export.csv", "/landscape/export.csv", "/landscape/export.json",
            f"/findings/{finding.pk}/compare/"]
    for who, client in clients.items():
        before = {url: _queries(client, url) for url in urls}
        for sql in [q for queries in before.values() for q in queries]:
            assert not sql.lstrip().upper().startswith(("INSERT", "UPDATE", "DELETE")), (who, sql)
        # more reproductions, runs and findings: the same number of queries
        experiment = finding.experiments.first()
        b.measured(experiment)
        b.measured(experiment, hardware="NVIDIA A100")
        for i in range(3):
            b.measured(b.echo_experiment(b.finding(user, title=f"More {who} {i}"), user))
        for url in urls:
            assert len(_queries(client, url)) == len(before[url]), (who, url)
    assert Run.objects.filter(reproduction__experiment__finding=finding).count() == 10 + 3 * 10

"""What the finding page and the landscape say about effects (v2 effects JSON): each claim in its
own unit, verdicts before data and below the minimum seeds, deterministic and censored effects,
effects per experiment with retractions, axis scores in log units, recompute notices, the new
statuses, differential progress. Anonymous readers and signed-in strangers see the same page."""

from __future__ import annotations

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from plugins.registry import register_temporarily
from registry.effects.models import FindingEffects
from registry.findings.models import Finding
from registry.findings.services import experiment_retract
from registry.reproductions.models import Experiment
from registry.reproductions.services import experiment_create
from tests.dashboard import builders as b
from tests.dashboard.test_views import page
from tests.fakes.plugins import TimedExperiment

pytestmark = pytest.mark.django_db

#: Identical per-seed log ratio (every intervention value is half its baseline): deterministic.
RISK_HALVED_EXACTLY = [(1.0, 0.5), (2.0, 1.0), (4.0, 2.0)]




def claim_row(html: str, claim_pk: int) -> str:
    return html.split(f'data-claim="{claim_pk}"')[1].split("</tr>")[0]


def experiment_block(html: str, experiment_pk: int) -> str:
    return html.split(f'id="effects-experiment-{experiment_pk}"')[1].split('<div class="effects-experiment')[0]


# ---------------------------------------------------------------- claims


def test_claims_in_their_unit_with_verdict_and_log_axis_scores(readers, user):
    finding = b.finding(user, title="Halves the risk")
    experiment = b.echo_experiment(finding, user, params={"effect": -0.5})
    risk = b.claim(finding, user, "risk", "decrease", min_relative_effect=0.3)
    skill = b.claim(finding, user, "skill", "non_inferior", margin=0.05)
    b.measured(experiment)
    for who, client in readers.items():
        html = page(client, f"/findings/{finding.pk}/")
        row = claim_row(html, risk.pk)
        assert "decreases by at least 30%" in row, who
        assert 'class="badge badge--verdict-confirmed">confirmed<' in row
        assert "-50%" in row and "relative change" in row  # geometric mean ratio 0.5
        assert "CI -5" in row and "to -4" in row  # its interval, from the log ratios
        assert f"experiment <a href=\"#effects-experiment-{experiment.pk}\">#{experiment.pk}</a>" in row
        assert "chart__reference" in row  # the claimed -30% drawn on the plot
        assert "badge--verdict-confirmed" in claim_row(html, skill.pk)
        # axis scores in log units with the factor, and the unit explained
        axes = html.split("<h3>Axis scores</h3>")[1].split("</dl>")[0]
        assert "+0.69</strong> log units" in axes and "×2.0 better" in axes
        assert "Scores are in log units" in html and "twice as good" in html
        assert "Hedges" not in html and "standardised" not in html


def test_claim_before_any_data_says_no_data_yet(readers, user):
    finding = b.finding(user)
    b.echo_experiment(finding, user)
    claim = b.claim(finding, user, "risk", "decrease", min_relative_effect=0.3)
    for client in readers.values():
        row = claim_row(page(client, f"/findings/{finding.pk}/"), claim.pk)
        assert "no data yet" in row and ">inconclusive<" not in row
        assert "badge--verdict-none" in row


def test_claim_below_the_minimum_seeds_says_so(client, user):
    finding = b.finding(user)
    experiment = b.echo_experiment(finding, user)
    claim = b.claim(finding, user, "risk", "decrease", min_relative_effect=0.3)
    b.measured(experiment, {"risk": b.RISK_DOWN[:2], "skill": b.SKILL_FLAT[:2]})
    row = claim_row(page(client, f"/findings/{finding.pk}/"), claim.pk)
    assert "not enough seeds (min 3)" in row and ">inconclusive<" not in row
    assert 'data-verdict="inconclusive"' in page(client, f"/findings/{finding.pk}/")


def test_deterministic_effect_is_flagged(client, user):
    finding = b.finding(user)
    experiment = b.echo_experiment(finding, user)
    claim = b.claim(finding, user, "risk", "decrease", min_relative_effect=0.3)
    b.measured(experiment, {"risk": RISK_HALVED_EXACTLY, "skill": [(1.0, 1.0)] * 3})
    html = page(client, f"/findings/{finding.pk}/")
    row = claim_row(html, claim.pk)
    assert "deterministic" in row and "the same effect on every seed" in row
    assert "-50%" in row
    assert "p = 0" not in row and "< 0.001" not in row  # no p-value from zero variance


@pytest.fixture
def timed():
    with register_temporarily(TimedExperiment):
        yield


def _timed_experiment(finding: Finding, user) -> Experiment:
    return experiment_create(finding=finding, user=user, plugin="timed", reproduce=False, default_seeds=3)


def test_absolute_claim_on_a_proportion_in_points_and_censored_time_to_event(timed, readers, user):
    finding = b.finding(user, title="Learns faster")
    experiment = _timed_experiment(finding, user)
    accuracy = b.claim(finding, user, "accuracy", "increase", min_relative_effect=0.1, threshold_unit="absolute")
    steps = b.claim(finding, user, "steps_to_goal", "decrease", min_relative_effect=0.3)
    never = b.Censored(100.0)
    b.measured(
        experiment,
        {
            "accuracy": [(0.50, 0.80), (0.52, 0.81), (0.49, 0.79)],
            "steps_to_goal": [(never, 40.0), (never, 42.0), (never, 38.0)],
            "loss": [(1.0, 0.9), (1.1, 1.0), (0.9, 0.8)],
            "count": [(0.0, 1.0), (0.0, 2.0), (0.0, 1.0)],
        },
    )
    for client in readers.values():
        html = page(client, f"/findings/{finding.pk}/")
        row = claim_row(html, accuracy.pk)
        assert "increases by at least 10 points" in row
        assert "+30 pt" in row and "points" in row and "badge--verdict-confirmed" in row
        row = claim_row(html, steps.pk)
        # baseline never reached the event: the recorded log ratio is an upper bound on the true one
        assert "reached 0/3 → 3/3" in row
        assert "at most -" in row and "sign test" in row
        assert "chart__whisker--open" in row
        block = experiment_block(html, experiment.pk)
        assert "proportion" in block and "time to event" in block
        assert "pt" in block.split('data-metric="accuracy"')[1].split("</tr>")[0]


# ---------------------------------------------------------------- experiments, retraction


def test_effects_per_experiment_and_a_retracted_experiment_with_its_reason(readers, user):
    finding = b.finding(user)
    real = b.echo_experiment(finding, user, params={"effect": -0.5})
    smoke = b.echo_experiment(finding, user, params={"effect": -0.1, "sleep_s": 0.0})
    b.measured(real)
    b.measured(smoke, {"risk": b.RISK_UP, "skill": b.SKILL_FLAT})
    experiment_retract(experiment=smoke, user=user, reason="a 20-step smoke test, <not> the real run")
    b.recompute(finding)
    for who, client in readers.items():
        html = page(client, f"/findings/{finding.pk}/")
        kept = experiment_block(html, real.pk)
        assert f"Experiment #{real.pk}: echo" in kept and 'effect=-0.5' in kept, who
        assert "badge--retracted" not in kept and 'data-metric="risk"' in kept
        gone = experiment_block(html, smoke.pk)
        assert "badge--retracted" in gone and "excluded from the effects" in gone
        assert "a 20-step smoke test, &lt;not&gt; the real run" in gone  # the reason, escaped
        assert "effects-experiment--retracted" in html.split(f'id="effects-experiment-{smoke.pk}"')[0][-200:]
        assert 'data-metric="risk"' not in gone  # its numbers are out of the effects


# ---------------------------------------------------------------- recompute notices, statuses


def test_pending_recompute_and_a_failed_one_are_visible(readers, user):
    finding = b.finding(user)
    b.measured(b.echo_experiment(finding, user))
    FindingEffects.objects.filter(finding=finding).update(pending=True, error="ValueError: <b>boom</b>")
    for client in readers.values():
        html = page(client, f"/findings/{finding.pk}/")
        assert "Effects are being recomputed" in html
        assert "The last recompute of these effects failed" in html
        assert "ValueError: &lt;b&gt;boom&lt;/b&gt;" in html and "<b>boom</b>" not in html
    FindingEffects.objects.filter(finding=finding).update(pending=False, error="")
    html = page(readers["anonymous"], f"/findings/{finding.pk}/")
    assert "being recomputed" not in html and "recompute of these effects failed" not in html


@pytest.mark.parametrize(
    ("status", "label"),
    [
        ("unreproduced", "unreproduced"),
        ("undecided", "undecided"),
        ("reproduced", "reproduced"),
        ("partially_reproduced", "partially reproduced"),
        ("failed_to_reproduce", "failed to reproduce"),
        ("contested", "contested"),
    ],
)
def test_status_badges(readers, user, status, label):
    finding = b.finding(user, title="Status shown")
    Finding.objects.filter(pk=finding.pk).update(status=status)
    for client in readers.values():
        badge = f'class="badge badge--status-{status.replace("_", "-")}"'
        detail = page(client, f"/findings/{finding.pk}/")
        assert badge in detail and f">{label}</span>" in detail
        listing = page(client, f"/?status={status}")
        assert "Status shown" in listing and badge in listing


def test_an_older_cache_entry_still_renders(client, user):
    finding = b.finding(user)
    experiment = b.echo_experiment(finding, user)
    claim = b.claim(finding, user, "risk", "decrease", min_relative_effect=0.3)
    old_effect = {"n": 5, "mean_difference": -0.5, "ci_low": -0.6, "ci_high": -0.4, "hedges_g": -9.1,
                  "interval": "bootstrap", "relative_change": -0.5, "relative_ci_low": -0.6,
                  "relative_ci_high": -0.4, "p_value": 0.001}
    FindingEffects.objects.update_or_create(
        finding=finding,
        defaults={"data": {
            "finding": finding.pk, "status": "reproduced", "n_runs": 5, "evidence_rungs": ["registry"],
            "metrics": [{"plugin": "echo", "metric": "risk", "metric_version": 1, "axis": "safety",
                         "higher_is_better": False, "effect": old_effect}],
            "claims": [{"claim": claim.pk, "plugin": "echo", "metric": "risk", "metric_version": 1,
                        "verdict": "confirmed", "effect": old_effect}],
            "axis_scores": {"safety": {"score": 8.2, "ci_low": 3.0, "ci_high": 12.0, "n_metrics": 1},
                            "capability": None},
            "lean": "safety-leaning",
        }},
    )
    html = page(client, f"/findings/{finding.pk}/")
    assert "badge--verdict-confirmed" in claim_row(html, claim.pk) and "-50%" in claim_row(html, claim.pk)
    assert "computed by an older version" in html
    assert f'id="effects-experiment-{experiment.pk}"' in html and 'id="effects-experiment-older"' in html
    page(client, "/landscape/")


# ---------------------------------------------------------------- landscape


def _finding_with_scores(user, i: int, safety_factor: float, capability_factor: float) -> Finding:
    """A measured echo finding whose risk falls by ``safety_factor`` and skill rises by
    ``capability_factor``, with a little seed noise."""
    finding = b.finding(user, title=f"Landscape finding {i}")
    wobble = [1.0, 1.03, 0.97, 1.01, 0.99]
    risk = [(1.0 + 0.1 * s, (1.0 + 0.1 * s) / safety_factor * wobble[s]) for s in range(5)]
    skill = [(1.0, capability_factor * wobble[(s + 2) % 5]) for s in range(5)]
    b.measured(b.echo_experiment(finding, user), {"risk": risk, "skill": skill})
    return finding


def test_landscape_with_few_findings_withholds_correlation_and_trend(readers, user):
    _finding_with_scores(user, 1, 2.0, 1.0)
    _finding_with_scores(user, 2, 1.0, 3.0)
    for client in readers.values():
        html = page(client, "/landscape/")
        assert "log units: +0.69 = ×2 better" in html  # the axes
        correlation = html.split('class="correlation"')[1].split("</p>")[0]
        assert "r = " not in correlation and "not shown:" in correlation and "n = 2" in correlation
        assert "No trend is shown" in html and "chart__trend" not in html
        assert "progress-table" not in html


def test_landscape_trend_residuals_and_answer_with_enough_findings(readers, user):
    findings = [
        _finding_with_scores(user, i, s, c)
        for i, (s, c) in enumerate([(2.0, 1.0), (1.2, 2.5), (4.0, 1.5), (1.0, 4.0), (8.0, 1.1), (1.5, 1.8)])
    ]
    for client in readers.values():
        html = page(client, "/landscape/")
        svg = html.split('class="chart chart--scatter"')[1].split("</svg>")[0]
        assert svg.count("data-finding=") == len(findings)
        assert "chart__trend" in svg
        correlation = html.split('class="correlation"')[1].split("</p>")[0]
        assert "r = " in correlation and f"n = {len(findings)}" in correlation
        assert "Trend over 6 findings" in html
        table = html.split('class="table progress-table"')[1].split("</table>")[0]
        for finding in findings:
            assert f'data-finding="{finding.pk}"' in table
        assert " to " in table  # residual intervals
        answer = html.split('class="answer__text"')[1].split("</p>")[0]
        assert "log units" in answer and "6 finding" in answer
        # scores in log units with their factor in the table of findings
        row = html.split('class="table landscape-table"')[1].split(f'data-finding="{findings[4].pk}"')[1]
        assert "+2.08" in row.split("</tr>")[0] and "×8.0 better" in row.split("</tr>")[0]


# ---------------------------------------------------------------- reads never write


@pytest.mark.parametrize("who", ["anonymous", "stranger"])
def test_dashboard_pages_never_write(readers, user, who):
    finding = b.finding(user)
    experiment = b.echo_experiment(finding, user)
    b.claim(finding, user, "risk", "decrease", min_relative_effect=0.3)
    b.measured(experiment)
    FindingEffects.objects.filter(finding=finding).update(pending=True)
    run = experiment.reproductions.get().runs.first()
    client = readers[who]
    for url in ["/", f"/findings/{finding.pk}/", f"/findings/{finding.pk}/runs/", "/landscape/", "/plugins/",
                f"/runs/{run.pk}/"]:
        with CaptureQueriesContext(connection) as queries:
            page(client, url)
        writes = [q["sql"] for q in queries.captured_queries
                  if q["sql"].lstrip().upper().startswith(("INSERT", "UPDATE", "DELETE"))]
        assert writes == [], (url, writes)

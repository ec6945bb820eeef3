"""Effects recomputation on constructed runs: verdicts, multiplicity, status, events, the
evidence ladder, metric versions, axis scores. Rows are written through the ORM (no worker)."""

from __future__ import annotations

import json

import pytest

from registry.effects import stats
from registry.effects.models import ClaimVerdict, FindingEffects
from registry.events.models import Event
from registry.reproductions.models import Reproduction, Run
from registry.reproductions.services import run_succeed, validate_results
from tests.effects.builders import (
    FLAT,
    RISK_DOWN,
    SKILL_UP,
    claim,
    claim_entry,
    experiment_for,
    metric_entries,
    recompute,
    recompute_as_the_worker,
    reproduction,
)
from tests.factories import FindingFactory

pytestmark = pytest.mark.django_db

SELF = Reproduction.Source.SELF_REPORTED


def _events(finding, type_: str) -> list[Event]:
    return list(Event.objects.filter(finding_id=finding.pk, type=type_).order_by("id"))


@pytest.fixture
def finding(user):
    return FindingFactory(created_by=user, kind="fix")


@pytest.mark.parametrize(
    ("pairs", "direction", "threshold", "expected"),
    [
        (RISK_DOWN, "decrease", 0.3, "confirmed"),  # about -50%, tight: beyond -30%
        (RISK_DOWN, "decrease", 0.9, "refuted"),  # nowhere near -90%
        (RISK_DOWN, "increase", 0.0, "refuted"),
        ([(1.0, 0.2), (1.0, 1.3), (1.0, 0.9)], "decrease", 0.3, "inconclusive"),  # too noisy
    ],
)
def test_verdict_on_constructed_data(finding, pairs, direction, threshold, expected):
    c = claim(finding, "risk", direction, min_relative_effect=threshold)
    reproduction(experiment_for(finding), {"risk": pairs})
    entry = claim_entry(recompute(finding), c)
    assert entry["verdict"] == expected
    assert entry["evidence"] == "registry"
    verdict = ClaimVerdict.objects.get(claim=c)
    assert verdict.verdict == expected
    assert verdict.evidence == "registry"
    assert verdict.run_ids == entry["run_ids"] == sorted(Run.objects.values_list("pk", flat=True))


@pytest.mark.parametrize("direction", ["increase", "decrease"])
def test_zero_effect_is_never_confirmed(finding, direction):
    c = claim(finding, "risk", direction, min_relative_effect=0.0)
    reproduction(experiment_for(finding), {"risk": [(1.0, 1.0), (1.2, 1.2), (0.8, 0.8)]})
    data = recompute(finding)
    assert claim_entry(data, c)["verdict"] == "inconclusive"
    assert finding.status == "undecided"  # runs exist, nothing decided


def test_bonferroni_intervals_and_holm_p_values_across_claims(finding):
    # t = 5.2 on 2 df: beyond the 95% critical value (4.30) but not the 97.5% one (6.21).
    skill = claim(finding, "skill", "increase", min_relative_effect=0.0)
    reproduction(
        experiment_for(finding),
        {"skill": [(10.0, 12.0), (10.0, 13.0), (10.0, 14.0)], "risk": [(1.0, 0.5), (1.0, 0.9), (1.0, 0.7)]},
    )
    alone = recompute(finding)
    assert alone["claims_confidence"] == pytest.approx(0.95)
    assert claim_entry(alone, skill)["verdict"] == "confirmed"

    risk = claim(finding, "risk", "decrease", min_relative_effect=0.0)
    both = recompute(finding)
    assert both["claims_confidence"] == pytest.approx(stats.corrected_confidence(0.95, 2)) == pytest.approx(0.975)
    skill_entry, risk_entry = claim_entry(both, skill), claim_entry(both, risk)
    assert skill_entry["verdict"] == "inconclusive"  # the Bonferroni interval now reaches below 0
    assert skill_entry["effect"]["confidence"] == pytest.approx(0.975)
    raw = [skill_entry["p_value"], risk_entry["p_value"]]
    assert [skill_entry["p_holm"], risk_entry["p_holm"]] == pytest.approx(stats.holm_bonferroni(raw))
    assert min(skill_entry["p_holm"], risk_entry["p_holm"]) == pytest.approx(2 * min(raw))


def test_claims_without_data_are_inconclusive_and_leave_the_finding_unreproduced(finding):
    c = claim(finding, "risk", "decrease", min_relative_effect=0.3)
    data = recompute(finding)
    assert claim_entry(data, c)["verdict"] == "inconclusive"
    assert claim_entry(data, c)["p_holm"] is None
    assert data["status"] == finding.status == "unreproduced"
    assert data["n_runs"] == 0 and data["metrics"] == [] and data["evidence_rungs"] == []
    assert not _events(finding, "finding.verdict_changed")


def test_status_transitions_and_their_events(finding):
    experiment = experiment_for(finding)
    claim(finding, "risk", "decrease", min_relative_effect=0.3)
    assert recompute(finding)["status"] == "unreproduced"

    reproduction(experiment, {"risk": RISK_DOWN, "skill": FLAT})
    assert recompute(finding)["status"] == "reproduced"
    assert finding.status == "reproduced"

    claim(finding, "skill", "increase", min_relative_effect=0.2)  # skill is flat: refuted
    data = recompute(finding)
    assert sorted(c["verdict"] for c in data["claims"]) == ["confirmed", "refuted"]
    assert data["status"] == finding.status == "contested"

    changes = [(e.payload["old"], e.payload["new"]) for e in _events(finding, "finding.status_changed")]
    assert changes == [("unreproduced", "reproduced"), ("reproduced", "contested")]


def test_all_refuted_is_failed_to_reproduce(finding):
    claim(finding, "risk", "decrease", min_relative_effect=0.9)
    claim(finding, "skill", "increase", min_relative_effect=0.2)
    reproduction(experiment_for(finding), {"risk": RISK_DOWN, "skill": FLAT})
    assert recompute(finding)["status"] == "failed_to_reproduce"


def test_disagreeing_reproductions_make_the_finding_contested(finding, other_user):
    c = claim(finding, "risk", "decrease", min_relative_effect=0.3)
    experiment = experiment_for(finding)
    strong = reproduction(experiment, {"risk": [(1.0, 0.50), (1.0, 0.52), (1.0, 0.48)]})
    weak = reproduction(experiment, {"risk": [(1.0, 0.90), (1.0, 0.91), (1.0, 0.89)]}, user=other_user)
    entry = claim_entry(recompute(finding), c)
    by_reproduction = {r["reproduction"]: r["verdict"] for r in entry["reproductions"]}
    assert by_reproduction == {strong.pk: "confirmed", weak.pk: "refuted"}
    assert entry["reproductions_disagree"] is True
    assert finding.status == "contested"
    # The same seeds reproduced twice are technical replicates: averaged, counted once.
    assert entry["effect"]["n"] == 3
    assert len(entry["run_ids"]) == 6


def test_verdict_changed_is_emitted_once_per_change(finding):
    c = claim(finding, "risk", "decrease", min_relative_effect=0.3)
    experiment = experiment_for(finding)
    reproduction(experiment, {"risk": RISK_DOWN})
    recompute(finding)
    recompute(finding)  # nothing new: no event
    events = _events(finding, "finding.verdict_changed")
    assert [(e.payload["old"], e.payload["new"]) for e in events] == [(None, "confirmed")]
    assert events[0].payload == {
        "finding": finding.pk,
        "claim": c.pk,
        "metric": "risk",
        "old": None,
        "new": "confirmed",
        "evidence": "registry",
        "experiment": experiment.pk,
    }
    assert events[0].plugin == "echo"

    # New seeds where the intervention raises risk: the pooled interval straddles the threshold.
    reproduction(
        experiment, {"risk": [(1.0, 1.4), (1.0, 1.6), (1.0, 1.5), (1.0, 1.45), (1.0, 1.55)]}, seeds=range(5, 10)
    )
    recompute(finding)
    recompute(finding)
    events = _events(finding, "finding.verdict_changed")
    changes = [(e.payload["old"], e.payload["new"]) for e in events]
    assert changes == [(None, "confirmed"), ("confirmed", "inconclusive")]
    assert ClaimVerdict.objects.get(claim=c).verdict == "inconclusive"


def test_metric_versions_are_never_pooled(finding):
    c = claim(finding, "risk", "decrease", min_relative_effect=0.3)
    experiment = experiment_for(finding)
    reproduction(experiment, {"risk": RISK_DOWN}, version=1)
    v2 = reproduction(experiment, {"risk": [(1.0, 1.0), (1.1, 1.12), (0.9, 0.88)]}, version=2, seeds=[10, 11, 12])
    data = recompute(finding)
    entries = {m["metric_version"]: m for m in metric_entries(data, "risk")}
    assert set(entries) == {1, 2}
    assert entries[1]["effect"]["n"] == 5
    assert entries[1]["effect"]["mean_difference"] == pytest.approx(-0.496)
    assert entries[2]["effect"]["n"] == 3
    assert entries[2]["effect"]["mean_difference"] == pytest.approx(0.0, abs=1e-12)
    entry = claim_entry(data, c)
    assert entry["metric_version"] == 2  # decided on the newest version alone
    assert entry["run_ids"] == sorted(v2.runs.values_list("pk", flat=True))
    assert entry["verdict"] == "refuted"
    assert any("versions [1]" in w for w in entry["warnings"])


def test_registry_evidence_outranks_self_reported(finding):
    c = claim(finding, "risk", "decrease", min_relative_effect=0.3)
    experiment = experiment_for(finding)
    reproduction(experiment, {"risk": RISK_DOWN}, source=SELF)
    only_self = claim_entry(recompute(finding), c)
    assert (only_self["verdict"], only_self["evidence"]) == ("confirmed", "self_reported")
    assert ClaimVerdict.objects.get(claim=c).evidence == "self_reported"

    registry = reproduction(experiment, {"risk": [(1.0, 0.95), (1.1, 1.06), (0.9, 0.84)]})
    data = recompute(finding)
    entry = claim_entry(data, c)
    assert (entry["verdict"], entry["evidence"]) == ("refuted", "registry")
    assert entry["by_source"]["self_reported"]["verdict"] == "confirmed"
    assert entry["by_source"]["registry"]["verdict"] == "refuted"
    assert entry["run_ids"] == sorted(registry.runs.values_list("pk", flat=True))
    assert ClaimVerdict.objects.get(claim=c).evidence == "registry"
    assert metric_entries(data, "risk")[0]["evidence"] == "registry"
    assert finding.status == "failed_to_reproduce"


def test_evidence_rungs(finding, other_user):
    experiment = experiment_for(finding)
    reproduction(experiment, {"risk": RISK_DOWN}, source=SELF)
    assert recompute(finding)["evidence_rungs"] == ["self_reported"]
    reproduction(experiment, {"risk": RISK_DOWN})  # requested by the author, on cpu
    assert recompute(finding)["evidence_rungs"] == ["self_reported", "registry"]
    reproduction(experiment, {"risk": RISK_DOWN}, user=other_user)
    assert recompute(finding)["evidence_rungs"] == ["self_reported", "registry", "registry_independent"]
    reproduction(experiment, {"risk": RISK_DOWN}, hardware="NVIDIA H100 80GB HBM3")
    assert recompute(finding)["evidence_rungs"] == [
        "self_reported",
        "registry",
        "registry_independent",
        "second_hardware",
    ]


def test_self_reported_hardware_does_not_count_as_a_second_machine(finding):
    experiment = experiment_for(finding)
    reproduction(experiment, {"risk": RISK_DOWN})
    reproduction(experiment, {"risk": RISK_DOWN}, source=SELF, hardware="NVIDIA A100")
    assert "second_hardware" not in recompute(finding)["evidence_rungs"]


def test_effects_per_hardware_and_reproduction_with_heterogeneity(finding):
    experiment = experiment_for(finding)
    reproduction(experiment, {"risk": RISK_DOWN})
    reproduction(experiment, {"risk": [(1.0, 0.9), (1.1, 1.0), (0.9, 0.82)]}, hardware="NVIDIA H100")
    (entry,) = metric_entries(recompute(finding), "risk")
    assert [h["hardware"] for h in entry["by_hardware"]] == ["NVIDIA H100", "cpu"]
    assert [h["n_runs"] for h in entry["by_hardware"]] == [3, 5]
    assert len(entry["by_reproduction"]) == 2
    het = entry["heterogeneity"]["hardware"]
    assert het["n_groups"] == 2 and het["df"] == 1
    assert het["p_value"] < 0.05  # -0.5 vs -0.09: clearly different effects
    assert entry["heterogeneity"]["reproduction"]["q"] == pytest.approx(het["q"])


def test_axis_scores_lean_and_diagnostics_excluded(finding):
    reproduction(
        experiment_for(finding),
        {"risk": RISK_DOWN, "skill": SKILL_UP, "width": [(3.0, 9.0), (3.1, 9.5), (2.9, 8.7), (3.0, 9.1), (3.0, 9.0)]},
    )
    data = recompute(finding)
    safety, capability = data["axis_scores"]["safety"], data["axis_scores"]["capability"]
    assert safety["n_metrics"] == 1 and capability["n_metrics"] == 1  # width (diagnostic) is on no axis
    assert safety["score"] > 0  # risk fell, and lower risk is better: positive means safer
    assert capability["score"] > 0
    assert safety["significant"] and capability["significant"]
    assert data["lean"] == "dual"


def test_capability_only_gain_is_capability_leaning(finding):
    reproduction(experiment_for(finding), {"risk": FLAT, "skill": SKILL_UP})
    data = recompute(finding)
    assert data["axis_scores"]["safety"]["significant"] is False
    assert data["lean"] == "capability-leaning"


def test_effects_are_cached_json_safe(finding):
    claim(finding, "risk", "decrease", min_relative_effect=0.3)
    reproduction(experiment_for(finding), {"risk": RISK_DOWN, "skill": SKILL_UP, "width": FLAT})
    data = recompute(finding)
    json.dumps(data, allow_nan=False)
    # stored as a summary (per-run and per-reproduction lists apart, in ``detail``) that merges back
    from registry.effects.services import effects_merge, effects_split

    stored = FindingEffects.objects.get(finding=finding)
    summary, detail = effects_split(json.loads(json.dumps(data)))
    def same(a: list, b: list) -> bool:  # [path, value] pairs, in any order (JSONB orders keys its own way)
        return sorted(json.dumps(x, sort_keys=True) for x in a) == sorted(json.dumps(x, sort_keys=True) for x in b)

    assert stored.data == summary and same(stored.detail, detail)
    merged_summary, merged_detail = effects_split(effects_merge(stored.data, stored.detail))
    assert merged_summary == summary and same(merged_detail, detail)
    assert effects_merge(stored.data, stored.detail)["claims"][0]["run_ids"] == data["claims"][0]["run_ids"]


def test_mde_warning_for_an_underpowered_claim(finding):
    c = claim(finding, "risk", "decrease", min_relative_effect=0.05)
    reproduction(experiment_for(finding), {"risk": [(1.0, 0.9), (1.0, 1.1), (1.0, 0.95)]})
    assert "underpowered" in claim_entry(recompute(finding), c)["mde_warning"]


def test_a_run_finishing_recomputes_the_effects(finding):
    c = claim(finding, "risk", "decrease", min_relative_effect=0.3)
    experiment = experiment_for(finding)
    repro = Reproduction.objects.create(experiment=experiment, requested_by=finding.created_by, seeds=[0, 1, 2])
    from plugins.registry import get_plugin

    plugin = get_plugin("echo")
    for seed, (base, after) in enumerate(RISK_DOWN[:3]):
        run = Run.objects.create(reproduction=repro, seed=seed, state=Run.State.RUNNING)
        rows = validate_results(
            plugin,
            {
                "baseline": {"risk": base, "skill": 1.0, "width": 3.0},
                "intervention": {"risk": after, "skill": 1.0, "width": 3.0},
            },
        )
        assert run_succeed(
            run_id=run.pk,
            token=None,
            rows=rows,
            artifacts={},
            environment={},
            hardware="cpu",
            plugin_version="1.0.0",
            logs="",
        )
    # the runs only requested the recompute (pending); the worker's task computes it
    assert FindingEffects.objects.get(finding=finding).pending is True
    assert not ClaimVerdict.objects.filter(claim=c).exists()
    recompute_as_the_worker(finding.pk)
    finding.refresh_from_db()
    assert FindingEffects.objects.get(finding=finding).pending is False
    assert ClaimVerdict.objects.get(claim=c).verdict == "confirmed"
    assert finding.status == "reproduced"
    assert FindingEffects.objects.get(finding=finding).data["n_runs"] == 3

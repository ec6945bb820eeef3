"""The findings services and selectors, called directly (no HTTP)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.contrib.auth.models import AnonymousUser
from django.db import transaction
from django.utils import timezone

from registry.errors import ApplicationError, PermissionDenied
from registry.events.models import Event
from registry.findings import services
from registry.findings.markdown import render_markdown
from registry.findings.models import Claim, Finding, Tag
from registry.findings.selectors import finding_lineage, finding_list
from registry.reproductions.services import experiment_create
from tests.factories import UserFactory

pytestmark = pytest.mark.django_db


def create(user, **fields) -> Finding:
    fields.setdefault("title", "A finding")
    fields.setdefault("kind", Finding.Kind.THEORY)
    return services.finding_create(user=user, **fields)


def types(finding: Finding) -> list[str]:
    return list(Event.objects.filter(finding_id=finding.pk).order_by("id").values_list("type", flat=True))


# ---------------------------------------------------------------- create / update / delete


def test_finding_create(user, other_user):
    parent = create(user, title="Parent")
    finding = create(user, title="Child", tags=[" Vision ", "vision", "SAE"], builds_on=[parent], authors=[other_user],
                     references=["arXiv:2209.10652"])
    assert set(finding.authors.all()) == {user}  # a co-author named by the creator is only invited
    assert set(finding.invited_authors.all()) == {other_user}
    assert sorted(finding.tags.values_list("name", flat=True)) == ["sae", "vision"]
    assert Tag.objects.filter(name="vision").count() == 1
    assert list(finding.builds_on.all()) == [parent]
    assert finding.references == ["arXiv:2209.10652"]
    assert finding.created_by == user and finding.status == "unreproduced"
    event = Event.objects.get(finding_id=finding.pk)
    assert event.type == "finding.created"
    assert event.payload == {"finding": finding.pk, "title": "Child", "tags": ["sae", "vision"]}


def test_finding_create_is_atomic(user, monkeypatch):
    def broken(**kwargs):
        raise RuntimeError("event log unavailable")

    monkeypatch.setattr(services, "event_emit", broken)
    with pytest.raises(RuntimeError):
        create(user, title="Never stored", tags=["orphan"])
    assert not Finding.objects.filter(title="Never stored").exists()
    assert not Tag.objects.filter(name="orphan").exists()


@pytest.mark.django_db(transaction=True)
def test_events_are_only_written_inside_a_transaction(user):
    from registry.events.services import event_emit

    assert not transaction.get_connection().in_atomic_block  # autocommit: no test transaction here
    with pytest.raises(RuntimeError, match="transaction"):
        event_emit(type="test.outside", payload={})
    assert not Event.objects.filter(type="test.outside").exists()
    with transaction.atomic():
        event = event_emit(type="test.inside", payload={"n": 1})
    stored = Event.objects.get(type="test.inside")
    assert (stored.pk, stored.payload, stored.finding_id) == (event.pk, {"n": 1}, None)
    with pytest.raises(RuntimeError, match="the change failed"), transaction.atomic():
        event_emit(type="test.rolled_back", payload={})
        raise RuntimeError("the change failed")  # the change it describes fails: the event goes with it
    assert not Event.objects.filter(type="test.rolled_back").exists()


def test_finding_update(user):
    finding = create(user, tags=["old"])
    updated = services.finding_update(finding=finding, user=user, data={"title": "New", "tags": ["New"],
                                                                         "kind": "fix"})
    assert updated.title == "New" and updated.kind == "fix"
    assert list(updated.tags.values_list("name", flat=True)) == ["new"]
    event = Event.objects.filter(finding_id=finding.pk).latest("id")
    assert event.type == "finding.updated"
    assert sorted(event.payload["changed"]) == ["kind", "tags", "title"]


def test_finding_update_refused_for_others(user, other_user):
    finding = create(user, title="Mine")
    with pytest.raises(PermissionDenied):
        services.finding_update(finding=finding, user=other_user, data={"title": "Theirs"})
    with pytest.raises(PermissionDenied):
        services.finding_update(finding=finding, user=AnonymousUser(), data={"title": "Theirs"})
    with pytest.raises(PermissionDenied):
        services.finding_delete(finding=finding, user=other_user)
    finding.refresh_from_db()
    assert finding.title == "Mine"
    assert types(finding) == ["finding.created"]


def test_can_edit(user, other_user, staff_user):
    finding = create(user, authors=[other_user])
    assert services.finding_can_edit(finding=finding, user=user)
    assert not services.finding_can_edit(finding=finding, user=other_user)  # invited, not yet an author
    services.author_invitation_accept(finding=finding, user=other_user, username=other_user.username)
    assert services.finding_can_edit(finding=finding, user=other_user)
    assert services.finding_can_edit(finding=finding, user=staff_user)
    assert not services.finding_can_edit(finding=finding, user=UserFactory())
    assert not services.finding_can_edit(finding=finding, user=AnonymousUser())


def test_finding_delete(user, staff_user):
    finding = create(user)
    pk = finding.pk
    services.finding_delete(finding=finding, user=staff_user)
    assert not Finding.objects.filter(pk=pk).exists()
    assert Event.objects.filter(finding_id=pk).latest("id").type == "finding.deleted"


# ---------------------------------------------------------------- lineage


def test_cycles_are_refused_and_nothing_changes(user):
    a = create(user, title="A")
    b = create(user, title="B", builds_on=[a])
    c = create(user, title="C", builds_on=[b])
    for parents in ([c], [a], [b, c]):
        with pytest.raises(ApplicationError) as error:
            services.finding_update(finding=a, user=user, data={"title": "A2", "builds_on": parents})
        assert error.value.field == "builds_on" and error.value.status == 400
    a.refresh_from_db()
    assert a.title == "A" and not a.builds_on.exists()
    assert types(a) == ["finding.created"]


def test_lineage_selector(user, other_user):
    a = create(user, title="A")
    b = create(user, title="B", builds_on=[a])
    hidden = create(other_user, title="Hidden", visibility="restricted", builds_on=[b])
    d = create(user, title="D", builds_on=[hidden])
    # the walk never passes through a finding the reader may not see: that would reveal its links
    assert finding_lineage(finding=a, user=AnonymousUser()) == {"ancestors": [], "descendants": [b.pk]}
    assert finding_lineage(finding=a, user=other_user) == {"ancestors": [], "descendants": [b.pk, hidden.pk, d.pk]}
    assert finding_lineage(finding=d, user=AnonymousUser()) == {"ancestors": [], "descendants": []}
    assert finding_lineage(finding=d, user=other_user) == {"ancestors": [a.pk, b.pk, hidden.pk], "descendants": []}


# ---------------------------------------------------------------- visibility


def test_visibility(user, other_user, staff_user):
    reader = UserFactory()
    public = create(user, title="Public")
    secret = create(user, title="Secret", visibility="restricted", restricted_to=[reader])
    embargoed = create(user, title="Embargoed", visibility="restricted",
                       embargo_until=timezone.now() + timedelta(days=1))
    released = create(user, title="Released", visibility="restricted",
                      embargo_until=timezone.now() - timedelta(minutes=1))

    def visible(who) -> set[str]:
        listed = set(finding_list(user=who).values_list("title", flat=True))
        each = {f.title for f in Finding.objects.all() if services.finding_is_visible(finding=f, user=who)}
        assert listed == each  # the selector and the per-object check agree
        return listed

    assert visible(AnonymousUser()) == {"Public", "Released"}
    assert visible(other_user) == {"Public", "Released"}
    assert visible(reader) == {"Public", "Released", "Secret"}
    assert visible(user) == {"Public", "Released", "Secret", "Embargoed"}
    assert visible(staff_user) == {"Public", "Released", "Secret", "Embargoed"}
    # the per-object check on its own, case by case
    assert services.finding_is_visible(finding=public, user=AnonymousUser())
    assert services.finding_is_visible(finding=released, user=AnonymousUser())  # embargo over: public
    assert not services.finding_is_visible(finding=embargoed, user=AnonymousUser())
    assert not services.finding_is_visible(finding=embargoed, user=reader)  # restricted_to names only Secret
    assert not services.finding_is_visible(finding=secret, user=other_user)
    assert services.finding_is_visible(finding=secret, user=reader)
    assert services.finding_is_visible(finding=embargoed, user=staff_user)


def test_finding_list_has_no_duplicates(user, other_user):
    reader = UserFactory()
    create(user, title="Shared", visibility="restricted", authors=[other_user, reader], restricted_to=[reader])
    assert list(finding_list(user=reader).values_list("title", flat=True)) == ["Shared"]


# ---------------------------------------------------------------- claims


def test_claim_create_and_validation(user):
    finding = create(user)
    claim = services.claim_create(finding=finding, user=user, metric="risk", direction="decrease",
                                  min_relative_effect=0.9)
    assert (claim.version, claim.is_current, claim.min_relative_effect, claim.margin) == (1, True, 0.9, None)
    assert Event.objects.filter(finding_id=finding.pk, type="claim.created").count() == 1
    cases = [
        (dict(metric="skill", direction="non_inferior"), "margin"),
        (dict(metric="skill", direction="non_inferior", margin=-0.01), "margin"),
        (dict(metric="skill", direction="increase", margin=0.05), "margin"),
        (dict(metric="skill", direction="increase", min_relative_effect=-0.5), "min_relative_effect"),
        (dict(metric="undeclared", direction="increase"), "metric"),
    ]
    for kwargs, field in cases:
        with pytest.raises(ApplicationError) as error:
            services.claim_create(finding=finding, user=user, **kwargs)
        assert error.value.field == field, kwargs
    assert Claim.objects.count() == 1


def test_claim_create_refused_for_others(user, other_user):
    finding = create(user)
    with pytest.raises(PermissionDenied):
        services.claim_create(finding=finding, user=other_user, metric="risk", direction="decrease")
    assert not Claim.objects.exists()


def test_claim_update_before_and_after_evidence(user):
    finding = create(user)
    claim = services.claim_create(finding=finding, user=user, metric="risk", direction="decrease",
                                  min_relative_effect=0.5)
    services.claim_update(claim=claim, user=user, data={"min_relative_effect": 0.7})
    assert Claim.objects.get(pk=claim.pk).min_relative_effect == 0.7
    assert Event.objects.filter(finding_id=finding.pk).latest("id").type == "claim.updated"
    experiment_create(finding=finding, user=user, plugin="echo", default_seeds=1)
    with pytest.raises(ApplicationError) as error:
        services.claim_update(claim=claim, user=user, data={"min_relative_effect": 0.1})
    assert error.value.status == 409
    assert Claim.objects.get(pk=claim.pk).min_relative_effect == 0.7


def test_claim_update_on_a_superseded_version_is_refused(user):
    finding = create(user)
    old = services.claim_create(finding=finding, user=user, metric="risk", direction="decrease")
    new = services.claim_create(finding=finding, user=user, metric="risk", direction="decrease",
                                min_relative_effect=0.2, supersedes=old)
    with pytest.raises(ApplicationError) as error:
        services.claim_update(claim=Claim.objects.get(pk=old.pk), user=user, data={"statement": "rewritten"})
    assert error.value.status in (400, 409)
    assert Claim.objects.get(pk=old.pk).statement == ""
    assert new.version == 2


def test_supersede_chain(user):
    finding = create(user)
    v1 = services.claim_create(finding=finding, user=user, metric="risk", direction="decrease")
    v2 = services.claim_create(finding=finding, user=user, metric="risk", direction="decrease", supersedes=v1)
    v3 = services.claim_create(finding=finding, user=user, metric="skill", direction="increase", supersedes=v2)
    assert [(c.version, c.is_current) for c in Claim.objects.order_by("id")] == [(1, False), (2, False), (3, True)]
    assert v3.supersedes == v2 and Claim.objects.get(pk=v1.pk).superseded_by == v2
    with pytest.raises(ApplicationError):
        services.claim_create(finding=finding, user=user, metric="risk", direction="decrease", supersedes=v1)
    assert Claim.objects.count() == 3


def test_claim_problem_for_metric_judges_one_declaration(user):
    from interp_registry.sdk import Axis, Scale
    from interp_registry.sdk import Metric as PluginMetric

    finding = create(user)
    ratio = PluginMetric("risk", Axis.SAFETY, higher_is_better=False, scale=Scale.RATIO)
    difference = PluginMetric("risk", Axis.SAFETY, higher_is_better=False, scale=Scale.DIFFERENCE)
    relative = services.claim_create(finding=finding, user=user, metric="risk", direction="decrease",
                                     min_relative_effect=0.5)
    absolute = services.claim_create(finding=finding, user=user, metric="risk", direction="decrease",
                                     min_relative_effect=2, threshold_unit="absolute")
    assert services.claim_problem_for_metric(claim=relative, declaration=ratio) is None
    assert "absolute" in services.claim_problem_for_metric(claim=relative, declaration=difference)
    assert services.claim_problem_for_metric(claim=absolute, declaration=difference) is None
    assert "relative" in services.claim_problem_for_metric(claim=absolute, declaration=ratio)
    vacuous = Claim.objects.create(finding=finding, metric="risk", direction="non_inferior", margin=1e308,
                                   created_by=user)
    assert "below 1" in services.claim_problem_for_metric(claim=vacuous, declaration=ratio)


def test_experiment_create_refuses_a_plugin_that_cannot_decide_a_current_claim(user):
    finding = create(user)
    claim = services.claim_create(finding=finding, user=user, metric="risk", direction="decrease",
                                  min_relative_effect=0.5)  # allowed: "echo" declares risk on the ratio scale
    with pytest.raises(ApplicationError) as refused:
        experiment_create(finding=finding, user=user, plugin="crashing", reproduce=False)  # difference scale
    assert refused.value.field == "plugin" and refused.value.status == 400
    assert f"claim {claim.pk}" in refused.value.message and "'risk'" in refused.value.message
    assert not finding.experiments.exists()
    # a superseded version is history, not a current claim: it no longer blocks
    services.claim_create(finding=finding, user=user, metric="risk", direction="decrease", min_relative_effect=2,
                          threshold_unit="absolute", supersedes=claim)
    assert experiment_create(finding=finding, user=user, plugin="crashing", reproduce=False).plugin == "crashing"


# ---------------------------------------------------------------- markdown


@pytest.mark.parametrize(
    "source",
    [
        "<script>alert(1)</script>",
        '<img src=x onerror="alert(1)">',
        "[x](javascript:alert(1))",
        "[x](JAVASCRIPT:alert(1))",
        '<a href="&#106;avascript:alert(1)">x</a>',
        '<a href="vbscript:msgbox(1)">x</a>',
        '<svg onload="alert(1)"></svg>',
        '<div style="background:url(javascript:alert(1))">x</div>',
        "<iframe src=//evil></iframe>",
        '<form action="https://evil"><input></form>',
        "![img](javascript:alert(1))",
    ],
)
def test_markdown_is_sanitised(source):
    html = render_markdown(source).lower()
    for bad in ("<script", "onerror", "onload", "javascript:", "vbscript:", "<iframe", "<svg", "<form", "style="):
        assert bad not in html, (source, html)


def test_markdown_renders_the_usual_things():
    html = render_markdown("# T\n\n*a* **b** `c`\n\n| x | y |\n|---|---|\n| 1 | 2 |\n\n```\ncode\n```\n\n[l](https://e.org)")
    for expected in ("<h1>T</h1>", "<em>a</em>", "<strong>b</strong>", "<code>c</code>", "<table>", "<pre>",
                     'href="https://e.org"', "noopener"):
        assert expected in html, html
    assert render_markdown("") == "" and render_markdown(None) == ""


def test_rollup_never_walks_through_a_hidden_finding(user, other_user):
    from registry.effects.selectors import rollup_get

    a = create(user, title="A", kind="theory")
    b = create(user, title="B", builds_on=[a])
    hidden = create(other_user, title="Hidden", visibility="restricted", builds_on=[b])
    d = create(user, title="D", builds_on=[hidden])

    def descendants(viewer):
        return sorted(row["finding"] for row in rollup_get(a, user=viewer)["descendants"])

    assert descendants(None) == [b.pk]
    assert descendants(other_user) == [b.pk, hidden.pk, d.pk]

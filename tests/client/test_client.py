"""interp_registry.client against a live registry (uvicorn on the test database): typed results,
pagination, errors carrying the server's field messages, Idempotency-Key on creates, anonymous
reads and refused anonymous writes."""

from __future__ import annotations

import pytest
from interp_registry.client import (
    BadRequest,
    Claim,
    Finding,
    Forbidden,
    NotFound,
    Plugin,
    Registry,
    RegistryError,
    Unauthorized,
)

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]


def _finding(reg: Registry, title: str = "Echo halves risk", **fields) -> Finding:
    return reg.create_finding(title=title, kind="fix", summary="A stand-in.", tags=["client-test"], **fields)


def test_typed_crud_and_pagination(server, token):
    with Registry(server, token=token) as reg:
        created = [_finding(reg, title=f"finding {n}") for n in range(3)]
        assert all(isinstance(f, Finding) and f.id for f in created)
        assert created[0].tags == ["client-test"] and created[0].status == "unreproduced"
        # three items across two pages of two: `next` is followed
        items = list(reg.paginate("findings/", {"page_size": 2, "tag": "client-test"}))
        assert sorted(item["id"] for item in items) == sorted(f.id for f in created)
        assert {f.id for f in reg.findings(tag="client-test")} == {f.id for f in created}

        claim = reg.create_claim(created[0], metric="risk", direction="decrease", min_relative_effect=0.3)
        assert isinstance(claim, Claim) and claim.finding == created[0].id and claim.is_current
        updated = reg.update_claim(claim, statement="risk halves")
        assert updated.statement == "risk halves" and updated.id == claim.id
        assert [c.metric for c in reg.claims(created[0].id)] == ["risk"]

        experiment = reg.create_experiment(created[0], plugin="echo", params={"effect": -0.5}, reproduce=False)
        assert experiment.params["effect"] == -0.5 and experiment.params["baseline"] == 1.0  # defaults filled in
        assert experiment.reproductions == []
        assert [e.id for e in reg.experiments(created[0])] == [experiment.id]

        renamed = reg.update_finding(created[1], title="renamed")
        assert renamed.title == "renamed" and reg.finding(created[1].id).title == "renamed"
        reg.delete_finding(created[2])
        with pytest.raises(NotFound) as missing:
            reg.finding(created[2].id)
        assert missing.value.status == 404

        plugins = {p.name: p for p in reg.plugins()}
        assert isinstance(plugins["echo"], Plugin) and plugins["echo"].available
        assert {m["name"] for m in plugins["echo"].metrics} == {"risk", "skill", "width"}
        assert reg.plugin("echo").params_schema["properties"]["effect"]["type"] == "number"
        landscape = reg.landscape(tag="client-test")
        assert {p["finding"] for p in reg.landscape_points(landscape)} == {created[0].id, created[1].id}
        frame = reg.landscape(tag="client-test", as_frame=True)
        assert sorted(frame["finding"]) == sorted([created[0].id, created[1].id])


def test_a_400_carries_the_servers_field_messages(server, token):
    with Registry(server, token=token) as reg:
        finding = _finding(reg)
        with pytest.raises(BadRequest) as bad:
            reg.create_experiment(finding, plugin="echo", params={"noise": "lots"}, reproduce=False)
        assert bad.value.status == 400
        assert "params.noise" in bad.value.errors
        assert "params.noise" in str(bad.value)
        with pytest.raises(BadRequest) as bad:
            reg.create_claim(finding, metric="risk", direction="sideways")
        assert list(bad.value.errors) == ["direction"]
        assert "sideways" in bad.value.errors["direction"][0]
        with pytest.raises(BadRequest) as bad:
            reg.create_finding(title="", kind="fix")
        assert "title" in bad.value.errors
        assert isinstance(bad.value, RegistryError) and bad.value.detail.startswith("invalid input")


def test_anonymous_reads_work_and_writes_raise_401(server, token):
    with Registry(server, token=token) as reg:
        finding = _finding(reg)
    with Registry(server) as anonymous:
        assert anonymous.finding(finding.id).title == "Echo halves risk"
        assert finding.id in {f.id for f in anonymous.findings()}
        assert anonymous.effects(finding.id).finding == finding.id
        with pytest.raises(Unauthorized) as refused:
            anonymous.create_finding(title="nope", kind="fix")
        assert refused.value.status == 401
        with pytest.raises(Unauthorized):
            anonymous.update_finding(finding, title="nope")
        assert anonymous.finding(finding.id).title == "Echo halves risk"
    with Registry(server, token="ifr_not-a-real-token") as wrong, pytest.raises(Unauthorized):
        wrong.findings()


def test_a_signed_in_stranger_cannot_change_a_finding(server, token, stranger_token):
    with Registry(server, token=token) as owner:
        finding = _finding(owner)
    with Registry(server, token=stranger_token) as stranger:
        with pytest.raises(Forbidden) as refused:
            stranger.update_finding(finding, title="mine now")
        assert refused.value.status == 403
        with pytest.raises(Forbidden):
            stranger.create_claim(finding, metric="risk", direction="decrease", min_relative_effect=0.1)
    with Registry(server, token=token) as owner:
        assert owner.finding(finding.id).title == "Echo halves risk"
        assert owner.claims(finding.id) == []


def test_every_create_sends_an_idempotency_key(server, token, user):
    from registry.findings.models import Finding as FindingRow
    from registry.idempotency.models import IdempotencyRecord

    with Registry(server, token=token) as reg:
        first = _finding(reg, idempotency_key="client-test-key-1")
        again = _finding(reg, idempotency_key="client-test-key-1")  # a retry: replayed, nothing created
        assert again.id == first.id
        assert FindingRow.objects.filter(title="Echo halves risk").count() == 1
        reg.create_claim(first, metric="risk", direction="decrease", min_relative_effect=0.3)
        reg.create_experiment(first, plugin="echo", reproduce=False)
        other = _finding(reg)  # no key given: a fresh one each time
        assert other.id != first.id
    keys = list(IdempotencyRecord.objects.filter(user=user).values_list("key", flat=True))
    assert "client-test-key-1" in keys
    assert len(keys) == 4  # the finding (once), the claim, the experiment, the other finding


def test_the_live_stream_is_read_as_events(server, token):
    with Registry(server, token=token) as reg:
        finding = _finding(reg)
        events = list(reg.stream(after=0, timeout=5))  # closed by the server after 5 s
    assert events[0] == {"type": "open"}
    created = [e for e in events if e.get("type") == "finding.created"]
    assert [e["finding"] for e in created] == [finding.id]
    assert isinstance(created[0]["id"], int)

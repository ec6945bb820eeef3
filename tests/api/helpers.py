"""Assertions shared by the API tests."""

from __future__ import annotations

from typing import Any

from registry.events.models import Event
from registry.findings.models import Claim, Finding, Tag
from registry.reproductions.models import Experiment, Reproduction, Run

FINDINGS = "/api/v1/findings/"
COUNTED = (Finding, Tag, Claim, Experiment, Reproduction, Run, Event)


def counts() -> dict[str, int]:
    """Row counts of everything a write could leave behind."""
    return {model.__name__: model.objects.count() for model in COUNTED}


def assert_error(response: Any, status: int, field: str | None = None) -> dict:
    """A 4xx in the API's one error shape: {"detail": str, "errors": {field: [str, ...]}}.

    ``field`` must be named in ``errors``, exactly or as the prefix of a nested field
    ("seeds" matches "seeds.0", "params" matches "params.baseline").
    """
    assert response.status_code == status, (response.status_code, response.content[:1000])
    assert response["Content-Type"].startswith("application/json"), response["Content-Type"]
    body = response.json()
    assert isinstance(body.get("detail"), str) and body["detail"], body
    assert isinstance(body.get("errors"), dict), body
    for key, messages in body["errors"].items():
        assert isinstance(key, str)
        assert isinstance(messages, list) and messages, body
        assert all(isinstance(message, str) and message for message in messages), body
    if field is not None:
        assert any(key == field or key.startswith(f"{field}.") for key in body["errors"]), body
    return body


def event_types(finding_id: int | None = None) -> list[str]:
    events = Event.objects.all() if finding_id is None else Event.objects.filter(finding_id=finding_id)
    return list(events.order_by("id").values_list("type", flat=True))

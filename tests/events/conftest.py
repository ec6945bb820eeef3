"""The sandbox has no DNS: the example hosts the subscription tests use resolve to a public address
here (webhook URLs whose host does not resolve are refused at creation)."""

from __future__ import annotations

import pytest

from registry.events import webhooks

FAKE_DNS = {"e.org": "93.184.215.14", "example.org": "93.184.215.14"}


@pytest.fixture(autouse=True)
def _example_hosts_resolve(monkeypatch) -> None:
    real = webhooks._resolve

    def resolve(hostname: str, port: int) -> list[str]:
        if hostname in FAKE_DNS:
            return [FAKE_DNS[hostname]]
        return real(hostname, port)

    monkeypatch.setattr(webhooks, "_resolve", resolve)

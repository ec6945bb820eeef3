"""Fixtures for the API tests: findings and experiments built through the services."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from registry.findings.models import Finding
from registry.findings.services import finding_create
from registry.reproductions.models import Experiment
from registry.reproductions.services import experiment_create


@pytest.fixture
def make_finding(user) -> Callable[..., Finding]:
    def make(owner=None, **fields) -> Finding:
        fields.setdefault("title", "A finding")
        fields.setdefault("kind", Finding.Kind.THEORY)
        return finding_create(user=owner or user, **fields)

    return make


@pytest.fixture
def finding(make_finding) -> Finding:
    return make_finding(title="Checkerboard artifacts come from deconvolution overlap", kind=Finding.Kind.THEORY)


@pytest.fixture
def make_experiment(user) -> Callable[..., Experiment]:
    def make(finding: Finding, owner=None, **fields) -> Experiment:
        fields.setdefault("plugin", "echo")
        fields.setdefault("default_seeds", 2)
        return experiment_create(finding=finding, user=owner or user, **fields)

    return make


@pytest.fixture
def experiment(finding, make_experiment) -> Experiment:
    return make_experiment(finding)

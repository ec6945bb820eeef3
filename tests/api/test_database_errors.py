"""Which database errors are a 503 (registry.api.middleware): an outage ("the database is
unavailable", Retry-After 5) and a conflicting write (deadlock, serialization failure: "retry",
Retry-After 1, logged at ERROR); anything else (a lock or statement timeout, a missing table) is a
500, not disguised as an outage. The errors are raised as Django raises them: a
``django.db.OperationalError`` whose ``__cause__`` is the driver's error."""

from __future__ import annotations

import logging
import sqlite3
from unittest import mock

import psycopg
import psycopg.errors
import pytest
from django.db import InterfaceError, OperationalError
from django.test import Client

from registry.api.middleware import DB_CONFLICT_DETAIL, DB_UNAVAILABLE_DETAIL, database_error_kind
from tests.api.helpers import FINDINGS

pytestmark = pytest.mark.django_db


def wrapped(cause: BaseException) -> OperationalError:
    """``django.db.utils.DatabaseErrorWrapper``'s way: the Django error raised from the driver's."""
    try:
        raise OperationalError(*cause.args) from cause
    except OperationalError as exc:
        return exc


CONFLICTS = [psycopg.errors.DeadlockDetected("deadlock detected"),
             psycopg.errors.SerializationFailure("could not serialize access")]
OUTAGES = [psycopg.OperationalError("connection refused"), psycopg.errors.ConnectionFailure("gone"),
           psycopg.errors.AdminShutdown("terminating connection due to administrator command")]
OTHERS = [psycopg.errors.LockNotAvailable("lock timeout"),
          psycopg.errors.QueryCanceled("canceling statement due to statement timeout"),
          sqlite3.OperationalError("no such table: findings_finding")]


def _ids(errors: list[BaseException]) -> list[str]:
    return [type(error).__name__ for error in errors]


def test_the_kinds():
    assert [database_error_kind(wrapped(error)) for error in CONFLICTS] == ["conflict", "conflict"]
    assert [database_error_kind(wrapped(error)) for error in OUTAGES] == ["unavailable"] * 3
    assert [database_error_kind(wrapped(error)) for error in OTHERS] == [None] * 3
    assert database_error_kind(OperationalError("no driver error")) == "unavailable"
    assert database_error_kind(InterfaceError("connection already closed")) == "unavailable"
    assert database_error_kind(wrapped(sqlite3.OperationalError("database is locked"))) == "conflict"
    assert database_error_kind(ValueError("x")) is None


def _post_finding(api, error: BaseException):
    api.raise_request_exception = False
    with mock.patch("registry.api.views.finding_services.finding_create", side_effect=wrapped(error)):
        return api.post(FINDINGS, {"title": "t", "kind": "fix"}, format="json")


@pytest.mark.parametrize("error", CONFLICTS, ids=_ids(CONFLICTS))
def test_a_deadlock_or_serialization_failure_is_a_503_retry_logged_as_an_error(api, error, caplog):
    with caplog.at_level(logging.ERROR, logger="registry.api.middleware"):
        response = _post_finding(api, error)
    assert response.status_code == 503, response.content
    assert response.json() == {"detail": DB_CONFLICT_DETAIL, "errors": {}}
    assert response["Retry-After"] == "1"
    assert any(record.levelno == logging.ERROR and record.exc_info for record in caplog.records)


@pytest.mark.parametrize("error", OUTAGES, ids=_ids(OUTAGES))
def test_a_connection_failure_is_the_database_unavailable_503(api, error):
    response = _post_finding(api, error)
    assert response.status_code == 503, response.content
    assert response.json() == {"detail": DB_UNAVAILABLE_DETAIL, "errors": {}}
    assert response["Retry-After"] == "5"


@pytest.mark.parametrize("error", OTHERS, ids=_ids(OTHERS))
def test_a_timeout_or_missing_table_is_a_500_not_an_outage(api, error):
    response = _post_finding(api, error)
    assert response.status_code == 500
    assert DB_UNAVAILABLE_DETAIL.encode() not in response.content


def test_a_dashboard_page_maps_the_same_way(user):
    client = Client(raise_request_exception=False)
    client.force_login(user)
    target = "registry.dashboard.views.selectors.finding_search"
    with mock.patch(target, side_effect=wrapped(CONFLICTS[0])):
        response = client.get("/")
    assert response.status_code == 503 and response["Retry-After"] == "1"
    assert response.json()["detail"] == DB_CONFLICT_DETAIL
    with mock.patch(target, side_effect=wrapped(OTHERS[0])):
        assert client.get("/").status_code == 500
    with mock.patch(target, side_effect=wrapped(OUTAGES[0])):
        response = client.get("/")
    assert response.status_code == 503 and response.json()["detail"] == DB_UNAVAILABLE_DETAIL

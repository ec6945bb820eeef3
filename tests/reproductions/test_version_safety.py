"""Version safety: a run is executed only with the plugin version it was requested with; staleness
is checked as web servers and workers start; re-reproduction reuses the stale results' seeds."""

from __future__ import annotations

import os
import subprocess
import sys
import threading

import pytest
from django.test import override_settings

from plugins.registry import register_temporarily
from registry.events.models import Event
from registry.findings.models import Finding
from registry.reproductions import services
from registry.reproductions.models import Reproduction, Run
from registry.reproductions.versions import (
    finding_is_stale,
    findings_mark_stale,
    stale_check_at_startup,
)
from tests.conftest import ROOT
from tests.factories import FindingFactory
from tests.fakes.plugins import EchoExperiment
from worker.runner import run_execute


class EchoUpgraded(EchoExperiment):
    """The echo plugin as a newer release: what an upgraded web server has installed."""

    name = "echo"
    version = "1.1.0"


def _experiment(user, **fields):
    finding = FindingFactory(created_by=user)
    return services.experiment_create(finding=finding, user=user, plugin="echo", reproduce=False, **fields)


def _done(experiment, user, seeds: list[int], plugin_version: str) -> Reproduction:
    """A registry reproduction whose runs succeeded with ``plugin_version``."""
    reproduction = Reproduction.objects.create(experiment=experiment, requested_by=user, seeds=seeds)
    for seed in seeds:
        Run.objects.create(reproduction=reproduction, seed=seed, state="succeeded", plugin_version=plugin_version,
                           requested_plugin_version=plugin_version)
    return reproduction


# ---------------------------------------------------------------- the requested version


@pytest.mark.django_db
def test_each_run_records_the_version_it_was_requested_with(user, api, anon, other_user, client_for):
    experiment = _experiment(user, default_seeds=2)
    response = api.post(f"/api/v1/experiments/{experiment.pk}/reproductions/", {"seeds": [3, 4]}, format="json")
    assert response.status_code == 202, response.json()
    runs = Run.objects.filter(reproduction_id=response.json()["id"])
    assert sorted(runs.values_list("seed", "requested_plugin_version")) == [(3, "1.0.0"), (4, "1.0.0")]
    with register_temporarily(EchoUpgraded):  # the server now has 1.1.0
        upgraded = services.reproduction_request(experiment=experiment, user=user, seeds=[5])
    assert upgraded.runs.get().requested_plugin_version == "1.1.0"
    # the runs API shows it to everyone who may see the run
    run = runs.first()
    for client in (anon, client_for(other_user), api):
        body = client.get(f"/api/v1/runs/{run.pk}/")
        assert body.status_code == 200, body.content[:300]
        assert body.json()["requested_plugin_version"] == "1.0.0"
        assert body.json()["plugin_version"] == ""  # filled in by the worker that runs it


@pytest.mark.django_db
def test_self_reported_runs_record_their_declared_version(user, api):
    experiment = _experiment(user)
    body = {
        "seed": 7,
        "measurements": {
            "baseline": {"risk": 1.0, "skill": 1.0, "width": 3.0},
            "intervention": {"risk": 0.5, "skill": 1.0, "width": 3.0},
        },
        "params": experiment.params, "hardware": "cpu", "environment": {}, "plugin_version": "0.5.0",
    }
    response = api.post(f"/api/v1/experiments/{experiment.pk}/self-reported-runs/", body, format="json")
    assert response.status_code == 201, response.json()
    run = Run.objects.get(pk=response.json()["id"])
    # unaffected by the worker check (nothing executes it); the version it declares is recorded
    assert (run.state, run.plugin_version, run.requested_plugin_version) == ("succeeded", "0.5.0", "0.5.0")


def test_the_check_names_plugin_and_both_versions():
    with pytest.raises(Exception) as refused:
        services.check_requested_version(EchoExperiment, "0.2.0")
    assert refused.value.message == "plugin echo is 1.0.0 on this worker, 0.2.0 was requested"
    services.check_requested_version(EchoExperiment, "1.0.0")
    services.check_requested_version(EchoExperiment, "")  # a run from before the field: not checked


def test_a_version_longer_than_the_column_is_not_refused():
    """reproduction_request stores the version cut to the column's 50 characters: the same
    version on the worker must match it, not refuse every run."""

    class LongVersion(EchoExperiment):
        version = "1.0.0.dev45+g0123456789abcdef0123456789abcdef.d20261202"

    services.check_requested_version(LongVersion, LongVersion.version[:50])
    with pytest.raises(Exception, match="was requested"):
        services.check_requested_version(LongVersion, "1.0.0")


@pytest.mark.django_db(transaction=True)
def test_a_worker_with_another_version_refuses_the_run(user, settings, monkeypatch):
    """Through the real runner: the run requested with 1.1.0 (an upgraded server) fails on this
    worker (echo 1.0.0) before any child starts, saying why; one requested with 1.0.0 runs in a
    real child process and records the version it ran with."""
    from worker.zygote import zygote_stop

    settings.RUN_CHILD_START = "spawn"
    monkeypatch.setattr(services, "runs_dispatch", lambda run_ids, **kwargs: None)  # no other worker takes them
    experiment = _experiment(user, params={"effect": -0.25})
    _done(experiment, user, [0], "1.0.0")
    finding = experiment.finding
    with register_temporarily(EchoUpgraded):
        newer = services.reproduction_request(experiment=experiment, user=user, seeds=[1, 2])
    older = services.reproduction_request(experiment=experiment, user=user, seeds=[3])
    Run.objects.filter(reproduction=older).update(requested_plugin_version="0.9.0")  # requested by an old server
    current = services.reproduction_request(experiment=experiment, user=user, seeds=[4])
    try:
        for run in [*newer.runs.all(), *older.runs.all()]:
            assert run_execute(run.pk, worker_host="old-worker") == Run.State.FAILED
        run = Run.objects.get(pk=current.runs.get().pk)
        assert run_execute(run.pk, worker_host="old-worker") == "succeeded"
    finally:
        zygote_stop()

    for run in newer.runs.all():
        assert run.state == Run.State.FAILED
        assert run.error == "plugin echo is 1.0.0 on this worker, 1.1.0 was requested"
        assert not run.measurements.exists() and run.plugin_version == ""
        assert "exit_code" not in run.environment  # refused before a child process started
    assert older.runs.get().error == "plugin echo is 1.0.0 on this worker, 0.9.0 was requested"
    finished = [e.payload for e in Event.objects.filter(type="run.finished").order_by("id")]
    assert [p["error"] for p in finished[:3]] == [
        "plugin echo is 1.0.0 on this worker, 1.1.0 was requested",
        "plugin echo is 1.0.0 on this worker, 1.1.0 was requested",
        "plugin echo is 1.0.0 on this worker, 0.9.0 was requested",
    ]
    run = Run.objects.get(pk=current.runs.get().pk)
    assert (run.state, run.plugin_version, run.requested_plugin_version) == ("succeeded", "1.0.0", "1.0.0")
    assert run.environment["exit_code"] == 0 and run.environment["plugin_version"] == "1.0.0"
    values = {(m.arm, m.metric): m.value for m in run.measurements.all()}
    assert values[("intervention", "risk")] == pytest.approx(values[("baseline", "risk")] - 0.25)
    finding.refresh_from_db()
    assert not finding.effects_stale


@pytest.mark.django_db
def test_refused_runs_leave_a_stale_finding_stale(user):
    """The issue's case: results from 0.9.0, the registry now has 1.0.0; runs refused by a worker
    do not clear the flag (only a result from the installed version does)."""
    experiment = _experiment(user)
    _done(experiment, user, [0, 1], "0.9.0")
    assert findings_mark_stale() == [experiment.finding_id]
    reproduction = services.reproduction_request(experiment=experiment, user=user, seeds=[0, 1])
    for run in reproduction.runs.all():
        token = services.run_claim(run_id=run.pk, worker_host="old-worker")
        services.run_fail(run_id=run.pk, token=token,
                          error="plugin echo is 0.9.0 on this worker, 1.0.0 was requested")
    assert Finding.objects.get(pk=experiment.finding_id).effects_stale


# ---------------------------------------------------------------- which results are stale


@pytest.mark.django_db
def test_results_from_a_newer_version_are_not_stale(user):
    """A process with an older plugin (an old worker at its start) does not mark newer results
    stale; older ones are; a version that is not a version number counts when it differs."""
    newer = _experiment(user)
    _done(newer, user, [0], "2.0.0")
    older = _experiment(user)
    _done(older, user, [0], "0.9.0")
    odd = _experiment(user)
    _done(odd, user, [0], "nightly")
    assert not finding_is_stale(finding=newer.finding)
    assert finding_is_stale(finding=older.finding)
    assert finding_is_stale(finding=odd.finding)
    assert sorted(findings_mark_stale()) == sorted([older.finding_id, odd.finding_id])


@pytest.mark.django_db
def test_the_check_reads_in_a_fixed_number_of_queries(user, django_assert_max_num_queries):
    """It runs at every worker start: its reads do not grow with the number of findings; a
    retracted experiment's old results do not make its finding stale."""
    stale = [_experiment(user) for _ in range(3)]
    for experiment in stale:
        _done(experiment, user, [0], "0.9.0")
    current = [_experiment(user) for _ in range(4)]
    for experiment in current:
        _done(experiment, user, [0], "1.0.0")
    retracted = _experiment(user)
    _done(retracted, user, [0], "0.9.0")
    type(retracted).objects.filter(pk=retracted.pk).update(retracted_at=retracted.created_at)
    assert sorted(findings_mark_stale()) == sorted(e.finding_id for e in stale)
    with django_assert_max_num_queries(4):  # nothing changed: reads only
        assert findings_mark_stale() == []
    assert not Finding.objects.get(pk=retracted.finding_id).effects_stale


# ---------------------------------------------------------------- re-reproduction seeds


@pytest.mark.django_db
def test_rereproduction_reuses_the_stale_reproductions_seeds(user, api, anon, other_user, client_for):
    experiment = _experiment(user, default_seeds=2)
    _done(experiment, user, [7, 11, 19], "0.9.0")
    _done(experiment, user, [11, 23], "0.9.0")
    never_run = services.experiment_create(finding=experiment.finding, user=user, plugin="echo", reproduce=False,
                                           params={"effect": -1.0}, default_seeds=2)
    assert findings_mark_stale() == [experiment.finding_id]
    url = f"/api/v1/findings/{experiment.finding_id}/rereproduce/"
    before = Reproduction.objects.count()
    for client, status in ((anon, (401, 403)), (client_for(other_user), (403,))):
        response = client.post(url)
        assert response.status_code in status, response.content[:300]
    assert Reproduction.objects.count() == before
    response = api.post(url)
    assert response.status_code == 202, response.json()
    by_experiment = {r["experiment"]: r["seeds"] for r in response.json()}
    # the stale results' seeds, in request order, each once; an experiment never run: the default
    assert by_experiment == {experiment.pk: [7, 11, 19, 23], never_run.pk: [0, 1]}
    runs = Run.objects.filter(reproduction_id__in=[r["id"] for r in response.json()])
    assert set(runs.values_list("requested_plugin_version", flat=True)) == {"1.0.0"}


@pytest.mark.django_db
def test_only_the_stale_reproductions_seeds_are_reused(user):
    from registry.reproductions.versions import finding_rereproduce

    experiment = _experiment(user)
    _done(experiment, user, [5, 6], "0.9.0")
    _done(experiment, user, [40, 41], "1.0.0")  # current already: not repeated
    _done(experiment, user, [50], "2.0.0")  # newer than the installed version: not stale either
    [reproduction] = finding_rereproduce(finding=experiment.finding, user=user)
    assert reproduction.seeds == [5, 6]
    # nothing stale: the seeds of the results there are
    current = _experiment(user)
    _done(current, user, [8, 9], "1.0.0")
    [reproduction] = finding_rereproduce(finding=current.finding, user=user)
    assert reproduction.seeds == [8, 9]


@pytest.mark.django_db
@override_settings(REREPRODUCE_ON_PLUGIN_UPGRADE=True)
def test_automatic_rereproduction_reuses_the_seeds(user):
    experiment = _experiment(user)
    _done(experiment, user, [3, 14, 15], "0.9.0")
    findings_mark_stale()
    newest = Reproduction.objects.filter(experiment=experiment).order_by("-pk").first()
    assert newest.seeds == [3, 14, 15]
    assert list(newest.runs.order_by("seed").values_list("seed", flat=True)) == [3, 14, 15]


@pytest.mark.django_db
@override_settings(REREPRODUCE_ON_PLUGIN_UPGRADE=True)
def test_a_finding_that_cannot_be_rereproduced_does_not_stop_the_check(user):
    """An experiment pinned below the installed version cannot be reproduced again (a 400): its
    finding stays marked stale, and every other finding is still checked and re-reproduced."""
    from registry.reproductions.models import Experiment

    pinned = _experiment(user)
    Experiment.objects.filter(pk=pinned.pk).update(plugin_version_constraint="<1.0")
    _done(pinned, user, [1], "0.9.0")
    other = _experiment(user)
    _done(other, user, [2], "0.9.0")
    assert sorted(findings_mark_stale()) == sorted([pinned.finding_id, other.finding_id])
    assert Finding.objects.filter(pk__in=[pinned.finding_id, other.finding_id], effects_stale=True).count() == 2
    assert Reproduction.objects.filter(experiment=other).count() == 2
    assert Reproduction.objects.filter(experiment=pinned).count() == 1


# ---------------------------------------------------------------- the start-up check


@pytest.mark.django_db
def test_startup_check_marks_stale_findings(user, settings):
    experiment = _experiment(user)
    _done(experiment, user, [0], "0.9.0")
    settings.STALE_CHECK_ON_STARTUP = False
    assert stale_check_at_startup(where="test") is None
    assert not Finding.objects.get(pk=experiment.finding_id).effects_stale
    settings.STALE_CHECK_ON_STARTUP = True
    assert stale_check_at_startup(where="test") == [experiment.finding_id]
    assert Finding.objects.get(pk=experiment.finding_id).effects_stale
    assert Event.objects.filter(type="finding.stale", finding_id=experiment.finding_id).count() == 1
    assert stale_check_at_startup(where="test") == []


@pytest.mark.django_db(transaction=True)
def test_worker_start_checks_staleness(user):
    """The worker's ``worker_ready`` handler, as Celery calls it when a worker is ready."""
    from celery.signals import worker_ready

    from worker.celery import _check_stale_findings

    assert _check_stale_findings in [receiver() for _, receiver in worker_ready.receivers]
    experiment = _experiment(user)
    _done(experiment, user, [0], "0.9.0")
    _check_stale_findings(sender=None)
    for thread in threading.enumerate():
        if thread.name == "stale-check":
            thread.join(timeout=30)
    assert Finding.objects.get(pk=experiment.finding_id).effects_stale


def _start_web_server_module(env: dict[str, str], *modules: str) -> subprocess.CompletedProcess:
    """Import the web server's application module(s) as uvicorn/gunicorn does, in a fresh
    process, and wait for the start-up checks."""
    code = (
        f"import threading, {', '.join(modules or ('registry.asgi',))}\n"
        "for t in threading.enumerate():\n"
        "    if t.name == 'stale-check': t.join(60)\n"
        "print('started')\n"
    )
    return subprocess.run([sys.executable, "-c", code], env=env, cwd=ROOT, capture_output=True, text=True,
                          timeout=120)


@pytest.mark.django_db(transaction=True)
@pytest.mark.postgres
def test_web_server_start_checks_staleness(user, worker_env):
    experiment = _experiment(user)
    _done(experiment, user, [0], "0.9.0")
    result = _start_web_server_module(worker_env)
    assert result.returncode == 0 and "started" in result.stdout, result.stderr[-2000:]
    assert Finding.objects.get(pk=experiment.finding_id).effects_stale
    assert Event.objects.filter(type="finding.stale", finding_id=experiment.finding_id).count() == 1


def test_web_server_starts_on_an_unmigrated_database(tmp_path):
    """An empty database (before ``migrate``): the start-up check is skipped, nothing fails, and
    nothing is written (the database stays empty for ``migrate``)."""
    database = tmp_path / "empty.sqlite3"
    env = {
        **os.environ, "DJANGO_SETTINGS_MODULE": "registry.settings.test", "DATABASE_URL": f"sqlite:///{database}",
        "PYTHONPATH": str(ROOT), "REGISTRY_VAR_DIR": str(tmp_path / "var"),
    }
    result = _start_web_server_module(env, "registry.asgi", "registry.wsgi")
    assert result.returncode == 0 and "started" in result.stdout, result.stderr[-2000:]
    assert "Traceback" not in result.stderr, result.stderr[-2000:]
    assert result.stderr.count("stale check skipped, the database has migrations to apply") == 2, result.stderr[-2000:]
    import sqlite3

    if database.exists():
        tables = sqlite3.connect(database).execute("select name from sqlite_master where type='table'").fetchall()
        assert tables == [], tables


def test_the_web_server_imports_the_plugins_before_its_stale_check_thread(tmp_path):
    """scipy looks torch up in ``sys.modules`` without importing it: a torch half-imported by the
    stale-check thread broke the server's own first scipy import (a wheel install's ``serve`` died
    with "partially initialized module 'torch'"). The plugins (torch) are imported before the
    thread starts, so scipy imported right after the module never sees a half-imported torch."""
    env = {
        **os.environ, "DJANGO_SETTINGS_MODULE": "registry.settings.test",
        "DATABASE_URL": f"sqlite:///{tmp_path / 'db.sqlite3'}", "PYTHONPATH": str(ROOT),
        "REGISTRY_VAR_DIR": str(tmp_path / "var"),
    }
    code = (
        "import sys, registry.wsgi\n"
        "torch = sys.modules.get('torch')\n"
        "print('torch complete' if torch is not None and hasattr(torch, 'Tensor') else 'torch missing or partial')\n"
        "import scipy.stats, threading\n"
        "for t in threading.enumerate():\n"
        "    if t.name == 'stale-check': t.join(60)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], env=env, cwd=ROOT, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "torch complete" in result.stdout, result.stdout + result.stderr[-2000:]

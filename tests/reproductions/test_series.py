"""Curves (``ctx.log_series``): the SDK's bounds, the child -> parent file through the real run
process, storage with the run's result, and what failed and cancelled runs leave (kept, marked)."""

from __future__ import annotations

import json
import math
import threading
import time

import pytest
from django.db import connection
from interp_registry.sdk import CHECKPOINT_CONTENT_TYPE, LocalContext, run_locally
from interp_registry.series import MAX_POINTS, MAX_SERIES, SeriesError, SeriesRecorder

from plugins.registry import register_temporarily
from registry.reproductions import services
from registry.reproductions.models import Artifact, Run, RunSeries
from tests.factories import FindingFactory
from tests.reproductions.series_plugins import CurvesExperiment
from worker.runner import run_execute
from worker.sandbox import SERIES_FILE, ChildRun

# ---------------------------------------------------------------- the SDK's bounds (no database)


def test_points_past_the_cap_are_thinned_deterministically_never_failing():
    recorder = SeriesRecorder(arms=("baseline",))
    total = 3 * MAX_POINTS + 17
    for i in range(total):
        recorder.log("loss", i, float(i), arm="baseline")
    (curve,) = recorder.series()
    assert curve["logged"] == total
    assert len(curve["steps"]) <= MAX_POINTS
    assert curve["steps"][0] == 0 and curve["steps"][-1] == total - 1  # first and last points kept
    assert curve["steps"] == sorted(set(curve["steps"]))
    stride = curve["steps"][1] - curve["steps"][0]
    assert stride == 4  # the smallest power of two leaving room for the last point
    assert all(step % stride == 0 for step in curve["steps"][:-1])
    assert curve["values"] == [float(step) for step in curve["steps"]]

    again = SeriesRecorder(arms=("baseline",))
    for i in range(total):
        again.log("loss", i, float(i), arm="baseline")
    assert again.series() == [curve]


def test_replaying_the_kept_points_gives_the_same_curve():
    """The child passes on only the points it keeps (with their index); the parent's replay of
    them thins to the same curve as a recorder that saw every point."""
    child = SeriesRecorder(max_points=100)
    written = [kept for i in range(12_345) if (kept := child.log("x", i * 2, math.sin(i), arm="a")) is not None]
    written += [last for _, _, last in child.pending_last() if last[0] != written[-1][0]]
    parent = SeriesRecorder(max_points=100)
    for index, step, value in written:
        parent.add_indexed("a", "x", index, step, value)
    assert parent.series() == child.series()
    assert len(written) < 12_345 // 10  # far fewer written than logged


def test_series_count_is_capped_at_the_call():
    recorder = SeriesRecorder(arms=("baseline", "intervention"))
    for i in range(MAX_SERIES):
        recorder.log(f"curve_{i}", 0, 1.0, arm="baseline" if i % 2 else "intervention")
    recorder.log("curve_0", 1, 1.0, arm="intervention")  # an existing series takes more points
    with pytest.raises(SeriesError, match=f"at most {MAX_SERIES} series"):
        recorder.log("one_more", 0, 1.0, arm="baseline")


@pytest.mark.parametrize(
    ("call", "message"),
    [
        ({"value": float("nan")}, "not finite"),
        ({"value": float("inf")}, "not finite"),
        ({"value": 10**400}, "not finite"),  # past the largest float: a SeriesError, not an OverflowError
        ({"value": "0.5"}, "must be a number"),
        ({"value": True}, "must be a number"),
        ({"step": -1}, "between 0 and"),
        ({"step": 1.5}, "must be an integer"),
        ({"arm": "treatment"}, "must be one of"),
        ({"name": "bad name!"}, "series name"),
        ({"name": ""}, "series name"),
    ],
)
def test_bad_points_are_refused_at_the_call(call, message):
    ctx = LocalContext(arms=("baseline", "intervention"), device="cpu")
    arguments = {"name": "loss", "step": 3, "value": 0.5, "arm": "baseline", **call}
    with pytest.raises(SeriesError, match=message):
        ctx.log_series(arguments["name"], arguments["step"], arguments["value"], arm=arguments["arm"])
    assert ctx.series == []  # nothing of a refused point is kept


def test_steps_must_increase_within_a_series():
    ctx = LocalContext(arms=("baseline", "intervention"), device="cpu")
    ctx.log_series("loss", 5, 1.0, arm="baseline")
    ctx.log_series("loss", 5, 1.0, arm="intervention")  # another series: its own steps
    with pytest.raises(SeriesError, match="greater than the previous step 5"):
        ctx.log_series("loss", 5, 0.9, arm="baseline")
    assert [c["steps"] for c in ctx.series] == [[5], [5]]


def test_run_locally_keeps_the_curves_and_checkpoints():
    result, ctx = run_locally(CurvesExperiment, preset="tiny")
    assert result == {"baseline": {"risk": 1.0}, "intervention": {"risk": 0.5}}
    curves = {(c["arm"], c["name"]): c for c in ctx.series}
    assert set(curves) == {("baseline", "accuracy"), ("baseline", "loss"), ("intervention", "loss")}
    assert curves[("baseline", "loss")]["steps"] == [10 * i for i in range(20)]
    assert curves[("intervention", "loss")]["values"][1] == pytest.approx(1.0)
    assert ctx.artifacts["model.pt"].startswith(b"\x00weights")
    assert ctx.content_types["model.pt"] == CHECKPOINT_CONTENT_TYPE == "application/x-checkpoint"


def test_run_locally_refuses_a_nan_point_as_a_clear_error():
    with pytest.raises(SeriesError, match="not finite"):
        run_locally(CurvesExperiment, params={"points": 3, "then": "nan"})


def test_checkpoint_size_limit():
    ctx = LocalContext(device="cpu", max_checkpoint_bytes=10)
    ctx.save_checkpoint("small.pt", b"0123456789")
    with pytest.raises(ValueError, match="the limit is 10 bytes"):
        ctx.save_checkpoint("big.pt", b"0123456789a")
    assert list(ctx.artifacts) == ["small.pt"]


# ---------------------------------------------------------------- the parent reads the file, bounded


def _child_with_file(tmp_path, content: bytes) -> ChildRun:
    child = ChildRun(run_id=0, plugin="x:y", params={}, seed=0, device="cpu", deterministic=False,
                     scratch_root=str(tmp_path))
    (child.scratch / SERIES_FILE).write_bytes(content)
    return child


def test_parent_drops_malformed_and_foreign_lines_and_counts_them(tmp_path):
    good = {"arm": "baseline", "name": "loss", "points": [[0, 0, 1.0], [1, 5, 0.5]]}
    lines = [json.dumps(good), "not json", json.dumps({"arm": "elsewhere", "name": "x", "points": [[0, 0, 1.0]]}),
             json.dumps({"arm": "baseline", "name": "loss", "points": [[2, 6, "NaN"]]}),
             json.dumps([1, 2, 3]), json.dumps({"arm": "baseline", "name": "loss", "points": [[0, 1, 2.0]]})]
    child = _child_with_file(tmp_path, ("\n".join(lines) + "\n").encode())
    try:
        series, refused = child.load_series(arms=("baseline", "intervention"))
    finally:
        child.cleanup()
    assert series == [{"arm": "baseline", "name": "loss", "steps": [0, 5], "values": [1.0, 0.5], "logged": 2}]
    assert len(refused) >= 3 and all(note.startswith("curves:") for note in refused)
    assert sum(int(note.split()[1]) for note in refused) == 5


def test_parent_caps_series_count_and_reports_refusals_bounded(tmp_path):
    lines = [json.dumps({"arm": "baseline", "name": f"c{i}", "points": [[0, 0, 1.0]]}) for i in range(40)]
    lines += [json.dumps({"arm": f"arm{i}", "name": "x", "points": [[0, 0, 1.0]]}) for i in range(100)]
    child = _child_with_file(tmp_path, ("\n".join(lines) + "\n").encode())
    try:
        series, refused = child.load_series(arms=("baseline", "intervention"))
    finally:
        child.cleanup()
    assert [c["name"] for c in series] == sorted(f"c{i}" for i in range(MAX_SERIES))  # the first 32 kept
    assert len(refused) == 21 and refused[-1] == "curves: 88 line(s) refused: other reasons"
    assert sum(int(note.split()[1]) for note in refused) == 40 - MAX_SERIES + 100


def test_parent_refuses_an_oversized_file_or_a_symlink(tmp_path, monkeypatch):
    from worker import sandbox

    monkeypatch.setattr(sandbox, "SERIES_MAX_BYTES", 100)
    child = _child_with_file(tmp_path, b"x" * 101)
    try:
        assert child.load_series() == ([], ["curves dropped: the curves file is 101 bytes; the limit is 100 bytes"])
        (child.scratch / SERIES_FILE).unlink()
        (child.scratch / SERIES_FILE).symlink_to("/etc/hostname")
        series, refused = child.load_series()
        assert series == [] and "symbolic link" in refused[0]
    finally:
        child.cleanup()


def test_parent_refuses_forged_indices_quickly(tmp_path):
    """An index past the point's step cannot come from log_series (steps start at 0 and increase):
    a forged huge one would make the thinning loop for minutes and ``logged`` overflow the column."""
    huge = 10**4000
    lines = [json.dumps({"arm": "baseline", "name": "loss", "points": [[huge + i, i, 1.0] for i in range(50)]}),
             json.dumps({"arm": "baseline", "name": "acc", "points": [[0, 3, 1.0], [7, 7, 2.0]]}),
             json.dumps({"arm": "baseline", "name": "bad", "points": [[9, 8, 1.0]]})]
    child = _child_with_file(tmp_path, ("\n".join(lines) + "\n").encode())
    started = time.monotonic()
    try:
        series, refused = child.load_series(arms=("baseline",))
    finally:
        child.cleanup()
    assert time.monotonic() - started < 5
    assert series == [{"arm": "baseline", "name": "acc", "steps": [3, 7], "values": [1.0, 2.0], "logged": 8}]
    assert sum(int(note.split()[1]) for note in refused) == 2


def test_parent_drops_deeply_nested_overlong_and_overflowing_lines(tmp_path, monkeypatch):
    from worker import sandbox

    monkeypatch.setattr(sandbox, "SERIES_LINE_MAX_BYTES", 1000)
    good = json.dumps({"arm": "baseline", "name": "loss", "points": [[0, 0, 1.0]]})
    long = json.dumps({"arm": "baseline", "name": "long", "points": [[i, i, 1.0] for i in range(200)]})
    huge = json.dumps({"arm": "baseline", "name": "huge", "points": [[0, 0, 10**400]]})
    content = b"[" * 100_000 + b"\n" + long.encode() + b"\n" + good.encode() + b"\n" + huge.encode() + b"\n"
    child = _child_with_file(tmp_path, content)
    try:  # a RecursionError or an OverflowError used to fail the run
        series, refused = child.load_series(arms=("baseline",))
    finally:
        child.cleanup()
    assert [c["name"] for c in series] == ["loss"]
    assert sum(int(note.split()[1]) for note in refused) == 3
    assert any("longer than 1000 bytes" in note for note in refused)


# ---------------------------------------------------------------- through the real run process


@pytest.fixture
def curves_plugin():
    with register_temporarily(CurvesExperiment):
        yield CurvesExperiment


@pytest.fixture
def no_dispatch(monkeypatch):
    monkeypatch.setattr(services, "runs_dispatch", lambda run_ids, **kwargs: None)  # no worker takes them


def _run(user, params: dict, seed: int = 3) -> Run:
    finding = FindingFactory(created_by=user)
    experiment = services.experiment_create(finding=finding, user=user, plugin="curves", params=params,
                                            reproduce=False)
    return services.reproduction_request(experiment=experiment, user=user, seeds=[seed], device="cpu").runs.get()


def _stored(run: Run) -> dict[tuple[str, str], RunSeries]:
    return {(s.arm, s.name): s for s in RunSeries.objects.filter(run=run)}


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("start", ["zygote", "spawn"])
def test_curves_travel_from_the_run_process_and_are_stored_with_the_result(
    user, settings, curves_plugin, no_dispatch, start
):
    from worker.zygote import zygote_stop

    settings.RUN_CHILD_START = start
    points = 2 * MAX_POINTS + 5  # thinned on the way, never failing the run
    run = _run(user, {"points": points})
    try:
        assert run_execute(run.pk, worker_host="test-host") == "succeeded"
    finally:
        zygote_stop()
    run.refresh_from_db()
    stored = _stored(run)
    assert set(stored) == {("baseline", "accuracy"), ("baseline", "loss"), ("intervention", "loss")}
    _, local = run_locally(CurvesExperiment, params={"points": points}, seed=3)
    for curve in local.series:  # the same points as run_locally keeps: one rule everywhere
        row = stored[(curve["arm"], curve["name"])]
        assert (row.steps, row.values, row.logged) == (curve["steps"], curve["values"], points)
    assert len(stored[("baseline", "loss")].steps) <= MAX_POINTS
    assert stored[("baseline", "loss")].steps[-1] == 10 * (points - 1)
    artifacts = {a.name: a for a in run.artifacts.all()}
    assert artifacts["model.pt"].content_type == "application/x-checkpoint"
    assert {a.run_state for a in artifacts.values()} == {"succeeded"}
    assert not any(a.partial for a in artifacts.values())


@pytest.mark.django_db(transaction=True)
def test_a_failed_run_keeps_its_artifacts_and_curves_marked_failed(user, curves_plugin, no_dispatch):
    run = _run(user, {"points": 30, "then": "fail"})
    assert run_execute(run.pk, worker_host="test-host") == Run.State.FAILED
    run.refresh_from_db()
    assert "diverged after the curves" in run.error
    artifacts = {a.name: a for a in run.artifacts.all()}
    assert set(artifacts) == {"figure.json", "model.pt"}
    assert {(a.run_state, a.partial) for a in artifacts.values()} == {("failed", True)}
    assert services.artifact_path(artifacts["model.pt"]).read_bytes() == b"\x00weights" * 10
    assert _stored(run)[("baseline", "loss")].steps == [10 * i for i in range(30)]


@pytest.mark.django_db(transaction=True)
def test_a_nan_point_fails_the_run_naming_the_curve(user, curves_plugin, no_dispatch):
    run = _run(user, {"points": 5, "then": "nan"})
    assert run_execute(run.pk, worker_host="test-host") == Run.State.FAILED
    run.refresh_from_db()
    assert "SeriesError" in run.error and "'loss' (baseline) step 50" in run.error and "not finite" in run.error
    assert _stored(run)[("baseline", "loss")].steps == [0, 10, 20, 30, 40]  # what came before is kept


@pytest.mark.django_db(transaction=True)
def test_a_plugin_scribbling_on_its_curves_file_loses_only_the_bad_lines(user, curves_plugin, no_dispatch):
    run = _run(user, {"points": 4, "then": "write_junk"})
    assert run_execute(run.pk, worker_host="test-host") == "succeeded"
    run.refresh_from_db()
    stored = _stored(run)
    assert stored[("baseline", "loss")].steps == [0, 10, 20, 30]
    assert stored[("baseline", "scribbled")].steps == [0]  # well-formed: as good as a log_series call
    assert ("elsewhere", "x") not in stored
    assert "[curves: 1 line(s) refused: malformed line]" in run.logs
    assert "line(s) refused: series 'x': arm 'elsewhere' must be one of" in run.logs


@pytest.mark.django_db(transaction=True)
def test_a_cancelled_run_keeps_its_artifacts_and_curves_marked_cancelled(user, curves_plugin, no_dispatch):
    run = _run(user, {"points": 12, "then": "wait"})
    outcome: list[str] = []

    def execute() -> None:
        try:
            outcome.append(run_execute(run.pk, worker_host="test-host"))
        finally:
            connection.close()

    thread = threading.Thread(target=execute)
    thread.start()
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            current = Run.objects.get(pk=run.pk)
            if current.progress_message.startswith("curves logged"):
                break
            time.sleep(0.1)
        else:
            pytest.fail(f"the run never logged its curves: {current.state} {current.progress_message!r}")
        assert services.run_cancel(run=current, user=user)
    finally:
        thread.join(timeout=60)
    assert outcome == ["stopped: the run was cancelled"]
    run.refresh_from_db()
    assert run.state == Run.State.CANCELLED
    artifacts = Artifact.objects.filter(run=run)
    assert {(a.name, a.run_state) for a in artifacts} == {("figure.json", "cancelled"), ("model.pt", "cancelled")}
    assert _stored(run)[("intervention", "loss")].values[:2] == [2.0, 1.0]
    # only the worker holding the claim keeps anything, and only once
    assert not services.run_keep_partial(run_id=run.pk, token=run.claim_token, artifacts={}, series=[
        {"arm": "baseline", "name": "late", "steps": [0], "values": [1.0], "logged": 1}])
    assert not services.run_keep_partial(run_id=run.pk, token=None, artifacts={"x": (b"1", "text/plain")},
                                         series=[])
    assert RunSeries.objects.filter(run=run).count() == 3

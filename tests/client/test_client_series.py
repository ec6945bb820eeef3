"""``Registry.series`` and ``interp-registry export --table series`` against a live registry:
curves as rows and as a pandas DataFrame, of a finding (thinned) or of one run, visibility by token."""

from __future__ import annotations

import csv
import json

import pytest
from interp_registry import cli
from interp_registry.client import NotFound, Registry

from registry.reproductions.models import Reproduction, Run, RunSeries
from tests.effects.builders import experiment_for
from tests.factories import FindingFactory

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]


def _finding_with_curves(user, *, visibility: str = "public") -> tuple[int, list[int]]:
    experiment = experiment_for(FindingFactory(created_by=user, visibility=visibility))
    reproduction = Reproduction.objects.create(experiment=experiment, requested_by=user, seeds=[0, 1])
    runs = [Run.objects.create(reproduction=reproduction, seed=seed, state="succeeded") for seed in (0, 1)]
    for run in runs:
        RunSeries.objects.create(run=run, arm="baseline", name="loss", steps=list(range(0, 300, 3)),
                                 values=[1.0 / (1 + i) for i in range(100)], logged=100)
        RunSeries.objects.create(run=run, arm="intervention", name="loss", steps=[0, 1], values=[2.0, 1.0], logged=2)
    return experiment.finding_id, [run.pk for run in runs]


def test_series_as_rows_and_frames(server, token, stranger_token, user):
    finding_id, run_ids = _finding_with_curves(user, visibility="restricted")
    with Registry(server, token) as registry:
        frame = registry.series(finding_id, as_frame=True)
        assert list(frame.columns) == ["run", "seed", "arm", "name", "step", "value", "experiment", "state"]
        assert len(frame) == 2 * (100 + 2)
        assert sorted(frame["run"].unique().tolist()) == run_ids
        baseline = frame[(frame.arm == "baseline") & (frame.seed == 1)]
        assert baseline["step"].tolist() == list(range(0, 300, 3))
        thinned = registry.series(finding_id, name="loss", arm="baseline", max_points=10)
        assert {row["arm"] for row in thinned} == {"baseline"}
        assert 2 < len(thinned) <= 2 * 10
        one_run = registry.series(run=run_ids[0], arm="intervention")
        assert one_run == [
            {"run": run_ids[0], "seed": 0, "arm": "intervention", "name": "loss", "step": 0, "value": 2.0,
             "experiment": None, "state": "succeeded"},
            {"run": run_ids[0], "seed": 0, "arm": "intervention", "name": "loss", "step": 1, "value": 1.0,
             "experiment": None, "state": "succeeded"},
        ]
    for who in (None, stranger_token):
        with Registry(server, who) as registry, pytest.raises(NotFound):
            registry.series(finding_id)


def test_export_series_as_csv_and_json(server, token, user, tmp_path, capsys):
    finding_id, run_ids = _finding_with_curves(user)
    auth = ["--url", server, "--token", token]
    target = tmp_path / "curves.csv"
    assert cli.main(["export", str(finding_id), "--table", "series", "--format", "csv", "-o", str(target), *auth]) == 0
    with target.open() as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 204
    assert set(rows[0]) >= {"run", "seed", "arm", "name", "step", "value"}
    capsys.readouterr()
    assert cli.main(["export", str(finding_id), "--table", "series", "--format", "json", *auth]) == 0
    exported = json.loads(capsys.readouterr().out)
    assert {(r["run"], r["arm"]) for r in exported} == {(run, arm) for run in run_ids
                                                         for arm in ("baseline", "intervention")}

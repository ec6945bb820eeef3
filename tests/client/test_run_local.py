"""``interp-registry run-local``: a plugin run on the user's machine, a child process per seed
through the workers' runner (worker.sandbox.ChildRun) or in-process without the server package,
checked as a worker checks results; ``--report`` posts them as self-reported runs to a live
registry (tests/client/conftest.py's uvicorn on the test database)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from interp_registry import cli
from interp_registry.client import Registry

from tests.conftest import ROOT

ECHO = "tests.fakes.plugins:EchoExperiment"
CRASHING = "tests.fakes.plugins:CrashingExperiment"
CURVED = "tests.fakes.plugins:CurvedEchoExperiment"


def run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def _wobble(seed: int, noise: float) -> float:  # EchoExperiment's seed-dependent spread
    return noise * (((seed * 7919) % 13) / 6.0 - 1.0)


@pytest.fixture(autouse=True)
def _no_stored_login(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("INTERP_REGISTRY_CONFIG_DIR", str(tmp_path / "config"))
    monkeypatch.delenv("INTERP_REGISTRY_TOKEN", raising=False)
    monkeypatch.delenv("INTERP_REGISTRY_URL", raising=False)


def test_each_seed_runs_in_the_workers_child_runner(tmp_path, capsys):
    params = tmp_path / "params.yaml"
    params.write_text("# echo\nnoise: 0.2\neffect: -0.4\n")
    code, out, err = run_cli(capsys, "run-local", ECHO, "--params", str(params), "--seeds", "2", "--first-seed", "4",
                             "--json", "--artifacts", str(tmp_path / "artifacts"))
    assert code == 0, err
    data = json.loads(out)
    assert data["runner"] == "child" and data["plugin"] == "echo" and data["version"] == "1.0.0"
    assert data["params"] == {"baseline": 1.0, "effect": -0.4, "noise": 0.2, "sleep_s": 0.0}
    assert [r["seed"] for r in data["runs"]] == [4, 5]
    for run in data["runs"]:
        assert run["state"] == "succeeded", run["error"]
        base = 1.0 + _wobble(run["seed"], 0.2)
        assert run["measurements"]["baseline"]["risk"] == pytest.approx(base)
        assert run["measurements"]["intervention"]["risk"] == pytest.approx(base - 0.4)
        assert run["measurements"]["intervention"]["width"] == 3.0
        environment = run["environment"]
        # written by the sandbox's child (worker.sandbox.child_main), not by this process
        assert environment["seed"] == run["seed"] and environment["plugin_version"] == "1.0.0"
        assert environment["torch"] and environment["python"] and environment["device_name"] == "cpu"
        assert "memory_limit" in environment and environment["runner"].endswith("(child process)")
        assert run["artifacts"] == ["values.json"]
        assert (tmp_path / "artifacts" / f"seed-{run['seed']}" / "values.json").read_bytes() == b'{"ok": true}'

    code, out, err = run_cli(capsys, "run-local", ECHO, "--params", str(params), "--seeds", "2", "--runner",
                             "in-process")
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0] == "echo 1.0.0: 2 seeds on cpu, in this process"
    assert lines[2].split() == ["seed", "arm", "risk", "skill", "width", "state"]
    assert lines[3].split()[:3] == ["0", "baseline", f"{1.0 + _wobble(0, 0.2):.4g}"]
    assert [line.split()[:2] for line in lines[3:]] == [
        ["0", "baseline"], ["0", "intervention"], ["1", "baseline"], ["1", "intervention"],
        ["mean", "baseline"], ["mean", "intervention"],
    ]


@pytest.mark.parametrize(("runner", "kind", "message"), [
    ("child", "nan", "metric 'risk' of arm 'baseline' is not finite: nan"),
    ("in-process", "nan", "metric 'risk' of arm 'baseline' is not finite: nan"),
    ("in-process", "undeclared", "undeclared metrics ['other'] for arm 'baseline'"),
    ("child", "value", "ValueError: the plugin broke"),
])
def test_results_are_checked_as_a_worker_checks_them(tmp_path, capsys, runner, kind, message):
    params = tmp_path / "params.yaml"
    params.write_text(f"kind: {kind}\n")
    code, out, err = run_cli(capsys, "run-local", CRASHING, "--params", str(params), "--seeds", "1",
                             "--runner", runner, "--json")
    assert code == 1, err
    data = json.loads(out)
    assert data["runner"] == runner
    assert data["runs"][0]["state"] == "failed" and data["runs"][0]["measurements"] == {}
    assert message in data["runs"][0]["error"]


def test_the_users_folder_never_shadows_modules_in_the_child(tmp_path, capsys, monkeypatch):
    """Run from a folder holding its own json.py (which the child's runner imports): the child
    imports the standard library's, yet a plugin given as module:Class from that folder loads."""
    folder = tmp_path / "project"
    folder.mkdir()
    marker = tmp_path / "shadow-imported"
    (folder / "json.py").write_text(f"import pathlib\npathlib.Path({str(marker)!r}).touch()\n"
                                    f"raise SystemExit('the json.py of the user folder was imported')\n")
    (folder / "myplugin.py").write_text("from tests.fakes.plugins import EchoExperiment\n\n\n"
                                        "class Mine(EchoExperiment):\n    pass\n")
    monkeypatch.chdir(folder)
    monkeypatch.syspath_prepend(str(ROOT))
    for plugin in (ECHO, "myplugin:Mine"):
        code, out, err = run_cli(capsys, "run-local", plugin, "--seeds", "1", "--runner", "child", "--json")
        data = json.loads(out)
        assert code == 0, (plugin, data["runs"][0]["error"], err)
        assert data["runs"][0]["state"] == "succeeded"
    assert not marker.exists()


BLOCK_SERVER = """
import importlib.abc, json, sys
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in ('worker', 'registry', 'django', 'celery'):
            raise ImportError(f'{name} is blocked: the server package is not installed')
sys.meta_path.insert(0, Block())
from interp_registry import cli
sys.exit(cli.main(sys.argv[1:]))
"""


def test_without_the_server_package_it_runs_in_process(tmp_path):
    result = subprocess.run(
        [sys.executable, "-c", BLOCK_SERVER, "run-local", ECHO, "--preset", "tiny", "--seeds", "2", "--json"],
        cwd=ROOT, capture_output=True, text=True, timeout=180,
        env={"PATH": "/usr/bin:/bin", "INTERP_REGISTRY_CONFIG_DIR": str(tmp_path), "OMP_NUM_THREADS": "1"},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    data = json.loads(result.stdout)
    assert data["runner"] == "in-process"
    assert [r["state"] for r in data["runs"]] == ["succeeded", "succeeded"]
    assert data["runs"][1]["measurements"]["intervention"]["risk"] == pytest.approx(0.5)
    assert data["runs"][1]["environment"]["runner"].endswith("(in process)")


def test_bad_usage_is_named(tmp_path, capsys):
    code, _, err = run_cli(capsys, "run-local", "no_such_plugin", "--seeds", "1")
    assert code == 2 and "no installed plugin 'no_such_plugin'" in err and "checkerboard" in err

    bad = tmp_path / "bad.yaml"
    bad.write_text("noise: 0.1\nbogus: 3\n")
    code, _, err = run_cli(capsys, "run-local", ECHO, "--params", str(bad))
    assert code == 2 and "params.bogus" in err

    malformed = tmp_path / "malformed.yaml"
    malformed.write_text("noise: 0.1\neffect: [1,\n")
    code, _, err = run_cli(capsys, "run-local", ECHO, "--params", str(malformed))
    assert code == 3 and "line 3" in err and "malformed.yaml" in err

    listed = tmp_path / "list.yaml"
    listed.write_text("- 1\n- 2\n")
    code, _, err = run_cli(capsys, "run-local", ECHO, "--params", str(listed))
    assert code == 3 and "mapping" in err

    code, _, err = run_cli(capsys, "run-local", ECHO, "--preset", "huge")
    assert code == 2 and "no preset 'huge'" in err
    code, _, err = run_cli(capsys, "run-local", ECHO, "--experiment", "3")
    assert code == 2 and "--report" in err
    code, _, err = run_cli(capsys, "run-local", ECHO, "--seeds", "0")
    assert code == 2
    # seeds the registry would refuse are refused before anything runs
    for first, n in (("-1", "1"), (str(2**31 - 1), "2")):
        code, out, err = run_cli(capsys, "run-local", ECHO, "--first-seed", first, "--seeds", n)
        assert code == 2 and "the seeds must lie between 0 and 2147483647" in err and out == ""


# ---------------------------------------------------------------- --report against a live registry


def _echo_experiment(server: str, token: str) -> tuple[int, int]:
    with Registry(server, token=token) as registry:
        finding = registry.create_finding(title="Echo lowers risk", kind="fix", summary="run-local test")
        experiment = registry.create_experiment(finding, plugin="echo", params={"effect": -0.4, "noise": 0.2},
                                                reproduce=False)
    return finding.id, experiment.id


def _self_reported(experiment_id: int) -> list:
    from registry.reproductions.models import Run

    return list(Run.objects.filter(reproduction__experiment_id=experiment_id,
                                   reproduction__source="self_reported").prefetch_related("measurements")
                .order_by("seed"))


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_report_posts_self_reported_runs_with_their_environment(server, token, stranger_token, capsys, tmp_path):
    finding_id, experiment_id = _echo_experiment(server, token)
    auth = ["--url", server, "--token", token]

    # anonymous: refused before anything runs
    code, _, err = run_cli(capsys, "run-local", ECHO, "--report", str(finding_id), "--url", server)
    assert code == 2 and "needs a token" in err
    # a stranger (not an author): refused before anything runs
    code, _, err = run_cli(capsys, "run-local", ECHO, "--report", str(finding_id), "--url", server,
                           "--token", stranger_token)
    assert code == 4 and "only the authors" in err
    # parameters other than the experiment's
    code, _, err = run_cli(capsys, "run-local", ECHO, "--preset", "tiny", "--report", str(finding_id), *auth)
    assert code == 2 and "['effect', 'noise']" in err
    # an experiment of another finding
    other_finding, other_experiment = _echo_experiment(server, token)
    code, _, err = run_cli(capsys, "run-local", ECHO, "--report", str(finding_id), "--experiment",
                           str(other_experiment), *auth)
    assert code == 2 and f"belongs to finding {other_finding}" in err
    assert _self_reported(experiment_id) == []

    # the owner: two seeds run locally in child processes (the experiment's parameters), then
    # reported in one batch
    code, out, err = run_cli(capsys, "run-local", ECHO, "--seeds", "2", "--report", str(finding_id), "--json",
                             *auth)
    assert code == 0, err
    data = json.loads(out)
    assert data["reported"]["experiment"] == experiment_id and len(data["reported"]["runs"]) == 2
    assert data["reported"]["measurements"] == 2 * 2 * 3
    runs = _self_reported(experiment_id)
    assert [run.seed for run in runs] == [0, 1] and [run.pk for run in runs] == data["reported"]["runs"]
    for run, local_run in zip(runs, data["runs"], strict=True):
        assert run.state == "succeeded" and run.hardware == "cpu" and run.plugin_version == "1.0.0"
        assert run.environment["torch"] == local_run["environment"]["torch"]
        assert run.environment["seed"] == run.seed and run.environment["runner"].endswith("(child process)")
        stored = {(m.arm, m.metric): m.value for m in run.measurements.all()}
        assert stored[("baseline", "risk")] == pytest.approx(1.0 + _wobble(run.seed, 0.2))
        assert stored[("intervention", "risk")] == pytest.approx(local_run["measurements"]["intervention"]["risk"])

    # human output, in-process, with an explicit experiment and the same parameters given as a file
    same = tmp_path / "same.yaml"
    same.write_text("effect: -0.4\nnoise: 0.2\n")
    code, out, err = run_cli(capsys, "run-local", ECHO, "--params", str(same), "--seeds", "1", "--first-seed", "7",
                             "--runner", "in-process", "--report", str(finding_id), "--experiment",
                             str(experiment_id), *auth)
    assert code == 0, err
    assert f"reported 1 runs to experiment {experiment_id} of finding {finding_id}" in out
    runs = _self_reported(experiment_id)
    assert [run.seed for run in runs] == [0, 1, 7]
    assert runs[-1].environment["runner"].endswith("(in process)")

    # the curves the plugin logged (ctx.log_series) go with the runs, from the child and in-process
    with Registry(server, token=token) as registry:
        curved = registry.create_experiment(finding_id, plugin="echo_curves", params={"curve_points": 3},
                                            reproduce=False)
    for runner, seed in (("child", 2), ("in-process", 5)):
        code, out, err = run_cli(capsys, "run-local", CURVED, "--seeds", "1", "--first-seed", str(seed), "--runner",
                                 runner, "--report", str(finding_id), "--json", *auth)
        assert code == 0, err
        data = json.loads(out)
        [local_run] = data["runs"]
        assert [(c["arm"], c["name"], c["steps"]) for c in local_run["series"]] == [
            ("baseline", "loss", [0, 1, 2]), ("intervention", "loss", [0, 1, 2])]
        [run_id] = data["reported"]["runs"]
        with Registry(server) as anonymous:
            stored = anonymous.series(run=run_id)
        assert [(p["arm"], p["name"], p["step"]) for p in stored] == [
            (arm, "loss", step) for arm in ("baseline", "intervention") for step in (0, 1, 2)]
        expected = [1.0 + step + seed / 100 for step in (0, 1, 2)]
        assert [p["value"] for p in stored] == pytest.approx(expected + [v - 0.5 for v in expected])
        assert {p["seed"] for p in stored} == {seed}
    assert [run.seed for run in _self_reported(curved.id)] == [2, 5]


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_report_posts_nothing_when_a_seed_failed(server, token, capsys, monkeypatch):
    """All or nothing: one failed seed of three and none is reported (no partial evidence)."""
    from interp_registry import local

    finding_id, experiment_id = _echo_experiment(server, token)
    real = local._child_run

    def second_seed_fails(plugin, params, seed, **kwargs):
        if seed == 1:
            return local.SeedResult(seed, "failed", error="killed by the test")
        return real(plugin, params, seed, **kwargs)

    monkeypatch.setattr(local, "_child_run", second_seed_fails)
    code, out, err = run_cli(capsys, "run-local", ECHO, "--seeds", "3", "--runner", "child", "--report",
                             str(finding_id), "--json", "--url", server, "--token", token)
    assert code == 1, err
    data = json.loads(out)
    assert [r["state"] for r in data["runs"]] == ["succeeded", "failed", "succeeded"]
    assert data["reported"] is None
    assert _self_reported(experiment_id) == []
    code, out, _ = run_cli(capsys, "run-local", ECHO, "--seeds", "2", "--first-seed", "1", "--runner", "child",
                           "--report", str(finding_id), "--url", server, "--token", token)
    assert code == 1 and "not reported: 1 of 2 seeds failed" in out
    assert _self_reported(experiment_id) == []


def test_artifacts_named_like_a_folder_are_saved_under_a_file_name(tmp_path):
    from interp_registry import local

    result = local.SeedResult(3, "succeeded", artifacts={
        "": (b"a", "text/plain"), "..": (b"b", "text/plain"), "sub/plot.png": (b"c", "image/png"),
    })
    assert local.save_artifacts([result], tmp_path / "out") == 3
    folder = tmp_path / "out" / "seed-3"
    assert sorted(p.name for p in folder.iterdir()) == ["artifact-1", "artifact-2", "plot.png"]
    assert (folder / "artifact-2").read_bytes() == b"b" and (folder / "plot.png").read_bytes() == b"c"


def test_a_report_fits_the_body_limit_by_thinning_curves_in_one_request():
    """Curves made reports larger than the registry's body limit (2 MiB): a 413 for runs whose
    measurements alone were fine. The runs' curves are thinned (first and last points kept) until
    the report fits one request (one request is one self-reported reproduction: the seeds of a
    local run stay together); only measurements alone over the limit are split."""
    from interp_registry import local

    from tests.fakes.plugins import EchoExperiment

    def result(seed: int, points: int) -> local.SeedResult:
        curve = {"steps": list(range(points)), "values": [0.5 + i / points for i in range(points)], "logged": points}
        measured = {"baseline": {"risk": 1.0}, "intervention": {"risk": 0.5}}
        return local.SeedResult(seed, "succeeded", measurements=measured,
                                series=[{"arm": arm, "name": "loss", **curve} for arm in ("baseline", "intervention")])

    limit = 60_000
    results = [result(seed, 800) for seed in range(6)] + [result(9, 20_000)]
    (body,) = local.report_payloads({}, EchoExperiment, results, max_bytes=limit)
    assert len(json.dumps(body).encode()) <= limit
    assert [run["seed"] for run in body["runs"]] == [0, 1, 2, 3, 4, 5, 9]
    for run in body["runs"]:
        for curve in run["series"]:
            assert 2 < len(curve["steps"]) < (20_000 if run["seed"] == 9 else 801)
            assert curve["steps"][0] == 0 and curve["steps"][-1] == (19_999 if run["seed"] == 9 else 799)
    small = results[:2]
    assert local.report_payloads({}, EchoExperiment, small) == [local.report_payload({}, EchoExperiment, small)]
    # measurements alone over the limit: split, every run sent once, in order
    many = [local.SeedResult(seed, "succeeded", measurements={"baseline": {"risk": 1.0}, "intervention": {"risk": 0.5}})
            for seed in range(400)]
    bodies = local.report_payloads({}, EchoExperiment, many, max_bytes=20_000)
    assert len(bodies) > 1 and all(len(json.dumps(b).encode()) <= 20_000 for b in bodies)
    assert [run["seed"] for b in bodies for run in b["runs"]] == list(range(400))

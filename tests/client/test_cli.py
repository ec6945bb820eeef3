"""Findings as code and the ``interp-registry`` command line against a live registry with a real
Celery worker: submit a YAML finding, submit it again (nothing changes), reproduce it with the echo
plugin, wait on the live stream, read effects and measurements as DataFrames, export CSV and JSON,
show verdicts with --fail-on exit codes, watch a reproduction whose worker run logged curves and read
them back as a DataFrame; malformed files name their line and field; login stores
the token with mode 0600."""

from __future__ import annotations

import csv
import json
import os
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from interp_registry import cli
from interp_registry.client import Registry
from interp_registry.findings import FindingFileError, parse

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]

FINDING_YAML = """\
# An echo finding: the intervention halves the risk score and leaves skill alone.
key: echo-halves-risk
title: Echo halves risk
kind: fix
summary: The echo plugin's intervention arm subtracts 0.5 from risk.
tags: [echo, cli-test]
references: ["https://example.org/echo"]
claims:
  - metric: risk
    direction: decrease
    min_relative_effect: 0.3
    statement: risk drops by at least 30%
  - metric: skill
    direction: non_inferior
    margin: 0.1
experiments:
  - plugin: echo
    preset: tiny
    params:
      effect: -0.5
      noise: 0.1
    default_seeds: 3
    reproduce: false
"""


def run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def _counts(finding_id: int) -> dict[str, int]:
    from registry.events.models import Event
    from registry.findings.models import Claim, Finding
    from registry.reproductions.models import Experiment, Reproduction

    return {
        "findings": Finding.objects.count(),
        "claims": Claim.objects.filter(finding_id=finding_id).count(),
        "experiments": Experiment.objects.filter(finding_id=finding_id).count(),
        "reproductions": Reproduction.objects.filter(experiment__finding_id=finding_id).count(),
        "events": Event.objects.count(),
        "updated_at": Finding.objects.get(pk=finding_id).updated_at.isoformat(),
    }


@pytest.mark.redis
@pytest.mark.worker
def test_submit_reproduce_watch_show_export(server, token, celery_worker, tmp_path, capsys):
    path = tmp_path / "finding.yaml"
    path.write_text(FINDING_YAML)
    auth = ["--url", server, "--token", token]

    code, out, err = run_cli(capsys, "submit", str(path), *auth)
    assert code == 0, err
    url = out.splitlines()[0].split()[0]
    assert url.startswith(f"{server}/findings/") and "(echo-halves-risk: created)" in out
    finding_id = int(url.rstrip("/").rsplit("/", 1)[1])
    with Registry(server, token=token) as reg:
        finding = reg.finding(finding_id)
    assert finding.title == "Echo halves risk" and sorted(finding.tags) == ["cli-test", "echo", "key-echo-halves-risk"]
    assert {(c.metric, c.direction) for c in finding.claims} == {("risk", "decrease"), ("skill", "non_inferior")}
    assert [(e.plugin, e.params["effect"], e.params["noise"]) for e in finding.experiments] == [("echo", -0.5, 0.1)]

    # the same file again: nothing is written (no PATCH, no new claim, experiment or event)
    before = _counts(finding_id)
    code, out, err = run_cli(capsys, "submit", str(path), *auth, "--json")
    assert code == 0, err
    [result] = json.loads(out)
    assert result == {"finding": finding_id, "url": url, "api_url": f"/api/v1/findings/{finding_id}/",
                      "created": False, "changed": False, "changes": [], "notes": []}
    assert _counts(finding_id) == before

    # reproduce by key, wait on the live stream: three seeds on the real worker
    code, out, err = run_cli(capsys, "reproduce", "echo-halves-risk", "--seeds", "3", "--wait", *auth, "--json")
    assert code == 0, err
    [reproduction] = json.loads(out)
    assert reproduction["state"] == "finished"
    assert sorted(run["seed"] for run in reproduction["runs"]) == [0, 1, 2]
    assert {run["state"] for run in reproduction["runs"]} == {"succeeded"}

    with Registry(server) as anonymous:  # reading needs no token
        runs = anonymous.runs(reproduction=reproduction["id"])
        assert sorted(r.seed for r in runs) == [0, 1, 2] and {r.state for r in runs} == {"succeeded"}
        run = anonymous.run(runs[0].id)
        assert run.plugin == "echo" and run.plugin_version == "1.0.0" and len(run.measurements) == 6
        assert anonymous.reproduction(reproduction["id"]).finished
        effects = anonymous.effects(finding_id)
        assert not effects.pending and effects.n_runs == 3
        frame = anonymous.effects(finding_id, as_frame=True)
        verdicts = dict(zip(frame["metric"], frame["claim_verdict"], strict=True))
        assert verdicts == {"risk": "confirmed", "skill": "inconclusive"}  # skill: zero effect, 3 seeds
        risk = frame[frame["metric"] == "risk"].iloc[0]
        assert risk["effect_relative_change"] == pytest.approx(-0.54, abs=0.03)
        assert risk["n_seeds"] == 3 and risk["plugin"] == "echo"
        measurements = anonymous.measurements(finding_id, as_frame=True)
        assert len(measurements) == 3 * 2 * 3  # seeds x arms x metrics
        assert set(measurements["metric"]) == {"risk", "skill", "width"}
        width = measurements[measurements["metric"] == "width"]["value"]
        assert list(width) == [3.0] * 6

    # show: the claims table, and exit codes a CI job can rely on
    code, out, err = run_cli(capsys, "show", str(finding_id), *auth)
    assert code == 0
    assert "Echo halves risk" in out and "confirmed" in out and "inconclusive" in out
    assert "risk" in out.split("\n", 3)[3]
    assert run_cli(capsys, "show", "echo-halves-risk", "--fail-on", "refuted", *auth)[0] == 0
    code, out, err = run_cli(capsys, "show", "echo-halves-risk", "--fail-on", "inconclusive", *auth)
    assert code == cli.EXIT_CHECK_FAILED and "1 claim(s) inconclusive" in err
    code, out, err = run_cli(capsys, "show", "echo-halves-risk", "--json", *auth)
    shown = json.loads(out)
    assert shown["status"] == "partially_reproduced"
    assert {c["metric"]: c["verdict"] for c in shown["claims"]} == verdicts

    # export: CSV to a file, JSON to standard output
    target = tmp_path / "runs.csv"
    code, out, err = run_cli(capsys, "export", "echo-halves-risk", "--format", "csv", "-o", str(target), *auth)
    assert code == 0 and "18 rows written" in err
    with target.open() as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 18 and {r["arm"] for r in rows} == {"baseline", "intervention"}
    assert {r["seed"] for r in rows} == {"0", "1", "2"} and {r["run"] for r in rows} == {
        str(run["id"]) for run in reproduction["runs"]}
    code, out, err = run_cli(capsys, "export", str(finding_id), "--format", "json", *auth)
    exported = json.loads(out)
    assert len(exported) == 18
    assert sorted((r["run"], r["arm"], r["metric"]) for r in exported) == sorted(
        (int(r["run"]), r["arm"], r["metric"]) for r in rows)
    code, out, err = run_cli(capsys, "export", str(finding_id), "--format", "json", "--table", "effects", *auth)
    assert {r["metric"]: r["claim_verdict"] for r in json.loads(out)} == verdicts
    parquet = tmp_path / "runs.parquet"
    assert run_cli(capsys, "export", str(finding_id), "--format", "parquet", "-o", str(parquet), *auth)[0] == 0
    import pandas

    assert len(pandas.read_parquet(parquet)) == 18

    # submitting the file again after the runs still changes nothing
    before = _counts(finding_id)
    code, out, err = run_cli(capsys, "submit", str(path), *auth)
    assert code == 0 and "(echo-halves-risk: unchanged)" in out
    assert _counts(finding_id) == before

    # an edited file: the title is PATCHed; the claim, fixed now that runs exist, gets a new version
    path.write_text(FINDING_YAML.replace("title: Echo halves risk", "title: Echo halves the risk")
                    .replace("min_relative_effect: 0.3", "min_relative_effect: 0.4"))
    code, out, err = run_cli(capsys, "submit", str(path), *auth, "--json")
    assert code == 0, err
    [result] = json.loads(out)
    assert result["changed"] and not result["created"]
    assert result["changes"][0] == f"updated finding {finding_id}: title"
    assert "superseded by claim" in result["changes"][1]
    with Registry(server, token=token) as reg:
        finding = reg.finding(finding_id)
        assert finding.title == "Echo halves the risk"
        assert {c.metric: c.min_relative_effect for c in finding.claims} == {"risk": 0.4, "skill": None}
        assert len(reg.claims(finding_id, history=True)) == 3
    assert _counts(finding_id)["experiments"] == 1

    # the client's own wait, polling instead of the stream, with progress bars (one, or one per run)
    capsys.readouterr()
    with Registry(server, token=token) as reg:
        [experiment] = reg.experiments(finding_id)
        again = reg.reproduce(experiment, seeds=[7])
        done = reg.wait(again, stream=False, progress=True, poll_interval=0.3, timeout=120)
        assert done.finished and [r.state for r in done.runs] == ["succeeded"]
        assert f"reproduction {again.id} (echo)" in capsys.readouterr().err
        third = reg.reproduce(experiment, seeds=[8, 9])
        done = reg.wait(third, progress=True, per_run=True, timeout=120)
        assert [r.state for r in done.runs] == ["succeeded", "succeeded"]
        bars = capsys.readouterr().err
        for run in done.runs:
            assert f"run {run.id} (seed {run.seed}): 100%" in bars

    # curves a worker's run logged (the echo_curves fake: ctx.log_series), read back through the
    # client as a DataFrame; the CLI's watch follows that reproduction until it finishes
    with Registry(server, token=token) as reg:
        curved = reg.create_experiment(finding_id, plugin="echo_curves", params={"curve_points": 3, "effect": -0.5},
                                       reproduce=False)
        queued = reg.reproduce(curved, seeds=[4])
    code, out, err = run_cli(capsys, "watch", "--reproduction", str(queued.id), *auth)
    assert code == 0, err
    assert out.strip() == f"reproduction {queued.id}: finished (1/1 runs succeeded)"
    code, out, err = run_cli(capsys, "watch", "echo-halves-risk", "--json", *auth)  # nothing running: the latest
    assert code == 0, err
    assert {r["id"] for r in json.loads(out)} == {third.id, queued.id}
    with Registry(server) as anonymous:
        [run] = anonymous.reproduction(queued.id).runs
        curve = anonymous.series(run=run.id, as_frame=True)
        assert list(zip(curve["arm"], curve["name"], curve["step"], strict=True)) == [
            ("baseline", "loss", 0), ("baseline", "loss", 1), ("baseline", "loss", 2),
            ("intervention", "loss", 0), ("intervention", "loss", 1), ("intervention", "loss", 2)]
        assert list(curve["value"]) == pytest.approx([1.04, 2.04, 3.04, 0.54, 1.54, 2.54])
        assert set(curve["run"]) == {run.id} and set(curve["seed"]) == {4}
        of_finding = anonymous.series(finding_id, as_frame=True)  # only the echo_curves run logged any
        assert list(of_finding["value"]) == list(curve["value"]) and set(of_finding["experiment"]) == {curved.id}
    code, out, err = run_cli(capsys, "export", "echo-halves-risk", "--format", "json", "--table", "series", *auth)
    assert code == 0, err
    assert [(r["arm"], r["step"], r["value"]) for r in json.loads(out)] == list(
        zip(curve["arm"], curve["step"], curve["value"], strict=True))


def test_a_malformed_file_names_line_and_field(tmp_path):
    text = textwrap.dedent("""\
        key: Bad Key
        title: A finding
        kind: fix
        claims:
          - metric: risk
            direction: sideways
          - metric: risk
            direction: decrease
            min_relative_effec: 0.3
        experiments:
          - params: {}
        """)
    with pytest.raises(FindingFileError) as error:
        parse(text, "finding.yaml")
    found = {(e.line, e.field) for e in error.value.errors}
    assert found == {
        (1, "key"),  # pattern
        (6, "claims[0].direction"),  # not one of ...
        (7, "claims[1].metric"),  # a second claim on 'risk'
        (9, "claims[1].min_relative_effec"),  # unknown field
        (11, "experiments[0].plugin"),  # required
    }, error.value.errors
    message = str(error.value)
    assert "finding.yaml, line 6, column 16: claims[0].direction: 'sideways' is not one of" in message
    assert "line 9, column 5: claims[1].min_relative_effec: unknown field (allowed: direction, margin" in message
    with pytest.raises(FindingFileError, match=r"line 3, column 1: \(top level\): not valid YAML"):
        parse("key: x\ntitle: [unclosed\n", "broken.yaml")
    with pytest.raises(FindingFileError, match=r"line 3, column 1: title: duplicate key"):
        parse("key: x\ntitle: a\ntitle: b\nkind: fix\n")


def test_submit_checks_params_against_the_plugins_schema_from_the_server(server, token, tmp_path, capsys):
    path = tmp_path / "finding.yaml"
    path.write_text(FINDING_YAML.replace("noise: 0.1", "noise: lots").replace("preset: tiny", "preset: huge")
                    + "  - plugin: nonesuch\n")
    code, out, err = run_cli(capsys, "submit", str(path), "--url", server, "--token", token)
    assert code == cli.EXIT_INVALID_FILE
    lines = err.strip().splitlines()
    assert lines[0].startswith(f"{path}, line 18, column 13: experiments[0].preset: plugin 'echo' has no preset 'huge'")
    assert lines[1].startswith(f"{path}, line 24, column 13: experiments[1].plugin: no plugin called 'nonesuch'")
    path.write_text(FINDING_YAML.replace("noise: 0.1", "noise: lots"))
    code, out, err = run_cli(capsys, "submit", str(path), "--check", "--url", server, "--token", token)
    assert code == cli.EXIT_INVALID_FILE
    assert f"{path}, line 21, column 14: experiments[0].params.noise: 'lots' is not of type 'number'" in err
    from registry.findings.models import Finding

    assert not Finding.objects.exists()  # nothing was sent


def test_cli_errors_and_anonymous_writes(server, token, tmp_path, capsys):
    path = tmp_path / "finding.yaml"
    path.write_text(FINDING_YAML)
    code, out, err = run_cli(capsys, "submit", str(path), "--url", server)  # no token
    assert code == cli.EXIT_REGISTRY_ERROR
    assert "the registry answered 401" in err
    code, out, err = run_cli(capsys, "show", "no-such-key", "--url", server)
    assert code == cli.EXIT_REGISTRY_ERROR and "no finding with the key 'no-such-key'" in err
    code, out, err = run_cli(capsys, "plugins", "--url", "http://127.0.0.1:9")
    assert code == cli.EXIT_UNREACHABLE
    code, out, err = run_cli(capsys, "plugins", "--url", server, "--json")
    assert code == 0 and "echo" in {p["name"] for p in json.loads(out)}
    code, out, err = run_cli(capsys, "landscape", "--url", server)
    assert code == 0 and out.strip() == "(no findings)"


def test_login_stores_the_token_with_mode_0600_and_commands_use_it(server, token, tmp_path):
    env = {**os.environ, "INTERP_REGISTRY_CONFIG_DIR": str(tmp_path / "config")}
    env.pop("INTERP_REGISTRY_URL", None)
    env.pop("INTERP_REGISTRY_TOKEN", None)
    command = [str(Path(sys.executable).with_name("interp-registry"))]
    result = subprocess.run([*command, "login", "--url", server], input=token + "\n", capture_output=True,
                            text=True, env=env, cwd=tmp_path, timeout=120)
    assert result.returncode == 0, result.stderr
    assert f"signed in to {server} as " in result.stdout
    stored = tmp_path / "config" / "config.json"
    assert stat.S_IMODE(stored.stat().st_mode) == 0o600
    assert json.loads(stored.read_text()) == {"url": server, "token": token}
    (tmp_path / "finding.yaml").write_text(FINDING_YAML)
    result = subprocess.run([*command, "submit", "finding.yaml"], capture_output=True, text=True, env=env,
                            cwd=tmp_path, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"{server}/findings/")
    result = subprocess.run([*command, "login", "--url", server], input="ifr_wrong\n", capture_output=True,
                            text=True, env=env, cwd=tmp_path, timeout=120)
    assert result.returncode == cli.EXIT_REGISTRY_ERROR and "401" in result.stderr
    assert json.loads(stored.read_text())["token"] == token  # a wrong token is not stored


def test_subscribe_creates_a_webhook_and_shows_its_secret_once(server, token, capsys):
    auth = ["--url", server, "--token", token]
    with Registry(server, token=token) as reg:
        finding = reg.create_finding(title="Watched", kind="observation", tags=["key-watched"])
    code, out, err = run_cli(capsys, "subscribe", "http://127.0.0.1:9/hook", "--finding", "watched", *auth, "--json")
    assert code == 0, err
    created = json.loads(out)
    assert created["finding"] == finding.id and created["url"] == "http://127.0.0.1:9/hook"
    assert created["secret"].startswith("whsec_")
    with Registry(server, token=token) as reg:
        [listed] = reg.subscriptions()
        assert listed.id == created["id"] and listed.secret is None  # shown once
        reg.delete_subscription(listed)
        assert reg.subscriptions() == []
    code, out, err = run_cli(capsys, "subscribe", "not a url", *auth)
    assert code == cli.EXIT_REGISTRY_ERROR and "url:" in err  # the server's field message


def test_the_readmes_finding_file_is_valid_for_the_built_in_plugins():
    """The example in README.md ("From the command line") passes the schema and the plugins' checks."""
    from interp_registry.client import Plugin
    from interp_registry.findings import check_against_plugins

    from plugins.registry import all_plugins
    from registry.api.views import plugin_describe

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    section = readme[readme.index("**Findings as code.**"):]
    block = section[section.index("```yaml\n") + len("```yaml\n"):section.index("```\n", section.index("```yaml"))]
    finding = parse(block, "README.md")
    assert finding.key == "resize-conv-checkerboard"
    plugins = {name: Plugin.model_validate(plugin_describe(name)) for name in all_plugins()}
    check_against_plugins(finding, plugins)
    with pytest.raises(FindingFileError, match=r"experiments\[0\].params.steps"):
        check_against_plugins(parse(block.replace("{steps: 300}", "{steps: many}")), plugins)


def test_builds_on_links_findings_by_key(server, token, tmp_path, capsys):
    auth = ["--url", server, "--token", token]
    parent = tmp_path / "parent.yaml"
    parent.write_text("key: overlap-theory\ntitle: Uneven overlap paints checkerboards\nkind: theory\n")
    child = tmp_path / "child.yaml"
    child.write_text("key: resize-fix\ntitle: Resize-convolution\nkind: fix\nbuilds_on:\n  - overlap-theory\n")
    code, out, err = run_cli(capsys, "submit", str(parent), str(child), *auth, "--json")
    assert code == 0, err
    parent_result, child_result = json.loads(out)
    assert parent_result["created"] and child_result["created"]
    with Registry(server) as reg:
        assert reg.finding(child_result["finding"]).builds_on == [parent_result["finding"]]
        assert reg.finding(parent_result["finding"]).built_upon_by == [child_result["finding"]]
    code, out, err = run_cli(capsys, "submit", str(parent), str(child), *auth, "--json")
    assert [r["changed"] for r in json.loads(out)] == [False, False]
    orphan = tmp_path / "orphan.yaml"
    orphan.write_text("key: orphan\ntitle: Orphan\nkind: fix\nbuilds_on: [12345678, no-such-theory]\n")
    code, out, err = run_cli(capsys, "submit", str(orphan), *auth)
    assert code == cli.EXIT_INVALID_FILE
    assert f"{orphan}, line 4, column 23: builds_on[1]: no finding with the key 'no-such-theory'" in err

"""``interp-registry``: the registry from the command line.

    interp-registry login --url http://127.0.0.1:8000          # asks for a token, stores it (mode 0600)
    interp-registry submit finding.yaml                        # validate, create or update, print the URL
    interp-registry reproduce resize-conv-checkerboard --seeds 5 --wait
    interp-registry watch resize-conv-checkerboard             # progress until its runs finish
    interp-registry show resize-conv-checkerboard --fail-on refuted
    interp-registry export resize-conv-checkerboard --format csv > runs.csv
    interp-registry landscape --tag vision
    interp-registry plugins
    interp-registry run-local probe_decay --params params.yaml --seeds 3 --report my-finding

A FINDING is a finding id or the ``key`` of a finding submitted as code. ``--json`` prints JSON for
scripts instead of tables. The registry and token come from ``--url``/``--token``, else the
``INTERP_REGISTRY_URL``/``INTERP_REGISTRY_TOKEN`` environment variables, else what ``login``
stored, else ``http://127.0.0.1:8000`` and no token (reading is public).

Exit codes: 0 success; 1 a check failed (``show --fail-on``: a claim with that verdict or worse;
``watch``/``reproduce --wait``: a run did not succeed); 2 bad usage; 3 an invalid finding file
(each error names its line and field); 4 the registry refused the request (its message and field
errors are printed); 5 the registry could not be reached; 6 a wait timed out.
"""

from __future__ import annotations

import argparse
import getpass
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

EXIT_OK = 0
EXIT_CHECK_FAILED = 1
EXIT_USAGE = 2
EXIT_INVALID_FILE = 3
EXIT_REGISTRY_ERROR = 4
EXIT_UNREACHABLE = 5
EXIT_TIMEOUT = 6

DEFAULT_URL = "http://127.0.0.1:8000"
VERDICT_ORDER = {"confirmed": 0, "inconclusive": 1, "refuted": 2}


# ---------------------------------------------------------------- configuration


def config_dir() -> Path:
    """Where ``login`` stores the token: ``INTERP_REGISTRY_CONFIG_DIR``, else the platform's user
    configuration folder (``$XDG_CONFIG_HOME`` or ``~/.config`` on Linux, ``~/Library/Application
    Support`` on macOS, ``%APPDATA%`` on Windows), in ``interp-registry/``."""
    override = os.environ.get("INTERP_REGISTRY_CONFIG_DIR")
    if override:
        return Path(override)
    if sys.platform == "win32":
        base = Path(os.environ.get("APPDATA") or Path.home() / "AppData" / "Roaming")
    elif sys.platform == "darwin":
        base = Path.home() / "Library" / "Application Support"
    else:
        base = Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config")
    return base / "interp-registry"


def config_path() -> Path:
    return config_dir() / "config.json"


def load_config() -> dict[str, Any]:
    try:
        return json.loads(config_path().read_text())
    except (OSError, ValueError):
        return {}


def save_config(config: dict[str, Any]) -> Path:
    path = config_path()
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    # an older file keeps its mode through O_CREAT: made private before the token is written
    if hasattr(os, "fchmod"):
        os.fchmod(descriptor, 0o600)
    with os.fdopen(descriptor, "w") as handle:
        json.dump(config, handle, indent=2)
    os.chmod(path, 0o600)
    return path


# ---------------------------------------------------------------- output helpers


class Failure(Exception):
    def __init__(self, code: int, message: str):
        super().__init__(message)
        self.code = code


def table(rows: list[dict[str, Any]], columns: Sequence[str]) -> str:
    def cell(value: Any) -> str:
        if value is None:
            return "-"
        if isinstance(value, float):
            return f"{value:.4g}"
        if isinstance(value, list | tuple):
            return ",".join(str(v) for v in value)
        return str(value)

    cells = [[cell(row.get(c)) for c in columns] for row in rows]
    widths = [max([len(c), *(len(r[i]) for r in cells)]) for i, c in enumerate(columns)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True)).rstrip()]
    lines += ["  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)).rstrip() for r in cells]
    return "\n".join(lines)


def emit(args: argparse.Namespace, data: Any, human: str) -> None:
    if args.json:
        print(json.dumps(data, indent=2, default=str))
    else:
        print(human)


def registry_for(args: argparse.Namespace) -> Any:
    from interp_registry.client import Registry

    config = load_config()
    url = args.url or os.environ.get("INTERP_REGISTRY_URL") or config.get("url") or DEFAULT_URL
    token = args.token or os.environ.get("INTERP_REGISTRY_TOKEN")
    if not token and _same_registry(url, config.get("url")):
        token = config.get("token")  # the stored token goes to the registry it was stored for only
    return Registry(url, token=token or None)


def _same_registry(url: str, stored: Any) -> bool:
    return isinstance(stored, str) and url.rstrip("/") == stored.rstrip("/")


def resolve_finding(registry: Any, value: str) -> Any:
    from interp_registry.findings import find_by_key

    if value.isdigit():
        return registry.finding(int(value))
    finding = find_by_key(registry, value)
    if finding is None:
        raise Failure(EXIT_REGISTRY_ERROR, f"no finding with the key {value!r} (nor is it an id)")
    return finding


# ---------------------------------------------------------------- commands


def cmd_login(args: argparse.Namespace) -> int:
    from interp_registry.client import Registry

    url = args.url or os.environ.get("INTERP_REGISTRY_URL") or load_config().get("url") or DEFAULT_URL
    token = args.token or os.environ.get("INTERP_REGISTRY_TOKEN")
    if not token:
        if sys.stdin.isatty():
            token = getpass.getpass(f"API token for {url} (interp-registry-server createuser NAME prints one): ")
        else:
            token = sys.stdin.readline()
    token = (token or "").strip()
    if not token:
        raise Failure(EXIT_USAGE, "no token given")
    with Registry(url, token=token) as registry:
        quota = registry.request("GET", "me/quota/")  # 401 for a wrong token
    path = save_config({"url": url, "token": token})
    user = quota.get("user") if isinstance(quota, dict) else None
    emit(args, {"url": url, "user": user, "config": str(path)}, f"signed in to {url} as {user}; token stored in {path}")
    return EXIT_OK


def cmd_submit(args: argparse.Namespace) -> int:
    from interp_registry.findings import check_against_plugins, load, submit

    findings = [load(path) for path in args.files]  # every file checked before anything is sent
    with registry_for(args) as registry:
        plugins = {p.name: p for p in registry.plugins()}
        for finding in findings:
            check_against_plugins(finding, plugins)
        if args.check:
            emit(args, [{"file": f.path, "key": f.key, "valid": True} for f in findings],
                 "\n".join(f"{f.path}: valid" for f in findings))
            return EXIT_OK
        results = []
        for finding in findings:
            result = submit(registry, finding, plugins=plugins, check=False)
            results.append(result)
            if not args.json:
                state = "created" if result.created else ("updated" if result.changed else "unchanged")
                print(f"{result.web_url}  ({finding.key}: {state})")
                for line in result.changes:
                    print(f"  {line}")
                for line in result.notes:
                    print(f"  note: {line}", file=sys.stderr)
        if args.json:
            print(json.dumps([r.to_dict() for r in results], indent=2))
    return EXIT_OK


def _watch(args: argparse.Namespace, registry: Any, reproductions: list[Any]) -> int:
    finished = []
    for reproduction in reproductions:
        # a progress bar per run on a terminal (none with --json or when not a terminal)
        finished.append(registry.wait(reproduction, timeout=args.timeout, progress=False if args.json else None,
                                      per_run=True))
    failed = [(r.id, run.id, run.state, run.error) for r in finished for run in r.runs if run.state != "succeeded"]
    data = [r.to_dict() for r in finished]
    lines = [f"reproduction {r.id}: {r.state} ({sum(run.state == 'succeeded' for run in r.runs)}/{len(r.runs)} "
             f"runs succeeded)" for r in finished]
    lines += [f"  run {run}: {state} {error[:200]}" for _, run, state, error in failed]
    emit(args, data, "\n".join(lines) or "nothing to watch")
    return EXIT_CHECK_FAILED if failed else EXIT_OK


def cmd_reproduce(args: argparse.Namespace) -> int:
    with registry_for(args) as registry:
        finding = resolve_finding(registry, args.finding)
        experiments = [e for e in registry.experiments(finding.id) if not e.retracted_at]
        if not experiments:
            raise Failure(EXIT_REGISTRY_ERROR, f"finding {finding.id} has no experiment to reproduce")
        reproductions = [
            registry.reproduce(e.id, n_seeds=args.seeds, device="gpu" if args.gpu else None) for e in experiments
        ]
        if not args.json:
            for r in reproductions:
                print(f"reproduction {r.id} of experiment {r.experiment} ({r.plugin}): "
                      f"{len(r.runs)} runs queued on {r.device}")
        if args.wait:
            return _watch(args, registry, reproductions)
        if args.json:
            print(json.dumps([r.to_dict() for r in reproductions], indent=2))
    return EXIT_OK


def cmd_watch(args: argparse.Namespace) -> int:
    with registry_for(args) as registry:
        if args.reproduction:
            reproductions = [registry.reproduction(args.reproduction)]
        else:
            if not args.finding:
                raise Failure(EXIT_USAGE, "give a FINDING or --reproduction ID")
            finding = resolve_finding(registry, args.finding)
            reproductions = [r for e in registry.experiments(finding.id)
                             for r in registry.reproductions(experiment=e.id) if not r.finished]
            if not reproductions:  # nothing running: the latest of each experiment
                latest = {}
                for e in registry.experiments(finding.id):
                    for r in registry.reproductions(experiment=e.id):
                        if r.id > getattr(latest.get(e.id), "id", 0):
                            latest[e.id] = r
                reproductions = list(latest.values())
        return _watch(args, registry, reproductions)


def _effect_text(effect: dict[str, Any] | None) -> str:
    if not effect:
        return "-"
    for value, low, high, scale in (("relative_change", "relative_ci_low", "relative_ci_high", 100.0),
                                     ("effect", "effect_ci_low", "effect_ci_high", 1.0)):
        if effect.get(value) is not None:
            unit = "%" if scale == 100.0 else f" {effect.get('effect_unit', '')}".rstrip()
            text = f"{effect[value] * scale:+.3g}{unit}"
            if effect.get(low) is not None and effect.get(high) is not None:
                text += f" [{effect[low] * scale:+.3g}{unit}, {effect[high] * scale:+.3g}{unit}]"
            return text
    return "-"


def cmd_show(args: argparse.Namespace) -> int:
    with registry_for(args) as registry:
        finding = resolve_finding(registry, args.finding)
        effects = registry.effects(finding.id)
    rows = []
    for claim in effects.claims:
        non_inferior = claim.get("direction") == "non_inferior"
        threshold = claim.get("margin") if non_inferior else claim.get("min_relative_effect")
        rows.append({
            "claim": claim.get("claim"), "metric": claim.get("metric"), "direction": claim.get("direction"),
            "threshold": threshold, "unit": claim.get("threshold_unit"), "verdict": claim.get("verdict"),
            "effect (95% CI)": _effect_text(claim.get("effect")),
            "seeds": next((e.get("n_seeds") for e in claim.get("experiments", [])
                           if e.get("experiment") == claim.get("experiment")), None),
            "evidence": claim.get("evidence") or None,
        })
    scores = {axis: (effects.axis_scores.get(axis) or {}).get("score") for axis in ("safety", "capability")}
    data = {"finding": finding.to_dict(), "status": effects.status, "pending": effects.pending,
            "claims": rows, "axis_scores": effects.axis_scores, "effects": effects.to_dict()}
    human = [f"#{finding.id} {finding.title}", f"status: {effects.status}" + (" (recompute pending)" if effects.pending
                                                                               else "")
             + f"   runs: {effects.n_runs}   safety score: {_num(scores['safety'])}   "
               f"capability score: {_num(scores['capability'])}", ""]
    human.append(table(rows, ["claim", "metric", "direction", "threshold", "unit", "verdict", "effect (95% CI)",
                              "seeds", "evidence"]) if rows else "(no claims)")
    emit(args, data, "\n".join(human))
    if args.fail_on:
        worst = VERDICT_ORDER[args.fail_on]
        bad = [r for r in rows if VERDICT_ORDER.get(r["verdict"] or "inconclusive", 1) >= worst]
        if bad:
            print(f"{len(bad)} claim(s) {args.fail_on}" + (" or refuted" if args.fail_on == "inconclusive" else ""),
                  file=sys.stderr)
            return EXIT_CHECK_FAILED
    return EXIT_OK


def _num(value: Any) -> str:
    return "-" if value is None else f"{value:+.3g}"


def cmd_landscape(args: argparse.Namespace) -> int:
    with registry_for(args) as registry:
        data = registry.landscape(tag=args.tag, kind=args.kind, plugin=args.plugin)
    rows = []
    for point in registry.landscape_points(data):
        rows.append({**point, "safety": (point.get("safety") or {}).get("score"),
                     "capability": (point.get("capability") or {}).get("score")})
    emit(args, data, table(rows, ["finding", "title", "kind", "status", "safety", "capability", "lean", "n_runs"])
         if rows else "(no findings)")
    return EXIT_OK


def cmd_export(args: argparse.Namespace) -> int:
    with registry_for(args) as registry:
        finding = resolve_finding(registry, args.finding)
        if args.table == "effects":
            rows = registry.effects(finding.id).claim_rows()
        elif args.table == "series":
            rows = registry.series(finding.id)
        else:
            rows = registry.measurements(finding.id)
    output = args.output
    if args.format == "json":
        text = json.dumps(rows, indent=2, default=str)
        if output:
            Path(output).write_text(text + "\n")
        else:
            print(text)
    elif args.format == "csv":
        import csv

        columns = list(dict.fromkeys(k for row in rows for k in row))
        handle = open(output, "w", newline="") if output else sys.stdout  # noqa: SIM115
        try:
            writer = csv.DictWriter(handle, fieldnames=columns)
            writer.writeheader()
            writer.writerows(rows)
        finally:
            if output:
                handle.close()
    else:  # parquet
        if not output:
            raise Failure(EXIT_USAGE, "--format parquet needs --output FILE")
        from interp_registry.client import _pandas

        _pandas().DataFrame(rows).to_parquet(output)
    if output:
        print(f"{len(rows)} rows written to {output}", file=sys.stderr)
    return EXIT_OK


def cmd_plugins(args: argparse.Namespace) -> int:
    with registry_for(args) as registry:
        plugins = registry.plugins()
    rows = [{"name": p.name, "version": p.version, "available": p.available,
             "metrics": [m.get("name") for m in p.metrics], "presets": sorted(p.presets),
             "error": p.error} for p in plugins]
    emit(args, [p.to_dict() for p in plugins], table(rows, ["name", "version", "available", "metrics", "presets",
                                                            "error"]))
    return EXIT_OK


def cmd_subscribe(args: argparse.Namespace) -> int:
    with registry_for(args) as registry:
        fields: dict[str, Any] = {"name": args.name or f"webhook to {args.webhook}", "channel": "webhook",
                                  "url": args.webhook}
        if args.finding:
            fields["finding"] = resolve_finding(registry, args.finding).id
        if args.tag:
            fields["tag"] = args.tag
        if args.plugin:
            fields["plugin"] = args.plugin
        subscription = registry.create_subscription(**fields)
    emit(args, subscription.to_dict(), f"subscription {subscription.id} created; signing secret (shown once): "
                                       f"{subscription.secret}")
    return EXIT_OK


def _load_params_file(path: str) -> dict[str, Any]:
    """A YAML (or JSON) mapping of parameters; a malformed file names its line."""
    import yaml

    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise Failure(EXIT_USAGE, f"cannot read {path}: {exc.strerror}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = f"line {mark.line + 1}: " if mark is not None else ""
        raise Failure(EXIT_INVALID_FILE, f"{path}: {line}not valid YAML: {exc.problem or exc}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise Failure(EXIT_INVALID_FILE, f"{path}: line 1: the parameters must be a mapping (name: value), "
                                         f"not a {type(data).__name__}")
    return data


def _report_target(args: argparse.Namespace, registry: Any, plugin: Any) -> tuple[Any, Any]:
    """The finding and experiment the results will be reported to, checked before anything runs."""
    if not registry.token:
        raise Failure(EXIT_USAGE, "--report needs a token: interp-registry login, --token or INTERP_REGISTRY_TOKEN")
    finding = resolve_finding(registry, args.report)
    if args.experiment is not None:
        experiment = registry.experiment(args.experiment)
        if experiment.finding != finding.id:
            raise Failure(EXIT_USAGE, f"experiment {experiment.id} belongs to finding {experiment.finding}, "
                                      f"not to finding {finding.id}")
    else:
        candidates = [e for e in registry.experiments(finding.id) if e.plugin == plugin.name and not e.retracted_at]
        if len(candidates) != 1:
            ids = ", ".join(str(e.id) for e in candidates) or "none"
            raise Failure(EXIT_USAGE, f"finding {finding.id} has {len(candidates)} experiments of plugin "
                                      f"{plugin.name!r} (ids: {ids}): choose one with --experiment ID")
        experiment = candidates[0]
    if experiment.plugin != plugin.name:
        raise Failure(EXIT_USAGE, f"experiment {experiment.id} runs plugin {experiment.plugin!r}, not {plugin.name!r}")
    if experiment.retracted_at:
        raise Failure(EXIT_USAGE, f"experiment {experiment.id} was retracted; it takes no more results")
    user = (registry.request("GET", "me/quota/") or {}).get("user")
    if user not in finding.authors:
        raise Failure(EXIT_REGISTRY_ERROR, f"only the authors of finding {finding.id} may report results of their "
                                           f"own runs ({user} is not one)")
    return finding, experiment


#: The largest seed the registry stores (a run's seed is a 32-bit signed integer).
MAX_SEED = 2**31 - 1


def cmd_run_local(args: argparse.Namespace) -> int:
    from interp_registry import local

    if args.experiment is not None and not args.report:
        raise Failure(EXIT_USAGE, "--experiment goes with --report FINDING")
    if args.seeds < 1:
        raise Failure(EXIT_USAGE, "--seeds must be at least 1")
    if args.first_seed < 0 or args.first_seed + args.seeds - 1 > MAX_SEED:
        # checked before anything runs: the registry refuses such seeds, so do numpy and torch
        raise Failure(EXIT_USAGE, f"the seeds must lie between 0 and {MAX_SEED} (--first-seed, --seeds)")
    try:
        plugin = local.load_plugin(args.plugin)
        given = _load_params_file(args.params) if args.params else None
        registry = registry_for(args) if args.report else None
        try:
            experiment = None
            if registry is not None:
                finding, experiment = _report_target(args, registry, plugin)
            if experiment is not None and given is None and args.preset is None:
                params = local.resolve_params(plugin, experiment.params, None)  # the experiment's own
            else:
                params = local.resolve_params(plugin, given, args.preset)
            if experiment is not None:
                expected = local.resolve_params(plugin, experiment.params, None)
                differing = sorted(k for k in set(params) | set(expected) if params.get(k) != expected.get(k))
                if differing:
                    raise Failure(EXIT_USAGE, f"params differ from experiment {experiment.id}'s in {differing}: "
                                              f"self-reported runs must use the experiment's parameters")
            seeds = list(range(args.first_seed, args.first_seed + args.seeds))
            device = "gpu" if args.device in ("gpu", "cuda") else "cpu"
            runner, results = local.run_seeds(plugin, params, seeds, device=device, runner=args.runner,
                                              threads=args.threads, timeout=args.timeout,
                                              progress=not args.json and sys.stderr.isatty())
            failed = [r for r in results if r.state != "succeeded"]
            data: dict[str, Any] = {"plugin": plugin.name, "version": plugin.version, "params": params,
                                    "device": device, "runner": runner, "runs": [r.to_dict() for r in results],
                                    "reported": None}
            if args.artifacts:
                written = local.save_artifacts(results, Path(args.artifacts))
                if not args.json:
                    print(f"{written} artifacts written to {args.artifacts}", file=sys.stderr)
            if registry is not None and experiment is not None and not failed:
                answers = [
                    registry.request("POST", f"experiments/{experiment.id}/self-reported-runs/batch/", json_body=body)
                    for body in local.report_payloads(params, plugin, results)  # each under the body limit
                ]
                data["reported"] = {**answers[0], **{key: [v for a in answers for v in a[key]]
                                                     for key in ("runs", "reproductions") if key in answers[0]},
                                    "measurements": sum(a.get("measurements", 0) for a in answers)}
        finally:
            if registry is not None:
                registry.close()
    except local.LocalRunError as exc:
        raise Failure(EXIT_USAGE, str(exc)) from None
    how = "a child process per seed" if runner == "child" else "in this process"
    rows = local.measurement_rows(plugin, results)
    columns = ["seed", "arm", *(m.name for m in plugin.metrics), "state"]
    if failed:
        columns.append("error")
    human = [f"{plugin.name} {plugin.version}: {len(results)} seeds on {device}, {how}", "",
             table(rows, columns)]
    for result in failed:
        human += ["", f"seed {result.seed} failed: {result.error}"]
    for result in results:
        human += [f"seed {result.seed}: {note}" for note in result.notes]
    if data["reported"]:
        reported = data["reported"]
        human += ["", f"reported {len(reported['runs'])} runs to experiment {experiment.id} of finding "
                      f"{finding.id} (self-reported reproductions {reported['reproductions']}): "
                      f"{registry.url}/findings/{finding.id}/"]
    elif args.report:
        human += ["", f"not reported: {len(failed)} of {len(results)} seeds failed"]
    emit(args, data, "\n".join(human))
    return EXIT_CHECK_FAILED if failed else EXIT_OK


# ---------------------------------------------------------------- parser


def parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--url", help="the registry's root URL (default: INTERP_REGISTRY_URL, login's, "
                                      f"or {DEFAULT_URL})")
    common.add_argument("--token", help="an API token (default: INTERP_REGISTRY_TOKEN or login's)")
    common.add_argument("--json", action="store_true", help="print JSON for scripts instead of tables")

    main = argparse.ArgumentParser(
        prog="interp-registry", description="The Interpretability Findings Registry from the command line.",
        epilog="exit codes: 0 ok, 1 a check failed, 2 bad usage, 3 invalid finding file, 4 the registry "
               "refused, 5 registry unreachable, 6 timed out",
    )
    commands = main.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = commands.add_parser("login", parents=[common], help="store a token for a registry (mode 0600)")
    p.set_defaults(handler=cmd_login)

    p = commands.add_parser("submit", parents=[common], help="create or update findings from YAML files")
    p.add_argument("files", nargs="+", metavar="FILE")
    p.add_argument("--check", action="store_true", help="only validate (against the plugins' schemas too)")
    p.set_defaults(handler=cmd_submit)

    p = commands.add_parser("reproduce", parents=[common], help="queue a reproduction of every experiment")
    p.add_argument("finding", metavar="FINDING", help="a finding id or key")
    p.add_argument("--seeds", type=int, help="seeds 0..N-1 (default: each experiment's default_seeds)")
    p.add_argument("--gpu", action="store_true", help="run on the GPU queue")
    p.add_argument("--wait", action="store_true", help="then watch until the runs finish")
    p.add_argument("--timeout", type=float, default=3600.0, help="seconds to wait (default 3600)")
    p.set_defaults(handler=cmd_reproduce)

    p = commands.add_parser("watch", parents=[common], help="progress of a finding's reproductions until they finish")
    p.add_argument("finding", nargs="?", metavar="FINDING")
    p.add_argument("--reproduction", type=int, help="one reproduction by id")
    p.add_argument("--timeout", type=float, default=3600.0)
    p.set_defaults(handler=cmd_watch)

    p = commands.add_parser("show", parents=[common], help="a finding's claims, effects and verdicts")
    p.add_argument("finding", metavar="FINDING")
    p.add_argument("--fail-on", choices=["inconclusive", "refuted"],
                   help="exit 1 when a claim is refuted (or, with 'inconclusive', not confirmed)")
    p.set_defaults(handler=cmd_show)

    p = commands.add_parser("landscape", parents=[common], help="safety against capability for every finding")
    p.add_argument("--tag")
    p.add_argument("--kind")
    p.add_argument("--plugin")
    p.set_defaults(handler=cmd_landscape)

    p = commands.add_parser("export", parents=[common], help="a finding's measurements or effects as a table")
    p.add_argument("finding", metavar="FINDING")
    p.add_argument("--format", choices=["csv", "json", "parquet"], default="csv")
    p.add_argument("--table", choices=["measurements", "effects", "series"], default="measurements",
                   help="measurements: one row per run, arm and metric; effects: one per claim and experiment; "
                   "series: the training curves, one row per run, arm, curve and step")
    p.add_argument("--output", "-o", help="a file (default: standard output; parquet needs one)")
    p.set_defaults(handler=cmd_export)

    p = commands.add_parser("run-local", parents=[common],
                            help="run an installed plugin on this machine, a child process per seed")
    p.add_argument("plugin", metavar="PLUGIN", help="an installed plugin's name, or module:Class")
    p.add_argument("--params", metavar="FILE", help="a YAML file of parameters (over --preset, if any)")
    p.add_argument("--preset", help="start from the plugin's named preset, e.g. tiny")
    p.add_argument("--seeds", type=int, default=3, help="how many seeds: --first-seed .. +N-1 (default 3)")
    p.add_argument("--first-seed", type=int, default=0)
    p.add_argument("--device", choices=["cpu", "gpu", "cuda"], default="cpu",
                   help="gpu/cuda: the first GPU (the CPU, with a note in the run's log, where there is none)")
    p.add_argument("--runner", choices=["auto", "child", "in-process"], default="auto",
                   help="auto: the workers' child-process runner when the server package is installed, else "
                        "in this process")
    p.add_argument("--threads", type=int, default=1, help="torch threads per run (default 1)")
    p.add_argument("--timeout", type=float, help="seconds a seed may run (child runner; default: no limit)")
    p.add_argument("--artifacts", metavar="DIR", help="save each seed's artifacts into DIR/seed-N/")
    p.add_argument("--report", metavar="FINDING",
                   help="post the results as self-reported runs of FINDING's experiment (authors only)")
    p.add_argument("--experiment", type=int, metavar="ID",
                   help="the experiment to report to (default: FINDING's one experiment of PLUGIN)")
    p.set_defaults(handler=cmd_run_local)

    p = commands.add_parser("plugins", parents=[common], help="the registry's plugins, metrics and presets")
    p.set_defaults(handler=cmd_plugins)

    p = commands.add_parser("subscribe", parents=[common], help="a webhook for a finding's, tag's or plugin's events")
    p.add_argument("webhook", metavar="URL")
    p.add_argument("--finding")
    p.add_argument("--tag")
    p.add_argument("--plugin")
    p.add_argument("--name")
    p.set_defaults(handler=cmd_subscribe)
    return main


def main(argv: Sequence[str] | None = None) -> int:
    import httpx

    from interp_registry.client import RegistryError
    from interp_registry.findings import FindingFileError

    args = parser().parse_args(argv)
    try:
        return args.handler(args)
    except FindingFileError as exc:
        print(str(exc), file=sys.stderr)
        return EXIT_INVALID_FILE
    except RegistryError as exc:
        print(f"error: the registry answered {exc.status}: {exc.detail}", file=sys.stderr)
        for name, messages in exc.errors.items():
            print(f"  {name}: {' '.join(messages)}", file=sys.stderr)
        return EXIT_REGISTRY_ERROR
    except httpx.TransportError as exc:
        print(f"error: the registry could not be reached: {exc}", file=sys.stderr)
        return EXIT_UNREACHABLE
    except TimeoutError as exc:
        print(f"error: timed out: {exc}", file=sys.stderr)
        return EXIT_TIMEOUT
    except Failure as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.code
    except ValueError as exc:  # e.g. two findings carry one key
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_REGISTRY_ERROR


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

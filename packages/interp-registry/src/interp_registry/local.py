"""``interp-registry run-local``: run an installed plugin on this machine, seed by seed.

Where the registry's server package is importable (``interp-registry-server`` installed next to the
plugin), each seed runs in a child process of its own through the very runner the registry's
workers use (``worker.sandbox.ChildRun``: a fresh interpreter, a scrubbed environment, a scratch
directory, the environment captured by the child); otherwise in this process through
:func:`interp_registry.sdk.run_locally`. Either way the results are checked as a worker checks them
(:func:`interp_registry.testing.validate_results`): a missing metric or a NaN fails the seed here.

The results can then be posted to the registry as self-reported runs of an experiment
(``POST /api/v1/experiments/{id}/self-reported-runs/batch/``), each with its environment and the
curves its plugin logged (``ctx.log_series``).
"""

from __future__ import annotations

import importlib
import json
import os
import platform
import signal
import socket
import sys
import time
from dataclasses import asdict, dataclass, field
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

from interp_registry.sdk import ENTRY_POINT_GROUP, Experiment, NotReached

RUNNERS = ("auto", "child", "in-process")
#: ``python -c`` in place of ``python -m worker.sandbox``: the folder given first is appended to
#: the end of sys.path (after the standard library and site-packages), then the sandbox runs.
CHILD_BOOTSTRAP = (
    "import runpy, sys; sys.path.append(sys.argv.pop(1)); "
    "runpy.run_module('worker.sandbox', run_name='__main__', alter_sys=True)"
)


class LocalRunError(Exception):
    """The plugin cannot be found or loaded, or its parameters are invalid (the message says which)."""


@dataclass
class SeedResult:
    seed: int
    state: str  # "succeeded" or "failed"
    measurements: dict[str, dict[str, Any]] = field(default_factory=dict)  # {arm: {metric: value or NotReached}}
    environment: dict[str, Any] = field(default_factory=dict)
    error: str = ""
    wall_time_s: float = 0.0
    artifacts: dict[str, tuple[bytes, str]] = field(default_factory=dict)
    #: the curves the plugin logged: ``[{arm, name, steps, values, logged}]`` (interp_registry.series)
    series: list[dict[str, Any]] = field(default_factory=list)
    #: what was refused on the way, in words (a malformed line of the child's curves file)
    notes: list[str] = field(default_factory=list)

    @property
    def hardware(self) -> str:
        return str(self.environment.get("device_name") or "cpu")

    def encoded(self) -> dict[str, dict[str, Any]]:
        """Measurements as the API takes them: a number, or ``{"censored": true, "value": budget}``."""
        return {arm: {metric: ({"censored": True, "value": float(v.budget)} if isinstance(v, NotReached) else v)
                      for metric, v in values.items()}
                for arm, values in self.measurements.items()}

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data.pop("artifacts")
        data["measurements"] = self.encoded()
        data["artifacts"] = sorted(self.artifacts)
        return data


# ---------------------------------------------------------------- plugins and parameters


def load_plugin(name: str) -> type[Experiment]:
    """An installed plugin by its entry-point name, or ``module:Class`` (a module on the path, or
    in the current directory)."""
    if ":" in name:
        module_name, _, qualname = name.partition(":")
        if os.getcwd() not in sys.path:
            sys.path.append(os.getcwd())
        try:
            target: Any = importlib.import_module(module_name)
            for part in qualname.split("."):
                target = getattr(target, part)
        except (ImportError, AttributeError) as exc:
            raise LocalRunError(f"cannot load {name!r}: {exc}") from None
    else:
        found = [ep for ep in entry_points(group=ENTRY_POINT_GROUP) if ep.name == name]
        if not found:
            installed = sorted({ep.name for ep in entry_points(group=ENTRY_POINT_GROUP)})
            raise LocalRunError(f"no installed plugin {name!r} (installed: {', '.join(installed) or 'none'}); "
                                f"or give module:Class")
        try:
            target = found[0].load()
        except Exception as exc:  # noqa: BLE001 - a broken plugin is the user's to fix
            raise LocalRunError(f"plugin {name!r} failed to load: {type(exc).__name__}: {exc}") from None
    from interp_registry.testing import declaration_errors

    problems = declaration_errors(target)
    if problems:
        raise LocalRunError(f"{name!r} is not a valid plugin: {'; '.join(problems)}")
    return target


def resolve_params(plugin: type[Experiment], params: dict[str, Any] | None, preset: str | None) -> dict[str, Any]:
    """``params`` over the ``preset``, validated by the plugin's model; every parameter filled in."""
    from pydantic import ValidationError

    if preset is not None and preset not in plugin.presets:
        raise LocalRunError(f"plugin {plugin.name!r} has no preset {preset!r} (it has {sorted(plugin.presets)})")
    merged = {**(plugin.presets.get(preset, {}) if preset else {}), **(params or {})}
    try:
        return plugin.Params.model_validate(merged).model_dump(mode="json")
    except ValidationError as exc:
        details = "; ".join(f"params.{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors())
        raise LocalRunError(f"invalid parameters for plugin {plugin.name!r}: {details}") from None


def server_runner_available() -> bool:
    """Whether the workers' child-process runner (the server package's ``worker.sandbox``) is
    importable: a ``worker`` package next to the server's ``registry`` (found without running it,
    so that a user's own ``worker.py`` is never executed)."""
    import importlib.util

    try:
        spec = importlib.util.find_spec("worker")
    except (ImportError, ValueError):
        return False
    if spec is None or not spec.submodule_search_locations or not spec.origin:
        return False
    package = Path(spec.origin).parent
    if not ((package / "sandbox.py").is_file() and (package.parent / "registry" / "server_cli.py").is_file()):
        return False
    try:
        importlib.import_module("worker.sandbox")
    except ImportError:
        return False
    return True


# ---------------------------------------------------------------- running


def _child_run(plugin: type[Experiment], params: dict[str, Any], seed: int, *, device: str, threads: int,
               timeout: float | None, on_progress: Any) -> SeedResult:
    """One seed through ``worker.sandbox.ChildRun``, supervised as a worker does (stop request,
    then SIGTERM, then SIGKILL at the time limit)."""
    from interp_registry.testing import ContractError, validate_results
    from worker.sandbox import ChildRun

    class LocalChildRun(ChildRun):
        """The workers' child, with the current directory appended to the end of its sys.path
        (a plugin given as module:Class from the current directory is importable there too). Not
        through PYTHONPATH: its entries come before the standard library and site-packages, so a
        user's own json.py or torch/ in the current directory would be imported in their place."""

        def command(self, write_fd: int) -> list[str]:
            command = super().command(write_fd)
            at = command.index("-m")
            return [*command[:at], "-c", CHILD_BOOTSTRAP, os.getcwd(), *command[at + 2:]]

    child = LocalChildRun(
        run_id=seed, plugin=f"{plugin.__module__}:{plugin.__qualname__}", params=params, seed=seed,
        device=device, deterministic=False, torch_threads=threads, start_method="spawn",
    )
    started = time.monotonic()
    stopped_at: float | None = None
    try:
        child.start()
        while child.wait(0.2) is None:
            progress = child.take_progress()
            if progress is not None and on_progress is not None:
                on_progress(*progress)
            now = time.monotonic()
            if timeout is not None and now - started > timeout:
                if stopped_at is None:
                    stopped_at = now
                    child.request_stop()
                elif now - stopped_at > 10:
                    child.kill_group(signal.SIGKILL)
                elif now - stopped_at > 5 and "SIGTERM" not in child.signals_sent:
                    child.kill_group(signal.SIGTERM)
        child.finish()
        wall = round(time.monotonic() - started, 3)
        environment = {**child.environment, "wall_time_s": wall, "runner": "interp-registry run-local (child process)"}
        succeeded = child.has_result and child.process is not None and child.process.returncode == 0
        if not succeeded:
            if stopped_at is not None:
                error = f"exceeded the time limit of {timeout} s"
            elif child.error is not None:
                error = str(child.error.get("error", ""))
            else:
                error = child.exit_description()[1]
            tail = "\n".join(child.output[-20:])
            return SeedResult(seed, "failed", environment=environment, wall_time_s=wall,
                              error=error + (f"\n{tail}" if tail and child.error is None else ""))
        results, extra = child.load_results()
        environment.update(extra)
        try:
            validate_results(plugin, results)
        except ContractError as exc:
            return SeedResult(seed, "failed", environment=environment, error=str(exc), wall_time_s=wall)
        artifacts = child.load_artifacts()
        series, notes = child.load_series(arms=tuple(plugin.arms))
        return SeedResult(seed, "succeeded", measurements=results, environment=environment, wall_time_s=wall,
                          artifacts=artifacts, series=series, notes=notes)
    finally:
        child.finish()
        child.cleanup()


def capture_environment(device: Any, *, seed: int, plugin_version: str) -> dict[str, Any]:
    """What the child-process runner records, for a run in this process."""
    import torch

    environment: dict[str, Any] = {
        "python": sys.version.split()[0], "platform": platform.platform(), "hostname": socket.gethostname(),
        "torch": torch.__version__, "cuda": torch.version.cuda, "device": str(device), "device_name": "cpu",
        "torch_threads": torch.get_num_threads(), "seed": seed, "deterministic": False,
        "plugin_version": plugin_version,
    }
    if device.type == "cuda":
        environment["device_name"] = torch.cuda.get_device_name(device)
        environment["gpu_count"] = torch.cuda.device_count()
    return environment


def _in_process_run(plugin: type[Experiment], params: dict[str, Any], seed: int, *, device: str,
                    threads: int) -> SeedResult:
    import torch

    from interp_registry.sdk import run_locally

    torch.set_num_threads(threads)
    torch_device = "cuda" if device == "gpu" and torch.cuda.is_available() else "cpu"
    started = time.monotonic()
    environment = capture_environment(torch.device(torch_device), seed=seed, plugin_version=plugin.version)
    environment["runner"] = "interp-registry run-local (in process)"
    try:
        results, ctx = run_locally(plugin, params, seed=seed, device=torch_device, validate=True)
    except Exception as exc:  # noqa: BLE001 - the plugin's failure (or a ContractError) is this seed's
        wall = round(time.monotonic() - started, 3)
        environment["wall_time_s"] = wall
        return SeedResult(seed, "failed", environment=environment, error=f"{type(exc).__name__}: {exc}",
                          wall_time_s=wall)
    wall = round(time.monotonic() - started, 3)
    environment["wall_time_s"] = wall
    artifacts = {name: (data, "application/octet-stream") for name, data in ctx.artifacts.items()}
    return SeedResult(seed, "succeeded", measurements=results, environment=environment, wall_time_s=wall,
                      artifacts=artifacts, series=ctx.series)


def run_seeds(plugin: type[Experiment], params: dict[str, Any], seeds: list[int], *, device: str = "cpu",
              runner: str = "auto", threads: int = 1, timeout: float | None = None,
              progress: bool = False) -> tuple[str, list[SeedResult]]:
    """Run every seed; returns the runner used ("child" or "in-process") and a result per seed."""
    if runner not in RUNNERS:
        raise ValueError(f"runner must be one of {RUNNERS}")
    if runner == "auto":
        runner = "child" if server_runner_available() else "in-process"
    elif runner == "child" and not server_runner_available():
        raise LocalRunError("the child-process runner needs the server package (pip install interp-registry-server)")
    from interp_registry import __version__

    results = []
    for seed in seeds:
        bar = None
        if progress:
            from tqdm import tqdm

            bar = tqdm(total=100, desc=f"seed {seed}", unit="%", leave=True, file=sys.stderr)

        def on_progress(fraction: float | None, message: str | None, bar: Any = bar) -> None:
            if bar is not None and fraction is not None:
                bar.n = round(100 * max(0.0, min(1.0, float(fraction))))
                bar.set_postfix_str((message or "")[:40], refresh=True)

        try:
            if runner == "child":
                result = _child_run(plugin, params, seed, device=device, threads=threads, timeout=timeout,
                                    on_progress=on_progress)
            else:
                result = _in_process_run(plugin, params, seed, device=device, threads=threads)
            if bar is not None and result.state == "succeeded":
                bar.n = 100
        finally:
            if bar is not None:
                bar.close()
        result.environment.setdefault("interp_registry_version", __version__)
        results.append(result)
    return runner, results


def save_artifacts(results: list[SeedResult], folder: Path) -> int:
    """Each seed's artifacts into ``folder/seed-N/``; returns how many were written."""
    count = 0
    for result in results:
        for i, (name, (data, _)) in enumerate(result.artifacts.items()):
            base = Path(name).name
            if base in ("", ".", ".."):  # a plugin's name that is no file name: the folder itself
                base = f"artifact-{i + 1}"
            target = folder / f"seed-{result.seed}" / base
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)
            count += 1
    return count


def report_payload(params: dict[str, Any], plugin: type[Experiment], results: list[SeedResult]) -> dict[str, Any]:
    """The body of ``POST /api/v1/experiments/{id}/self-reported-runs/batch/`` for these results:
    each run with its measurements, environment and curves (``[{arm, name, steps, values}]``, the
    points kept, as the API takes them)."""
    return {
        "params": params,
        "plugin_version": plugin.version,
        "runs": [{"seed": r.seed, "measurements": r.encoded(), "hardware": r.hardware, "environment": r.environment,
                  **({"series": report_series(r.series)} if r.series else {})}
                 for r in results],
    }


#: A report is sent in requests of at most this many bytes of JSON (the registry's default body
#: limit, API_MAX_BODY_BYTES, is 2 MiB); the runs' curves are thinned to fit.
REPORT_MAX_BYTES = 1_500_000


def report_payloads(params: dict[str, Any], plugin: type[Experiment], results: list[SeedResult],
                    max_bytes: int = REPORT_MAX_BYTES) -> list[dict[str, Any]]:
    """:func:`report_payload` in bodies of at most ``max_bytes``. One body whenever possible (one
    request is one self-reported reproduction, and the seeds of one local run belong together):
    the curves are thinned first (every other point, first and last kept, until it fits). Only
    runs whose measurements alone exceed the limit are split over several bodies."""
    def size(body: dict[str, Any]) -> int:
        return len(json.dumps(body, allow_nan=False, default=str).encode())

    whole = report_payload(params, plugin, results)
    while size(whole) > max_bytes and any(len(c["steps"]) > 2 for r in whole["runs"] for c in r.get("series", [])):
        for run in whole["runs"]:
            if run.get("series"):
                run["series"] = [_thinned(c) for c in run["series"]]
    if size(whole) <= max_bytes:
        return [whole]
    payloads: list[dict[str, Any]] = []
    for run in whole["runs"]:
        current = payloads[-1] if payloads else None
        if current is not None and size({**current, "runs": [*current["runs"], run]}) <= max_bytes:
            current["runs"].append(run)
        else:
            payloads.append({**whole, "runs": [run]})
    return payloads


def _thinned(curve: dict[str, Any]) -> dict[str, Any]:
    """Every other point of a curve, its last kept."""
    keep = list(range(0, len(curve["steps"]), 2))
    if keep[-1] != len(curve["steps"]) - 1:
        keep.append(len(curve["steps"]) - 1)
    return {**curve, "steps": [curve["steps"][i] for i in keep], "values": [curve["values"][i] for i in keep]}


def report_series(series: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Curves as the self-reported API takes them: ``{arm, name, steps, values}`` each."""
    return [{"arm": c["arm"], "name": c["name"], "steps": list(c["steps"]), "values": list(c["values"])}
            for c in series]


def measurement_rows(plugin: type[Experiment], results: list[SeedResult]) -> list[dict[str, Any]]:
    """Rows for a table: one per seed and arm with a column per metric, then each arm's mean."""
    metrics = [m.name for m in plugin.metrics]
    rows: list[dict[str, Any]] = []
    sums: dict[str, dict[str, list[float]]] = {}
    for result in results:
        if result.state != "succeeded":
            rows.append({"seed": result.seed, "arm": "-", "state": "failed", "error": result.error.splitlines()[0][:80]
                         if result.error else ""})
            continue
        for arm in plugin.arms:
            values = result.measurements.get(arm, {})
            row: dict[str, Any] = {"seed": result.seed, "arm": arm, "state": "ok"}
            for metric in metrics:
                value = values.get(metric)
                if isinstance(value, NotReached):
                    row[metric] = f">{value.budget:g}"
                else:
                    row[metric] = value
                    if isinstance(value, int | float):
                        sums.setdefault(arm, {}).setdefault(metric, []).append(float(value))
            rows.append(row)
    for arm in plugin.arms:
        if arm in sums:
            rows.append({"seed": "mean", "arm": arm, "state": "",
                         **{m: sum(v) / len(v) for m, v in sums[arm].items() if v}})
    return rows

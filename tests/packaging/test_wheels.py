"""The README's deploy recipe from built wheels: build the two distributions (and the outside plugin
template), install them in a fresh virtualenv, then run the server with its console commands from a
user's project folder that holds its own ``worker.py``, ``registry.py`` and ``plugins/``:
``interp-registry-server migrate``, ``createuser``, ``serve`` (gunicorn with uvicorn workers on the
embedded SQLite default), ``worker`` and ``beat``; reproduce an experiment of the outside plugin
through the worker; check that the data went to the user's data directory and that nothing was
written into ``site-packages`` or the project folder.

Speed: the wheels are built without build isolation (the dev environment's setuptools, no index),
and installed with ``--no-deps --no-index``; their dependencies (Django, Celery, torch: the local
CPU build ``scripts/dev setup`` installed) come from this test's own virtualenv, added to the fresh
one's path by a ``.pth`` file, as ``--system-site-packages`` would add a system Python's. Only the
path is shared: that environment's ``.pth`` files (its editable installs of these very packages) are
not processed, so ``registry``, ``worker``, ``plugins`` and ``interp_registry`` import from the
wheels (asserted).
"""

from __future__ import annotations

import http.client
import json
import os
import shutil
import signal
import subprocess
import sys
import sysconfig
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import ROOT, free_port

pytestmark = pytest.mark.slow

SHADOWS = {
    "worker.py": "worker",
    "registry.py": "registry",
    "plugins/__init__.py": "plugins",
}
SERVICE_VARIABLES = ("DATABASE_URL", "CELERY_BROKER_URL", "CELERY_BROKER_KEY_PREFIX", "DJANGO_SETTINGS_MODULE",
                     "REGISTRY_VAR_DIR", "REGISTRY_DATA_DIR", "REGISTRY_ARTIFACT_ROOT", "DJANGO_STATIC_ROOT",
                     "PYTHONPATH", "XDG_DATA_HOME", "CACHE_URL", "PLUGINS_EXTRA", "VIRTUAL_ENV")


def _sources(destination: Path) -> None:
    """The working tree's files (tracked, and new ones git does not ignore): building in a copy
    leaves no build/ or egg-info behind in the checkout."""
    listed = subprocess.run(["git", "ls-files", "-z", "-co", "--exclude-standard"], cwd=ROOT, capture_output=True,
                            check=True, timeout=60).stdout.decode().split("\0")
    for name in filter(None, listed):
        source = ROOT / name
        if source.is_file() and not name.startswith(("tests/", "bench/", "docs/")):
            target = destination / name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)


def _build_wheels(tmp: Path) -> list[Path]:
    source, wheels = tmp / "src", tmp / "wheels"
    _sources(source)
    for project in (source / "packages" / "interp-registry", source, source / "examples" / "registry-plugin-template"):
        result = subprocess.run(
            [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-q",
             "-w", str(wheels), str(project)],
            capture_output=True, text=True, timeout=300,
        )
        assert result.returncode == 0, result.stdout + result.stderr
    built = sorted(wheels.glob("*.whl"))
    assert [w.name.split("-")[0] for w in built] == ["interp_registry", "interp_registry_server",
                                                     "registry_plugin_template"], built
    return built


def _fresh_virtualenv(tmp: Path, wheels: list[Path]) -> tuple[Path, Path]:
    venv = tmp / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    site = Path(subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                               capture_output=True, text=True, check=True).stdout.strip())
    result = subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "--no-index", "-q",
         *map(str, wheels)],
        capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    # the dependencies: this environment's site-packages, after the fresh one's (see the docstring)
    (site / "zz_dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    return venv, site


def _snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in folder.rglob("*") if p.is_file() or p.is_dir()}


def _get(port: int, path: str, token: str | None = None) -> tuple[int, bytes]:
    # the first plugins read imports every plugin (torch) in a fresh server process: slow on a loaded CI machine
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=180)
    headers = {"Authorization": f"Token {token}"} if token else {}
    connection.request("GET", path, headers=headers)
    response = connection.getresponse()
    return response.status, response.read()


class Processes:
    def __init__(self, env: dict[str, str], cwd: Path, logs: Path):
        self.env, self.cwd, self.logs = env, cwd, logs
        self.started: list[tuple[subprocess.Popen, Path]] = []

    def start(self, name: str, *argv: str) -> Path:
        log = self.logs / f"{name}.log"
        with log.open("w") as handle:
            process = subprocess.Popen(argv, cwd=self.cwd, env=self.env, stdout=handle, stderr=subprocess.STDOUT,
                                       start_new_session=True)
        self.started.append((process, log))
        return log

    def alive(self) -> None:
        for process, log in self.started:
            assert process.poll() is None, f"{log.name} exited:\n{log.read_text()[-4000:]}"

    def stop(self) -> None:
        for process, _ in self.started:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
        for process, _ in self.started:
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=10)


@pytest.fixture
def processes() -> Iterator[list[Processes]]:
    """Process groups started by the test: stopped at its end whatever happens."""
    holder: list[Processes] = []
    yield holder
    for group in holder:
        group.stop()
        # shown by pytest only when the test failed: what the server, worker and beat said
        for _, log in group.started:
            print(f"--- {log.name}\n{log.read_text()[-4000:]}")


def _wait(predicate, what: str, processes: Processes, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        processes.alive()
        if predicate():
            return
        time.sleep(0.3)
    pytest.fail(f"{what} within {timeout} s; logs:\n" + "\n".join(
        f"--- {log.name}\n{log.read_text()[-3000:]}" for _, log in processes.started))


def test_wheels_install_and_serve_an_outside_plugin_from_a_user_folder(tmp_path, processes):
    wheels = _build_wheels(tmp_path)
    venv, site = _fresh_virtualenv(tmp_path, wheels)
    bin_dir = venv / "bin"
    assert (bin_dir / "interp-registry-server").exists() and (bin_dir / "interp-registry").exists()

    # a user's project folder with modules named like the server's packages: never loaded
    project = tmp_path / "project"
    for name, module in SHADOWS.items():
        path = project / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f"import pathlib\npathlib.Path({str(tmp_path / ('loaded-' + module))!r}).touch()\n"
                        f"raise SystemExit('the user folder\\'s {module} was imported')\n")
    home = tmp_path / "home"
    home.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in SERVICE_VARIABLES}
    env.update(HOME=str(home), PATH=f"{bin_dir}{os.pathsep}{env.get('PATH', '')}", REAPER_INTERVAL_S="1",
               RUN_TORCH_THREADS="1", OMP_NUM_THREADS="1")
    data = home / ".local" / "share" / "interp-registry-server"  # the default: the user's data directory

    before = _snapshot(site)
    project_before = _snapshot(project)

    def command(*argv: str, timeout: float = 180) -> subprocess.CompletedProcess:
        result = subprocess.run([str(bin_dir / "interp-registry-server"), *argv], cwd=project, env=env,
                                capture_output=True, text=True, timeout=timeout)
        assert result.returncode == 0, result.stdout + result.stderr
        return result

    where = command("where").stdout
    assert f"data:        {data}" in where and f"installed:   {site}" in where, where
    command("migrate", "-v", "0")
    assert (data / "registry.sqlite3").is_file()
    token = command("createuser", "alice").stdout.strip()
    assert token.startswith("ifr_"), token

    port = free_port()
    run = Processes(env, project, tmp_path)
    processes.append(run)
    serve_log = run.start("serve", str(bin_dir / "interp-registry-server"), "serve", "--port", str(port))
    worker_log = run.start("worker", str(bin_dir / "interp-registry-server"), "worker", "--concurrency", "1")
    run.start("beat", str(bin_dir / "interp-registry-server"), "beat")

    def answers() -> bool:
        try:
            return _get(port, "/healthz")[0] == 200
        except OSError:
            return False

    _wait(answers, "the server did not answer", run)
    assert "gunicorn" in serve_log.read_text()
    _wait(lambda: "ready." in worker_log.read_text(), "the worker did not start", run)
    _wait(lambda: (data / "celerybeat-schedule").exists() or any(data.glob("celerybeat-schedule*")),
          "beat wrote no schedule into the data directory", run)

    # static files served without a separate step (collected into the data directory by serve)
    status, css = _get(port, "/static/dashboard/dashboard.css")
    assert status == 200 and len(css) > 100
    assert (data / "static" / "dashboard" / "dashboard.css").is_file()

    # the outside plugin, installed from its wheel, is served and runs through the worker
    status, body = _get(port, "/api/v1/plugins/")
    assert status == 200
    plugins = {p["name"]: p for p in json.loads(body)}
    assert plugins["probe_decay"]["available"] is True, plugins["probe_decay"]

    from interp_registry.client import Registry

    with Registry(f"http://127.0.0.1:{port}", token=token) as registry:
        finding = registry.create_finding(title="Weight decay and a spurious feature", kind="fix",
                                          summary="Packaging test.")
        experiment = registry.create_experiment(finding, plugin="probe_decay",
                                                params={"samples": 128, "steps": 20}, default_seeds=2)
        assert experiment.reproductions
        done = registry.wait(experiment.reproductions[0], timeout=240, progress=False, effects=False,
                             poll_interval=0.5, stream=False)
        assert [r.state for r in done.runs] == ["succeeded", "succeeded"], [(r.state, r.error) for r in done.runs]
        run_detail = registry.run(done.runs[0].id)
        assert run_detail.plugin_version == "0.1.0"
        assert {m["metric"] for m in run_detail.measurements} == {"spurious_reliance", "shifted_accuracy"}
        assert [a["name"] for a in run_detail.artifacts] == ["results.json"]

    # the packages the processes used came from the wheels, not the checkout nor the user folder
    check = subprocess.run(
        [str(venv / "bin" / "python"), "-c",
         "import registry, worker, plugins, interp_registry, registry_plugin_template as t;"
         "print('\\n'.join(m.__file__ for m in (registry, worker, plugins, interp_registry, t)))"],
        cwd=tmp_path, env=env, capture_output=True, text=True, check=True,
    )
    assert all(line.startswith(str(site)) for line in check.stdout.split()), check.stdout
    assert not list(tmp_path.glob("loaded-*")), "a module of the user's folder was imported"

    run.stop()
    # nothing written into site-packages (not even bytecode: pip compiled it at install), the
    # project folder untouched (no beat schedule, no var/), the artifacts in the data directory
    after = _snapshot(site)
    assert {k: v for k, v in after.items() if before.get(k) != v and not k.endswith("/__pycache__")} == {}
    assert not (site / "var").exists()
    assert _snapshot(project) == project_before
    assert any((data / "artifacts").rglob("*")), "no artifact stored in the data directory"

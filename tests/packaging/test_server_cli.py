"""``interp-registry-server`` in this environment: the data directory's defaults, and the console
command run from a user's folder holding its own ``worker.py``, ``registry.py`` and ``plugins/``
(never imported). tests/packaging/test_wheels.py does the same from built wheels, with a server and
a worker."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from registry import datadir, server_cli
from tests.conftest import ROOT

SCRIPT = Path(sys.executable).parent / "interp-registry-server"


def test_the_data_directory_defaults(tmp_path, monkeypatch):
    assert datadir.data_dir({"REGISTRY_DATA_DIR": str(tmp_path / "d")}) == tmp_path / "d"
    assert datadir.data_dir({"REGISTRY_VAR_DIR": str(tmp_path / "old")}) == tmp_path / "old"  # the older name
    assert datadir.data_dir({"REGISTRY_DATA_DIR": str(tmp_path / "d"), "REGISTRY_VAR_DIR": "x"}) == tmp_path / "d"
    # from this checkout: its var/
    assert datadir.source_checkout() == ROOT
    assert datadir.data_dir({}) == ROOT / "var"
    # installed (no checkout): the user's data directory, XDG_DATA_HOME when absolute
    monkeypatch.setattr(datadir, "PACKAGE_PARENT", tmp_path / "lib" / "python3.11" / "site-packages")
    assert datadir.source_checkout() is None
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("XDG_DATA_HOME", raising=False)
    assert datadir.data_dir({}) == tmp_path / "home" / ".local" / "share" / "interp-registry-server"
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    assert datadir.data_dir({}) == tmp_path / "xdg" / "interp-registry-server"
    monkeypatch.setenv("XDG_DATA_HOME", "relative/ignored")
    assert datadir.data_dir({}) == tmp_path / "home" / ".local" / "share" / "interp-registry-server"


def test_the_current_directory_leaves_the_path(tmp_path):
    cwd = str(tmp_path)
    path = ["", ".", cwd, str(tmp_path / "other"), str(server_cli.INSTALL_ROOT)]
    assert server_cli._without_current_directory(path, cwd) == [str(tmp_path / "other"),
                                                                str(server_cli.INSTALL_ROOT)]
    # run from the checkout itself: its root stays (that is where the packages are)
    assert server_cli._without_current_directory(["", "/x"], str(server_cli.INSTALL_ROOT)) == ["", "/x"]


@pytest.fixture
def user_folder(tmp_path) -> Path:
    folder = tmp_path / "project"
    for name in ("worker.py", "registry.py", "plugins/__init__.py"):
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f"import pathlib\npathlib.Path({str(tmp_path / 'shadow-imported')!r}).touch()\n"
                        f"raise SystemExit('{name} of the user folder was imported')\n")
    return folder


def _env(data: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if k not in ("DATABASE_URL", "CELERY_BROKER_URL", "DJANGO_SETTINGS_MODULE", "PYTHONPATH",
                        "REGISTRY_VAR_DIR", "CELERY_BROKER_KEY_PREFIX")}
    return {**env, "REGISTRY_DATA_DIR": str(data), **extra}


@pytest.mark.skipif(not SCRIPT.exists(), reason="the console script is not installed (pip install -e .)")
def test_commands_from_a_user_folder_never_import_its_modules(tmp_path, user_folder):
    data = tmp_path / "data"

    def run(*argv: str, **extra: str) -> subprocess.CompletedProcess:
        return subprocess.run([str(SCRIPT), *argv], cwd=user_folder, env=_env(data, **extra), capture_output=True,
                              text=True, timeout=300, input="")

    where = run("where")
    assert where.returncode == 0, where.stderr
    assert f"data:        {data}" in where.stdout and f"beat:        {data / 'celerybeat-schedule'}" in where.stdout
    migrate = run("migrate", "-v", "0")
    assert migrate.returncode == 0, migrate.stderr
    assert (data / "registry.sqlite3").is_file()
    user = run("createuser", "carol", "--staff")
    assert user.returncode == 0, user.stderr
    assert user.stdout.strip().startswith("ifr_") and "created user carol" in user.stderr
    check = run("manage", "check")
    assert check.returncode == 0 and "no issues" in check.stdout, check.stderr
    assert not (tmp_path / "shadow-imported").exists()
    assert sorted(p.name for p in user_folder.iterdir()) == ["plugins", "registry.py", "worker.py"]

    # the current directory on the path (PYTHONPATH "." or an empty entry, as a shell profile may
    # leave it): taken off before `worker` and `plugins` are imported, so theirs never run
    # (`registry` itself is imported before any code of ours runs: that one cannot be helped)
    (user_folder / "registry.py").unlink()
    for pythonpath in (".", os.pathsep + str(tmp_path / "nothing")):
        where = run("where", PYTHONPATH=pythonpath)
        assert where.returncode == 0, (pythonpath, where.stderr)
        assert not (tmp_path / "shadow-imported").exists()

    # a `worker` put on the path explicitly is reported, not run as the registry's
    shadowed = tmp_path / "elsewhere"
    shadowed.mkdir()
    (shadowed / "worker.py").write_text("")
    refused = run("where", PYTHONPATH=str(shadowed))
    assert refused.returncode == 2
    assert "'worker' was loaded from" in refused.stderr and "not from this installation" in refused.stderr

    bad = run("createuser", "dave", "--password-stdin")  # an empty password is refused by the validators
    assert bad.returncode == 1 and "too short" in bad.stderr


@pytest.mark.skipif(not SCRIPT.exists(), reason="the console script is not installed (pip install -e .)")
def test_celery_never_puts_the_users_folder_on_the_path(tmp_path):
    """Celery's Django fixup puts the current directory first on sys.path when the app is created,
    and its loader while it imports worker.tasks: the user's own fileinput.py (celery's command
    line imports it) and numpy.py (worker.tasks does) are never imported, by a web process that
    creates the app late (here `manage shell`) nor by a worker starting up."""
    folder = tmp_path / "project"
    folder.mkdir()
    for name in ("fileinput", "numpy"):
        (folder / f"{name}.py").write_text(f"import pathlib\npathlib.Path({str(tmp_path / name)!r}).touch()\n"
                                           f"raise SystemExit('{name}.py of the user folder was imported')\n")
    env = _env(tmp_path / "data")
    assert subprocess.run([str(SCRIPT), "migrate", "-v", "0"], cwd=folder, env=env, timeout=300).returncode == 0
    shell = subprocess.run([str(SCRIPT), "manage", "shell", "-c", "import worker.celery, fileinput, numpy"],
                           cwd=folder, env=env, capture_output=True, text=True, timeout=300)
    assert shell.returncode == 0, shell.stderr
    worker = subprocess.Popen([str(SCRIPT), "worker", "--concurrency", "1", "--queues", "maintenance"], cwd=folder,
                              env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    watchdog = threading.Timer(180, worker.kill)  # a worker that never gets ready fails the test, never hangs it
    watchdog.start()
    try:
        lines = []
        for line in worker.stderr:  # until the worker is ready (or has exited)
            lines.append(line)
            if " ready." in line:
                break
        assert any(" ready." in line for line in lines), "".join(lines[-20:])
    finally:
        watchdog.cancel()
        worker.terminate()
        try:
            worker.wait(timeout=30)
        except subprocess.TimeoutExpired:
            worker.kill()
            worker.wait()
    assert not (tmp_path / "fileinput").exists() and not (tmp_path / "numpy").exists()

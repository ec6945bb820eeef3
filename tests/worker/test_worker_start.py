"""What a worker's main process imports before it is ready (issue 9: a replacement worker's start)."""

import os
import subprocess
import sys

from plugins.registry import all_plugins
from tests.conftest import ROOT
from worker.runner import plugin_modules_declared


def test_the_worker_main_process_imports_neither_torch_nor_scipy_stats():
    """The Celery app and its tasks (what ``celery -A worker worker`` imports before forking its
    pool): torch comes with the plugins, in the pool processes; scipy.stats at the first effects
    computation."""
    code = (
        "import sys, django\n"
        "from worker.celery import app\n"
        "django.setup()\n"
        "app.loader.import_default_modules()\n"
        "import worker.tasks\n"
        "print(sorted(m for m in ('torch', 'scipy.stats') if m in sys.modules))\n"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT), "DJANGO_SETTINGS_MODULE": "registry.settings.base"}
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip().splitlines()[-1] == "[]", done.stdout


def test_the_zygote_preload_names_every_installed_plugin_s_module_without_importing_it():
    declared = plugin_modules_declared()
    for entry in all_plugins().values():
        if entry.available:
            module = entry.experiment.__module__
            assert any(module == name or module.startswith(name + ".") for name in declared), (module, declared)

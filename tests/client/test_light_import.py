"""The light distribution imports without the server: no Django, Celery or the server's packages."""

import subprocess
import sys

BLOCKER = """
import importlib.abc, sys
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in ('django', 'celery', 'rest_framework', 'registry', 'worker', 'plugins'):
            raise ImportError(f'{name} is blocked: the light distribution must not need it')
sys.meta_path.insert(0, Block())
import interp_registry.sdk, interp_registry.client, interp_registry.testing, interp_registry.findings
import interp_registry.cli
from interp_registry.findings import schema
assert schema()['title'].startswith('A finding as code')
heavy = sorted(m for m in sys.modules if m.split('.')[0] in ('django', 'celery', 'torch', 'registry', 'worker'))
print('loaded:', heavy)
"""


def test_the_light_modules_import_without_django_celery_or_torch(tmp_path):
    # -I: isolated (no PYTHONPATH, no user site, the script's folder not on the path); run from an
    # empty folder so the source tree's registry/ and plugins/ are not importable by accident.
    result = subprocess.run([sys.executable, "-I", "-c", BLOCKER], capture_output=True, text=True, cwd=tmp_path,
                            timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip() == "loaded: []"


def test_the_console_script_runs_without_the_server(tmp_path):
    script = [sys.executable, "-I", "-c", "import sys; from interp_registry.cli import main; sys.exit(main())"]
    result = subprocess.run([*script, "--help"], capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert result.returncode == 0, result.stderr
    for command in ("login", "submit", "reproduce", "watch", "show", "landscape", "export", "plugins"):
        assert command in result.stdout
    assert "exit codes" in result.stdout
    result = subprocess.run([*script, "show"], capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert result.returncode == 2  # bad usage
    assert "FINDING" in result.stderr

"""The README's run command on the embedded default: SQLite, the SQLAlchemy broker, no services.
It serves the API and a real worker reproduces the example findings (tiny presets here)."""

import http.cookiejar
import json
import os
import re
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request

import pytest

from tests.conftest import ROOT

pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(url: str) -> dict | list | None:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return json.loads(response.read())
    except OSError:
        return None


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):  # a redirect comes back as an HTTPError to look at
        return None


def _sign_in(base: str, username: str, password: str) -> tuple[int, str]:
    """POST the sign-in form (with its CSRF token and cookie): the status and where it redirects."""
    jar = http.cookiejar.CookieJar()
    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar), _NoRedirect)
    with opener.open(f"{base}/accounts/login/", timeout=30) as page:
        csrf = re.search(rb'name="csrfmiddlewaretoken" value="([^"]+)"', page.read()).group(1).decode()
    body = urllib.parse.urlencode({"csrfmiddlewaretoken": csrf, "username": username, "password": password})
    try:
        with opener.open(f"{base}/accounts/login/", data=body.encode(), timeout=30) as response:
            return response.status, ""  # 200: the form again, with its error
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers.get("Location", "")


def test_run_command_serves_and_reproduces_the_examples(tmp_path):
    port = _free_port()
    env = {k: v for k, v in os.environ.items()
           if k not in ("DATABASE_URL", "CELERY_BROKER_URL", "DJANGO_SETTINGS_MODULE", "CELERY_BROKER_KEY_PREFIX")}
    env.update(REGISTRY_VAR_DIR=str(tmp_path), PORT=str(port), EXAMPLES_PRESET="tiny")
    log = (tmp_path / "run.log").open("w")
    process = subprocess.Popen(
        [str(ROOT / "scripts" / "dev"), "run"], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 420
        findings = []
        while time.monotonic() < deadline:
            assert process.poll() is None, (tmp_path / "run.log").read_text()[-3000:]
            page = _get(f"{base}/api/v1/findings/?page_size=100")
            findings = page["results"] if page else []
            runs = _get(f"{base}/api/v1/runs/?page_size=200")
            states = [r["state"] for r in runs["results"]] if runs else []
            # every example created and its runs queued; the first 15 reproduced (all of them, through a
            # real worker, is tests/findings/test_examples_through_worker.py: not again here, for CI time)
            if len(findings) >= 12 and states.count("succeeded") >= 15:
                break
            assert not set(states) & {"failed", "timed_out"}, (states, (tmp_path / "run.log").read_text()[-3000:])
            time.sleep(2)
        else:
            pytest.fail(f"examples not reproduced in time: {states}\n{(tmp_path / 'run.log').read_text()[-3000:]}")
        assert (tmp_path / "registry.sqlite3").exists()
        assert len(findings) >= 12  # issue 14: enough points for the landscape
        assert states and set(states) <= {"queued", "running", "succeeded"}, states
        fixes = [f for f in findings if f["kind"] == "fix" and f["builds_on"]]
        # the resize-convolution fix builds on the checkerboard theory, smeared keys on induction
        assert {e["plugin"] for f in fixes for e in f["experiments"]} >= {"checkerboard", "smeared_keys"}
        assert _get(f"{base}/healthz") == {"status": "ok"}
        # the landscape on SQLite (its cache version query once used PostgreSQL's extract(): a 500)
        assert _get(f"{base}/api/v1/landscape/") is not None, (tmp_path / "run.log").read_text()[-6000:]
        with urllib.request.urlopen(f"{base}/landscape/", timeout=30) as page:
            assert page.status == 200 and b"<svg" in page.read()
        # the banner's demo user: its printed password signs in, its printed token authenticates
        output = (tmp_path / "run.log").read_text()
        user = re.search(r"Demo user: +(\S+) / (\S+) ", output)
        token = re.search(r"Demo token: +(\S+) ", output)
        assert user and token, output[-3000:]
        status, location = _sign_in(base, user.group(1), user.group(2))
        assert status == 302 and "/accounts/login/" not in location, (status, location)
        request = urllib.request.Request(f"{base}/api/v1/me/quota/", headers={"Authorization": f"Token {token[1]}"})
        with urllib.request.urlopen(request, timeout=30) as response:
            assert response.status == 200
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=30)
        log.close()

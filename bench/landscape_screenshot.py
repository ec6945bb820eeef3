"""Screenshot the landscape page of a registry database (no tests; a helper for the closing note).

    python bench/landscape_screenshot.py var/bench landscape.png
    python bench/landscape_screenshot.py var/bench finding.png --path /findings/3/

Given a ``REGISTRY_VAR_DIR`` (for instance the one ``bench/effects_builtins.py --keep-db <dir>``
leaves behind), this serves it with ``manage.py runserver`` on a free local port
(``DJANGO_SETTINGS_MODULE=registry.settings.base``, SQLite in that folder unless ``--database-url``
says otherwise), opens ``/landscape/`` in Debian's Chromium through Playwright at 1400x1000 and
saves a full-page PNG. The static files are collected into ``<dir>/static`` first (WhiteNoise serves
them with DEBUG off); pages are read only: nothing is written to the database.
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
]
VIEWPORT = {"width": 1400, "height": 1000}


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until_up(url: str, server: subprocess.Popen, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"runserver exited with {server.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=5) as response:  # noqa: S310 - our own local server
                if response.status < 500:
                    return
        except urllib.error.HTTPError as exc:
            if exc.code < 500:
                return
            raise RuntimeError(f"{url} answered {exc.code}") from exc
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        time.sleep(0.3)
    raise TimeoutError(f"{url} did not answer within {timeout:.0f} s")


def screenshot(url: str, out: Path, *, full_page: bool = True) -> None:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport=VIEWPORT)
            response = page.goto(url, wait_until="networkidle")
            if response is None or response.status != 200:
                raise RuntimeError(f"{url} answered {response.status if response else 'nothing'}")
            page.screenshot(path=str(out), full_page=full_page)
        finally:
            browser.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("var_dir", type=Path, help="the registry's REGISTRY_VAR_DIR (holds registry.sqlite3)")
    parser.add_argument("out", type=Path, help="where to save the PNG")
    parser.add_argument("--path", default="/landscape/", help="the page to capture (default: /landscape/)")
    parser.add_argument("--database-url", default=None, help="a DATABASE_URL instead of the folder's SQLite")
    parser.add_argument("--viewport-only", action="store_true", help="capture 1400x1000 only, not the full page")
    args = parser.parse_args(argv)

    var_dir = args.var_dir.resolve()
    if not args.database_url and not (var_dir / "registry.sqlite3").exists():
        parser.error(f"{var_dir} holds no registry.sqlite3 (pass --database-url for another database)")
    port = free_port()
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "registry.settings.base", "REGISTRY_VAR_DIR": str(var_dir)}
    env.pop("DATABASE_URL", None)
    if args.database_url:
        env["DATABASE_URL"] = args.database_url
    manage = [sys.executable, str(ROOT / "manage.py")]
    # WhiteNoise serves the dashboard's CSS and htmx from STATIC_ROOT (the folder's static/) with
    # DEBUG off, as in production: collect them there first (files only; the database is untouched).
    subprocess.run([*manage, "collectstatic", "--noinput", "-v0"], cwd=ROOT, env=env, check=True)
    log = (var_dir / "landscape_screenshot.runserver.log").open("w")
    server = subprocess.Popen(
        [*manage, "runserver", f"127.0.0.1:{port}", "--noreload"],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        base = f"http://127.0.0.1:{port}"
        wait_until_up(base + "/", server)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        screenshot(base + args.path, args.out, full_page=not args.viewport_only)
    finally:
        server.terminate()
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
        log.close()
    print(f"saved {args.out} ({args.path} of {var_dir})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

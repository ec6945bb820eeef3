"""Where the server keeps its data: one directory for the embedded default's SQLite database and
broker, the artifacts, the collected static files and beat's schedule.

``REGISTRY_DATA_DIR`` (``REGISTRY_VAR_DIR``, its older name, still works) chooses it. Otherwise:
the source checkout's ``var/`` when the server runs from a checkout (``scripts/dev``, an editable
install), else the user's data directory (``$XDG_DATA_HOME/interp-registry-server``, by default
``~/.local/share/interp-registry-server``; ``~/Library/Application Support/...`` on macOS,
``%LOCALAPPDATA%\\...`` on Windows). Never a folder inside ``site-packages``.

Standard library only: the settings and ``interp-registry-server`` import it before Django.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

APP_NAME = "interp-registry-server"
#: the folder above the ``registry`` package: the source checkout, or site-packages when installed
PACKAGE_PARENT = Path(__file__).resolve().parents[1]


def source_checkout() -> Path | None:
    """The source checkout the server runs from, or None when it is installed (a wheel)."""
    root = PACKAGE_PARENT
    if root.name in ("site-packages", "dist-packages"):
        return None
    if (root / "manage.py").is_file() and (root / "pyproject.toml").is_file():
        return root
    return None


def user_data_dir() -> Path:
    """The platform's per-user data folder for the server (XDG on Linux and the BSDs)."""
    if sys.platform == "win32":
        base = Path(os.environ.get("LOCALAPPDATA") or Path.home() / "AppData" / "Local")
    elif sys.platform == "darwin":
        base = Path.home() / "Library" / "Application Support"
    else:
        xdg = os.environ.get("XDG_DATA_HOME", "")
        base = Path(xdg) if xdg and Path(xdg).is_absolute() else Path.home() / ".local" / "share"
    return base / APP_NAME


def data_dir(environ: dict[str, str] | os._Environ[str] | None = None) -> Path:
    """The data directory (see the module's docstring); not created here."""
    environ = os.environ if environ is None else environ
    configured = environ.get("REGISTRY_DATA_DIR") or environ.get("REGISTRY_VAR_DIR")
    if configured:
        return Path(configured).expanduser().resolve()
    checkout = source_checkout()
    return checkout / "var" if checkout is not None else user_data_dir()

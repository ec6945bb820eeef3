"""The CLI's stored token: never sent to a registry other than the one it was stored for, never
readable by others while it is written."""

from __future__ import annotations

import argparse
import json
import os
import stat

from interp_registry import cli


def _args(**kw):
    return argparse.Namespace(**{"url": None, "token": None, "json": False, **kw})


def test_stored_token_is_not_sent_to_another_url(tmp_path, monkeypatch):
    monkeypatch.setenv("INTERP_REGISTRY_CONFIG_DIR", str(tmp_path))
    monkeypatch.delenv("INTERP_REGISTRY_TOKEN", raising=False)
    monkeypatch.delenv("INTERP_REGISTRY_URL", raising=False)
    cli.save_config({"url": "https://registry.example", "token": "ifr_secret"})
    assert cli.registry_for(_args()).token == "ifr_secret"
    assert cli.registry_for(_args(url="https://registry.example/")).token == "ifr_secret"
    assert cli.registry_for(_args(url="https://evil.example")).token is None
    monkeypatch.setenv("INTERP_REGISTRY_URL", "http://evil.example")
    assert cli.registry_for(_args()).token is None
    # an explicit token is the caller's choice
    assert cli.registry_for(_args(token="ifr_other")).token == "ifr_other"


def test_token_never_written_into_a_readable_file(tmp_path, monkeypatch):
    monkeypatch.setenv("INTERP_REGISTRY_CONFIG_DIR", str(tmp_path))
    path = tmp_path / "config.json"
    path.write_text("{}")
    os.chmod(path, 0o644)
    modes = []
    real_dump = json.dump

    def spy(obj, handle, **kw):
        modes.append(stat.S_IMODE(os.fstat(handle.fileno()).st_mode))
        return real_dump(obj, handle, **kw)

    monkeypatch.setattr(json, "dump", spy)
    cli.save_config({"url": "https://registry.example", "token": "ifr_secret"})
    assert modes and all(m & 0o077 == 0 for m in modes), oct(modes[0])
    assert stat.S_IMODE(path.stat().st_mode) == 0o600

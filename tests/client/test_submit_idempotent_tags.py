"""Submitting an unchanged finding file changes nothing, whatever the case of its tags (the
registry stores tags lower-cased)."""

from __future__ import annotations

import json

import pytest
from interp_registry import cli

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]


def test_resubmitting_a_file_with_capitalised_tags_changes_nothing(server, token, tmp_path, capsys):
    path = tmp_path / "finding.yaml"
    path.write_text("key: caps\ntitle: Caps\nkind: theory\ntags: [Safety, SAE]\n")
    auth = ["--url", server, "--token", token, "--json"]
    assert cli.main(["submit", str(path), *auth]) == 0
    capsys.readouterr()
    assert cli.main(["submit", str(path), *auth]) == 0
    out, _ = capsys.readouterr()
    result = json.loads(out)
    result = result[0] if isinstance(result, list) else result
    assert result["changed"] is False, result

"""The layer rules of CONTRIBUTING.md hold: the import contracts of pyproject.toml are kept, and what one rule
makes us write twice stays the same in both places."""

from __future__ import annotations

from pathlib import Path

import pytest

from gbcli import entry
from gbcli.warm import client

REPO = Path(__file__).resolve().parent.parent


def test_the_warm_client_lets_through_exactly_the_flags_the_entry_point_answers():
    # Written twice: the entry point imports the client, so the client may not import it back.
    assert set(entry.HELP_FLAGS) == client.LOCAL_FLAGS


def test_every_import_contract_is_kept(monkeypatch):
    lint = pytest.importorskip("importlinter.cli")
    monkeypatch.chdir(REPO)
    assert lint.lint_imports(config_filenames=("pyproject.toml",), no_cache=True) == 0

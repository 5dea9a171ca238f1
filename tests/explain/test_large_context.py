"""A changed file is named with its path whatever the size of the directory it is in:
past the 5,000 file inputs a key records, the store's manifest of the source names it."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from helpers import run_cli

pytestmark = [pytest.mark.root, pytest.mark.overlay]

FILES = 6000


@pytest.fixture
def big(tmp_path: Path, busybox_tar: Path) -> tuple[Path, Path]:
    root, context = tmp_path / "store", tmp_path / "ctx"
    run_cli("import", str(busybox_tar), "busybox", root=root)
    for i in range(FILES):
        folder = context / "src" / f"d{i % 60:02d}"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"f{i:05d}.txt").write_text(f"{i}\n")
    (context / "Dockerfile").write_text("FROM busybox\nCOPY src/ /src/\nRUN ls /src | wc -l\n")
    run_cli("-q", "-t", "app", str(context), root=root)
    return root, context


def _reasons(root: Path) -> list[dict]:
    document = json.loads(run_cli("explain", "--format", "json", "app", root=root).stdout)
    return document["steps"][0]["reasons"]


def test_a_changed_file_deep_in_a_large_source_is_named(big) -> None:
    root, context = big
    # Walk order: d59 comes last, so this file is past the first 5,000 entries.
    (context / "src" / "d59" / "f05999.txt").write_text("changed\n")
    os.chmod(context / "src" / "d58" / "f05998.txt", 0o600)
    (context / "src" / "d57" / "new.txt").write_text("new\n")
    run_cli("-q", "-t", "app", str(context), root=root)
    reasons = _reasons(root)
    assert {"code": "file-changed", "params": {"path": "src/d59/f05999.txt"}} in reasons
    assert {"code": "mode-changed", "params": {"path": "src/d58/f05998.txt", "old": "644",
                                                "new": "600"}} in reasons
    assert {"code": "file-added", "params": {"path": "src/d57/new.txt"}} in reasons
    assert "content-changed" not in [reason["code"] for reason in reasons]
    text = run_cli("explain", "app", root=root).stdout.decode()
    assert "file src/d59/f05999.txt changed" in text


def test_the_plan_names_it_too(big) -> None:
    root, context = big
    (context / "src" / "d59" / "f05999.txt").write_text("changed\n")
    plan = json.loads(run_cli("explain", "--plan", "--format", "json", str(context),
                              root=root).stdout)
    assert plan["steps"][0]["reasons"] == [
        {"code": "file-changed", "params": {"path": "src/d59/f05999.txt"}}]

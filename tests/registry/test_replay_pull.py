"""A replay never repeats what a build said about a pull (builder.replay, issue 17)."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import run_cli
from registry_server import RegistryServer
from replay_project import Project

pytestmark = [pytest.mark.root, pytest.mark.overlay]


def test_a_build_that_pulled_its_base_is_not_replayed_with_the_pull(
        tmp_path: Path, busybox_tar: Path, registry: RegistryServer) -> None:
    """FROM is not one of result.steps: a build whose base was pulled from a registry
    (an empty store) and whose steps are all config-only counts as fully cached and is
    recorded, pull lines and all.  Its replay prints "pulled ..." again, which the
    normal rebuild (the base now stored) does not."""
    pusher = tmp_path / "pusher"
    run_cli("import", str(busybox_tar), "busybox", root=pusher)
    run_cli("push", "busybox", f"{registry.host}/base:1", root=pusher)
    project = Project(tmp_path, busybox_tar, f"FROM {registry.host}/base:1\nENV X=1\n")
    _first, result = project.probe()
    assert result.returncode == 0, result.stderr.decode()
    assert b"pulled" in result.stderr
    _probe, again = project.probe()
    reference = project.reference()
    assert reference.returncode == 0
    assert b"pulled" not in reference.stderr
    assert again.stderr == reference.stderr, "the replay printed the first build's pull"

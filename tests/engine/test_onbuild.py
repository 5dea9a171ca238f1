"""ONBUILD: triggers recorded in the config, run by the image built FROM it, then dropped."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from helpers import run_cli

pytestmark = [pytest.mark.root, pytest.mark.overlay]


def test_onbuild_triggers_run_in_the_child_build(tmp_path: Path, busybox_tar: Path) -> None:
    root = tmp_path / "store"
    run_cli("import", str(busybox_tar), "busybox", root=root)
    parent, child = tmp_path / "parent", tmp_path / "child"
    parent.mkdir()
    child.mkdir()
    (parent / "Dockerfile").write_text(
        "FROM busybox\nONBUILD RUN echo triggered > /onbuild.txt\nONBUILD ENV FROM_TRIGGER=1\n")
    run_cli("-t", "obbase", str(parent), root=root)
    base = json.loads(run_cli("inspect", "obbase", root=root).stdout)[0]
    assert base["Config"]["OnBuild"] == ["RUN echo triggered > /onbuild.txt",
                                         "ENV FROM_TRIGGER=1"]
    (child / "Dockerfile").write_text("FROM obbase\nRUN test \"$(cat /onbuild.txt)\" = "
                                      "triggered && test \"$FROM_TRIGGER\" = 1\n")
    run_cli("-t", "obchild", str(child), root=root)
    config = json.loads(run_cli("inspect", "obchild", root=root).stdout)[0]["Config"]
    assert "OnBuild" not in config and "FROM_TRIGGER=1" in config["Env"]

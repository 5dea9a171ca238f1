"""docs/ci-cache.md's CI recipe, run as written: a lint finding fails the job before
anything is built; a clean Dockerfile builds and leaves explain's JSON as an artifact."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import run_cli

pytestmark = [pytest.mark.root, pytest.mark.overlay]

DOC = Path(__file__).parents[2] / "docs" / "ci-cache.md"


def _recipe() -> str:
    blocks = re.findall(r"```sh\n(#!/bin/sh\n# ci-build.sh.*?)```", DOC.read_text(), re.S)
    assert len(blocks) == 1, "docs/ci-cache.md: the ci-build.sh block is missing"
    return blocks[0]


def _job(workdir: Path, root: Path, tmp_path: Path) -> subprocess.CompletedProcess[bytes]:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    shim = bin_dir / "pybuild"  # the job's `pybuild`: this checkout, this test's store
    shim.write_text(f'#!/bin/sh\nexec {sys.executable} -m builder --root {root} "$@"\n')
    shim.chmod(0o755)
    (workdir / "ci-build.sh").write_text(_recipe())
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}",
           "PYTHONPATH": str(Path(__file__).parents[2])}
    return subprocess.run(["sh", "ci-build.sh"], cwd=workdir, env=env, capture_output=True,
                          timeout=300)


def test_a_lint_finding_fails_the_job_and_a_clean_build_posts_explain(
        tmp_path: Path, busybox_tar: Path) -> None:
    root, workdir = tmp_path / "store", tmp_path / "repo"
    run_cli("import", str(busybox_tar), "busybox", root=root)
    workdir.mkdir()
    (workdir / "Dockerfile").write_text("FROM busybox\nRUN cd /tmp && echo hi > hi\n")
    failed = _job(workdir, root, tmp_path)
    assert failed.returncode == 1, failed.stderr.decode()
    assert b"CdInsteadOfWorkdir" in failed.stdout
    assert not (workdir / "artifacts" / "explain.json").exists()
    assert json.loads((workdir / "artifacts" / "plan.json").read_text())["plan"] is True
    assert len(run_cli("images", "-q", root=root).stdout.split()) == 1  # busybox only

    (workdir / "Dockerfile").write_text("FROM busybox\nWORKDIR /tmp\nRUN echo hi > hi\n")
    passed = _job(workdir, root, tmp_path)
    assert passed.returncode == 0, passed.stderr.decode()
    explain = json.loads((workdir / "artifacts" / "explain.json").read_text())
    assert explain["schemaVersion"] == 1 and explain["summary"]["misses"] == 2
    metadata = json.loads((workdir / "artifacts" / "metadata.json").read_text())
    assert metadata["containerimage.config.digest"] == explain["image"]
    assert (workdir / ".pybuild-cache" / "index.json").is_file()

"""Replaying a fully cached build (issue 17, ``builder.replay``): the same output
without loading the command line, and never when anything the build read changed.

Whether a run was replayed is read from the process itself: a replay never imports
``builder.cli``; a build, even a fully cached one, always does.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from helpers import run_cli
from replay_project import Project

pytestmark = [pytest.mark.root, pytest.mark.overlay]

DOCKERFILE = """\
FROM busybox
COPY src/ /app/src/
COPY *.txt /app/
RUN --mount=type=bind,source=src,target=/src cat /src/a.txt > /copy
ENV X=1
"""

def _cached(project: Project) -> subprocess.CompletedProcess[bytes]:
    """Build until the build is fully cached and recorded; that normal build.  (Not
    ``Project.cached``: its SQLite reads between builds change the database's files,
    which the tests here compare.)"""
    project.build()
    replayed, normal = project.build()
    assert not replayed
    return normal


@pytest.fixture
def project(tmp_path: Path, busybox_tar: Path) -> Project:
    made = Project(tmp_path, busybox_tar, DOCKERFILE)
    (made.context / "src" / "sub").mkdir(parents=True)
    (made.context / "src" / "a.txt").write_text("a\n")
    (made.context / "src" / "sub" / "b.txt").write_text("b\n")
    (made.context / "one.txt").write_text("one\n")
    return made


def test_a_fully_cached_rebuild_is_replayed_with_the_same_output(project: Project) -> None:
    normal = _cached(project)
    before = project.db_state()
    replayed, again = project.build()
    assert replayed
    assert again.stdout == normal.stdout and again.stderr == normal.stderr
    assert b"CACHED" in again.stderr and b"naming to app" in again.stderr
    assert project.db_state() == before  # a replay writes nothing


def _rewrite_same_size_same_mtime(project: Project) -> None:
    path = project.context / "src" / "sub" / "b.txt"
    st = path.stat()
    path.write_text("B\n")
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))


def _parent_becomes_link(project: Project) -> None:
    shutil.copytree(project.context / "src", project.context / "elsewhere", symlinks=True)
    shutil.rmtree(project.context / "src")
    (project.context / "src").symlink_to("elsewhere")


CHANGES: dict[str, Callable[[Project], object]] = {
    "a copied file rewritten, size and mtime kept": _rewrite_same_size_same_mtime,
    "a file added deep in a copied dir":
        lambda p: (p.context / "src" / "sub" / "c.txt").write_text("c\n"),
    "a file added that a wildcard matches": lambda p: (p.context / "two.txt").write_text("2\n"),
    "the Dockerfile edited": lambda p: (p.context / "Dockerfile").write_text(
        DOCKERFILE + "# a comment\n"),
    "a .dockerignore created": lambda p: (p.context / ".dockerignore").write_text("*.md\n"),
    "a copied dir replaced by a link": _parent_becomes_link,
    "the base retagged": lambda p: run_cli("tag", "app", "busybox", root=p.root),
    "the cache pruned": lambda p: run_cli("prune", "--cache", root=p.root),
}


@pytest.mark.parametrize("change", list(CHANGES))
def test_a_change_to_anything_the_build_read_runs_the_build(project: Project,
                                                            change: str) -> None:
    _cached(project)
    CHANGES[change](project)
    replayed, result = project.build()
    assert not replayed, f"replayed after: {change}"
    reference = subprocess.run(
        [sys.executable, "-m", "builder", "--root", str(project.root), "build",
         "--progress", "plain", "-t", "app", str(project.context)], capture_output=True)
    assert reference.returncode == 0
    assert result.stdout == reference.stdout


def test_another_environment_or_argument_is_another_invocation(project: Project) -> None:
    _cached(project)
    env = {**os.environ, "SOURCE_DATE_EPOCH": "0"}
    assert not project.build(env=env)[0]
    assert not project.build("--build-arg", "UNUSED=1")[0]


@pytest.mark.parametrize("flags,files", [
    (("--progress", "rawjson"), {}),
    (("--secret", "id=token,src=secret.txt"), {}),
    ((), {".dockerignore": "src/sub\n!src/sub/b.txt\n"}),
    (("--iidfile", "iid.txt"), {}),
])
def test_builds_a_replay_cannot_check_are_never_recorded(
        project: Project, flags: tuple[str, ...], files: dict[str, str]) -> None:
    (project.tmp / "secret.txt").write_text("s3cret\n")
    for name, text in files.items():
        (project.context / name).write_text(text)
    args = [a.replace("secret.txt", str(project.tmp / "secret.txt"))
            .replace("iid.txt", str(project.tmp / "iid.txt")) for a in flags]
    for _ in range(3):
        replayed, _result = project.build(*args)
        assert not replayed
    with sqlite3.connect(project.root / "pybuild.db") as db:
        assert db.execute("SELECT count(*) FROM replays").fetchone() == (0,)

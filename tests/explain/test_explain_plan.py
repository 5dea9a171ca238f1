"""``pybuild explain --plan`` predicts the build: for each kind of change, the plan's
cache decisions and reason codes are the ones the following real build reports.

Each case builds a baseline, changes one thing, asks for the plan (which must build
nothing), builds, and compares the plan with ``explain --format json`` of the build.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

import pytest
from helpers import run_cli

pytestmark = [pytest.mark.root, pytest.mark.overlay]

DOCKERFILE = """\
FROM busybox AS tools
RUN echo tool > /tool

FROM busybox
ARG FLAVOR=plain
ENV GREETING=hello
WORKDIR /srv
COPY app/ /app/
RUN --mount=type=cache,target=/var/cache/x echo "$GREETING $FLAVOR" > /app/out.txt
COPY --from=tools /tool /tool
RUN echo done > /done
"""


def _edit(old: str, new: str) -> Callable[[Path], list[str]]:
    def change(context: Path) -> list[str]:
        dockerfile = context / "Dockerfile"
        dockerfile.write_text(dockerfile.read_text().replace(old, new))
        return []
    return change


def _write(name: str, text: str) -> Callable[[Path], list[str]]:
    def change(context: Path) -> list[str]:
        (context / name).write_text(text)
        return []
    return change


def _remove(context: Path) -> list[str]:
    (context / "app" / "extra.txt").unlink()
    return []


def _chmod(context: Path) -> list[str]:
    os.chmod(context / "app" / "main.sh", 0o755)
    return []


def _arg(context: Path) -> list[str]:
    return ["--build-arg", "FLAVOR=spicy"]


def _no_cache(context: Path) -> list[str]:
    return ["--no-cache"]


def _nothing(context: Path) -> list[str]:
    return []


# kind of change -> (the change, a reason code the plan and the build must both give)
CASES: dict[str, tuple[Callable[[Path], list[str]], str | None]] = {
    "nothing": (_nothing, None),
    "file-changed": (_write("app/main.sh", "echo changed\n"), "file-changed"),
    "file-added": (_write("app/new.txt", "new\n"), "file-added"),
    "file-removed": (_remove, "file-removed"),
    "mode-changed": (_chmod, "mode-changed"),
    "arg-changed": (_arg, "arg-changed"),
    "env-changed": (_edit("ENV GREETING=hello", "ENV GREETING=howdy"), "env-changed"),
    "instruction-changed": (_edit("echo done", "echo finished"), "instruction-changed"),
    "workdir-changed": (_edit("WORKDIR /srv", "WORKDIR /opt"), "instruction-changed"),
    "cache-mount-only": (_edit("target=/var/cache/x", "target=/var/cache/x,id=other"),
                         "cache-mount-only"),
    "from-changed": (_edit("echo tool", "echo newtool"), "from-changed"),
    "line-inserted": (_edit("WORKDIR /srv\n", "WORKDIR /srv\nRUN echo new > /new\n"),
                      "parent-missed"),
    "no-cache": (_no_cache, "no-cache"),
}


def _decisions(document: dict) -> list[tuple[str, int, str, list[str]]]:
    return [(step["stage"], step["index"], step["cache"],
             [reason["code"] for reason in step["reasons"]]) for step in document["steps"]]


@pytest.fixture
def project(tmp_path: Path, busybox_tar: Path) -> tuple[Path, Path]:
    root, context = tmp_path / "store", tmp_path / "ctx"
    run_cli("import", str(busybox_tar), "busybox", root=root)
    (context / "app").mkdir(parents=True)
    (context / "app" / "main.sh").write_text("echo main\n")
    (context / "app" / "extra.txt").write_text("extra\n")
    (context / "Dockerfile").write_text(DOCKERFILE)
    return root, context


@pytest.mark.parametrize("kind", list(CASES))
def test_the_plan_is_what_the_build_then_does(project, kind: str) -> None:
    root, context = project
    run_cli("-q", "-t", "app", str(context), root=root)
    change, code = CASES[kind]
    flags = change(context)
    images_before = run_cli("images", "-q", root=root).stdout
    plan = json.loads(run_cli("explain", "--plan", "--format", "json", *flags, str(context),
                              root=root).stdout)
    assert plan["plan"] is True and plan["image"] is None
    assert run_cli("images", "-q", root=root).stdout == images_before, "the plan built"
    run_cli("-q", "-t", "app", *flags, str(context), root=root)
    built = json.loads(run_cli("explain", "--format", "json", "app", root=root).stdout)
    assert _decisions(plan) == _decisions(built)
    codes = {c for step in built["steps"] for c in [r["code"] for r in step["reasons"]]}
    if code is None:
        assert all(step["cache"] != "miss" for step in built["steps"]), built
    else:
        assert code in codes, (kind, _decisions(built))


def test_the_plan_says_not_built_before_on_a_fresh_store(project) -> None:
    root, context = project
    images = run_cli("images", "-q", root=root).stdout
    plan = json.loads(run_cli("explain", "--plan", "--format", "json", str(context),
                              root=root).stdout)
    misses = [step for step in plan["steps"] if step["cache"] == "miss"]
    assert misses and all(s["reasons"][0]["code"] == "not-built-before" for s in misses)
    assert run_cli("images", "-q", root=root).stdout == images  # busybox only
    assert not list((root / "cache-mounts").glob("*")), "the plan made a cache mount"

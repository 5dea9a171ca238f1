"""Issue 15 point 7, differential: ``--format`` output next to the docker CLI's own.

An image built by pybuild is saved, ``docker load``-ed, and the same ``--format``
given to ``pybuild`` and ``docker`` for ``images``, ``history`` and ``inspect``.
The outputs must be equal, sizes too (pybuild counts a layer as docker does, the bytes
of its files), but for ``CreatedSince``, which may tick between the two commands.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import run_cli

pytestmark = [pytest.mark.docker, pytest.mark.root, pytest.mark.overlay]

# Per process: two xdist workers may share one daemon (one already running), and
# each loads and removes its own copy.
TAG = f"pybuild-formats-diff-{os.getpid()}:1"
DOCKERFILE = """FROM busybox
LABEL other="x y" com.example.z=1 a.b=c
ENV A=1 B="two words"
COPY f /f
RUN echo 'a long command that goes well beyond forty-five characters for sure' > /g
CMD ["sh", "-c", "echo hi"]
"""
_SINCE = re.compile(r"(Less than a second|1 second|About a minute|\d+ seconds|\d+ minutes) ago")


@pytest.fixture(scope="module")
def loaded(tmp_path_factory: pytest.TempPathFactory, busybox_tar: Path,
           docker: dict[str, str]) -> Iterator[tuple[Path, dict[str, str]]]:
    """(pybuild store, docker environment), the image ``TAG`` in both."""
    base = tmp_path_factory.mktemp("formats")
    root = base / "store"
    run_cli("import", str(busybox_tar), "busybox", root=root)
    context = base / "context"
    context.mkdir()
    (context / "f").write_text("hello\n")
    (context / "Dockerfile").write_text(DOCKERFILE)
    run_cli("build", "-t", TAG, str(context), root=root)
    archive = base / "image.tar"
    run_cli("save", "-o", str(archive), TAG, root=root)
    subprocess.run(["docker", "load", "-i", str(archive)], env=docker, check=True,
                   capture_output=True, timeout=120)
    try:
        yield root, docker
    finally:
        subprocess.run(["docker", "rmi", "-f", TAG], env=docker, capture_output=True,
                       timeout=120)


def _both(loaded: tuple[Path, dict[str, str]], *args: str
          ) -> tuple[subprocess.CompletedProcess[str], subprocess.CompletedProcess[str]]:
    root, env = loaded
    ours = run_cli(*args, root=root, check=False)
    theirs = subprocess.run(["docker", *args], env=env, capture_output=True, timeout=120)
    as_text = [subprocess.CompletedProcess(r.args, r.returncode, r.stdout.decode(),
                                           r.stderr.decode()) for r in (ours, theirs)]
    return as_text[0], as_text[1]


def _masked(text: str) -> str:
    """``text`` with "N seconds ago" masked; where there was one, a table's columns are
    compared by their cells (its width moves the columns)."""
    masked = _SINCE.sub("SINCE", text.rstrip("\n"))
    return re.sub(" {3,}", "   ", masked) if masked != text.rstrip("\n") else masked


@pytest.mark.parametrize("fmt", [
    "table", "{{.ID}}|{{.CreatedBy}}|{{.Comment}}|{{.CreatedAt}}",
    "table {{.ID}}\\t{{.CreatedBy}}\\t{{.Comment}}", "{{.CreatedSince}}\\t{{.Size}}",
    "{{upper .Comment}} {{json .CreatedBy}} {{printf \"%.5s\" .ID}}",
])
@pytest.mark.parametrize("no_trunc", [(), ("--no-trunc",)])
def test_history_formats_as_docker(loaded: tuple[Path, dict[str, str]], fmt: str,
                                   no_trunc: tuple[str, ...]) -> None:
    ours, theirs = _both(loaded, "history", *no_trunc, "--format", fmt, TAG)
    assert theirs.returncode == 0 and ours.returncode == 0, (theirs.stderr, ours.stderr)
    assert _masked(ours.stdout) == _masked(theirs.stdout)
    assert len(theirs.stdout.splitlines()) >= 6  # busybox's, and each step's


@pytest.mark.parametrize("fmt", ["json", "{{json .}}"])
def test_history_json_as_docker(loaded: tuple[Path, dict[str, str]], fmt: str) -> None:
    ours, theirs = _both(loaded, "history", "--format", fmt, TAG)
    rows = [[json.loads(line) for line in out.stdout.splitlines()] for out in (ours, theirs)]
    for row in rows[0] + rows[1]:
        assert _SINCE.fullmatch(row.pop("CreatedSince"))
    assert rows[0] == rows[1]
    assert "\\u003cmissing\\u003e" in ours.stdout and "\\u003cmissing\\u003e" in theirs.stdout


def _our_rows(text: str) -> list[str]:
    """Our ``images`` lists busybox too; docker is asked for ``TAG``'s repository."""
    return [line for line in text.splitlines() if "busybox" not in line]


@pytest.mark.parametrize("fmt", [
    "table", "{{.ID}}|{{.Repository}}|{{.Tag}}|{{.Digest}}|{{.CreatedAt}}",
    "table {{.Repository}}:{{.Tag}}\\t{{.ID}}\\t{{.Digest}}\\t{{.CreatedSince}}",
    "{{json .Repository}} {{lower .Tag}} {{title .Repository}} {{len .ID}}",
])
@pytest.mark.parametrize("no_trunc", [(), ("--no-trunc",)])
def test_images_formats_as_docker(loaded: tuple[Path, dict[str, str]], fmt: str,
                                  no_trunc: tuple[str, ...]) -> None:
    root, env = loaded
    ours = run_cli("images", *no_trunc, "--format", fmt, root=root).stdout.decode()
    theirs = subprocess.run(["docker", "images", *no_trunc, "--format", fmt, TAG.split(":")[0]],
                            env=env, capture_output=True, text=True, check=True,
                            timeout=120).stdout
    assert _masked("\n".join(_our_rows(ours))) == _masked(theirs)
    assert TAG.split(":")[0] in theirs


def test_images_json_as_docker(loaded: tuple[Path, dict[str, str]]) -> None:
    root, env = loaded
    ours = run_cli("images", "--format", "json", root=root).stdout.decode()
    theirs = subprocess.run(["docker", "images", "--format", "json", TAG.split(":")[0]],
                            env=env, capture_output=True, text=True, check=True,
                            timeout=120).stdout
    rows = [[json.loads(line) for line in _our_rows(out)] for out in (ours, theirs)]
    for row in rows[0] + rows[1]:
        assert _SINCE.fullmatch(row.pop("CreatedSince"))
    assert rows[0] == rows[1] and len(rows[0]) == 1


@pytest.mark.parametrize("fmt", [
    "{{.Id}}", "{{.Size}}", "{{.Config.Env}}", "{{index .RepoTags 0}}", "{{json .Config}}",
    "{{json .Config.Labels}}", "{{.Config.Labels}}", "{{.Config.Cmd}}", "{{json .RootFS}}",
    "{{.RootFS}}", "{{.RootFS.Layers}}", "{{.Os}}/{{.Architecture}} {{.Created}} {{.Author}}",
    "{{range .Config.Env}}{{println .}}{{end}}", "{{join .Config.Env \",\"}}",
    "{{.Config.WorkingDir}}|{{.Config.Volumes}}|{{json .Config.Volumes}}|"
    "{{.Config.Healthcheck}}|{{.Config.Entrypoint}}|{{json .Config.Entrypoint}}",
    "{{.Comment}}|{{.Parent}}|{{.RepoDigests}}|{{.DockerVersion}}",
    "{{if .Config.Entrypoint}}e{{else if .Config.Cmd}}c{{end}}",
    "{{index .Config.Labels \"a.b\"}} {{.Config.Labels.other}} {{len .RootFS.Layers}}",
    "{{with .Config}}{{.Cmd}}{{end}} {{json (index .Config.Env 0)}}",
    "{{range $k, $v := .Config.Labels}}{{$k}}={{$v}};{{end}}",
    "{{range $i, $e := .Config.Env}}{{$i}}:{{$e}} {{end}}{{$id := .Id}}{{$id}}",
])
def test_inspect_formats_as_docker(loaded: tuple[Path, dict[str, str]], fmt: str) -> None:
    ours, theirs = _both(loaded, "inspect", "--format", fmt, TAG)
    assert theirs.returncode == 0, theirs.stderr
    assert ours.stdout == theirs.stdout and theirs.stdout.strip()


@pytest.mark.parametrize("args", [
    ("inspect", "--format", "{{.Nope}}", TAG), ("inspect", "--format", "{{.Config.Nope}}", TAG),
    ("inspect", "--format", "{{index .RepoTags 5}}", TAG),
    ("history", "--format", "{{.Nope}}", TAG), ("images", "--format", "{{.Nope}}"),
])
def test_both_refuse_the_same_templates(loaded: tuple[Path, dict[str, str]],
                                        args: tuple[str, ...]) -> None:
    ours, theirs = _both(loaded, *args)
    assert theirs.returncode != 0 and ours.returncode == 2
    assert "Nope" in ours.stderr or "index out of range: 5" in ours.stderr
    assert ours.stderr.count("\n") == 1 and "Traceback" not in ours.stderr

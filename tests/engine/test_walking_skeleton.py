"""The README's path, end to end through the real command line: import, build, explain, save."""

from __future__ import annotations

import json
import os
import tarfile
from pathlib import Path

import pytest
from helpers import REPO, run_cli

pytestmark = [pytest.mark.root, pytest.mark.overlay]


@pytest.fixture
def demo(tmp_path: Path, busybox_tar: Path) -> Path:
    """A store holding busybox and the image built from Containerfile.example."""
    root = tmp_path / "store"
    run_cli("import", str(busybox_tar), "busybox", root=root)
    result = run_cli("-t", "demo", "-f", "Containerfile.example", "--progress", "plain", ".",
                     root=root, cwd=REPO)
    assert b"naming to demo" in result.stderr
    return root


def _layers(archive: Path) -> tuple[dict, list[list[tarfile.TarInfo]]]:
    """The config and each layer's entries, read from a saved archive."""
    with tarfile.open(archive) as outer:
        manifest = json.load(outer.extractfile("manifest.json"))[0]  # type: ignore[arg-type]
        config = json.load(outer.extractfile(manifest["Config"]))  # type: ignore[arg-type]
        layers = []
        for name in manifest["Layers"]:
            with tarfile.open(fileobj=outer.extractfile(name)) as layer:
                layers.append(layer.getmembers())
    return config, layers


def test_containerfile_example_builds_and_explains(demo: Path, tmp_path: Path) -> None:
    explain = run_cli("explain", "demo", root=demo).stdout.decode()
    assert "4 of 8 steps made a layer (the others change only the image's config)" in explain
    for instruction in ("WORKDIR /app", "COPY example/ ./", "RUN chmod 755 hello.sh"):
        assert instruction in explain

    archive = tmp_path / "demo.tar"
    run_cli("save", "-o", str(archive), "demo", root=demo)
    config, layers = _layers(archive)
    assert len(config["rootfs"]["diff_ids"]) == len(layers) == 5
    assert config["config"]["User"] == "app"
    assert config["config"]["Cmd"] == ["/app/hello.sh"]
    assert "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin" in \
        config["config"]["Env"]
    created_by = [h["created_by"] for h in config["history"]]
    assert created_by[1:] == [
        "ENV APP_HOME=/app",
        "LABEL org.opencontainers.image.title=pybuild example",
        "WORKDIR /app",
        "COPY example/ ./ # buildkit",
        'RUN /bin/sh -c chmod 755 hello.sh && echo "hello from a pybuild RUN step" > '
        "greeting.txt # buildkit",
        'RUN /bin/sh -c rm -f /etc/hostname && echo "app:x:1000:1000:app:/app:/bin/false" '
        ">> /etc/passwd # buildkit",
        "USER app",
        'CMD ["/app/hello.sh"]',
    ]
    assert [h.get("empty_layer", False) for h in config["history"][1:]] == \
        [True, True, False, False, False, False, True, True]

    workdir, copy, run1, run2 = ([m.name for m in layer] for layer in layers[1:])
    assert workdir == ["app"]
    assert sorted(copy) == ["app", "app/hello.sh", "app/index.html"]
    assert "app/greeting.txt" in run1
    assert "etc/.wh.hostname" in run2 and "etc/passwd" in run2
    # Mount points and their stubs never reach a layer.
    for layer in layers[1:]:
        for member in layer:
            assert not member.name.startswith(("proc/", "dev/", "sys/"))
            assert member.name not in ("etc/hosts", "etc/resolv.conf")


def test_every_listed_command_is_built(tmp_path: Path) -> None:
    from builder.cli import all_verbs

    # One declaration per verb: a name, its help, its arguments and its handler.
    verbs = all_verbs()
    assert all(callable(verb.arguments) and callable(verb.run) for verb in verbs)
    assert len({verb.name for verb in verbs}) == len(verbs)
    # The router (``_GROUP_OF``) reaches every verb a module declares: one left out of it
    # would be declared but never runnable.
    from builder.cli import build, explain, images, registry

    declared = {v.name for m in (build, explain, images, registry) for v in m.VERBS}
    assert declared == {verb.name for verb in verbs}


def test_help_lists_every_planned_command(tmp_path: Path) -> None:
    text = run_cli("--help", root=tmp_path).stdout.decode()
    for verb in ("build", "explain", "images", "inspect", "history", "tag", "rmi", "save",
                 "load", "import", "df", "prune", "pull", "push", "check", "debug"):
        assert f"    {verb} " in text or f"    {verb}\n" in text, verb


@pytest.mark.parametrize("args, message", [
    (["-t", "x", "/nonexistent-context"], b"is not a directory"),
    (["explain", "nosuch"], b"not found in the local store"),
    (["pull", "Upper/Case"], b"must be lowercase"),
    (["pull", "127.0.0.1:9/x@sha256:abc"], b"invalid"),
    (["push", "nosuch"], b"not found in the local store"),
])
def test_bad_input_is_one_line_without_traceback(tmp_path: Path, args: list[str],
                                                  message: bytes) -> None:
    result = run_cli(*args, root=tmp_path, check=False)
    assert result.returncode != 0
    assert message in result.stderr
    assert b"Traceback" not in result.stderr
    assert result.stderr.count(b"\n") == 1


def test_missing_base_image_names_the_fix(tmp_path: Path) -> None:
    context = tmp_path / "ctx"
    context.mkdir()
    (context / "Dockerfile").write_text("FROM nosuchimage\nRUN true\n")
    result = run_cli(str(context), root=tmp_path / "store", check=False)
    assert result.returncode == 1
    assert b"Dockerfile:1: base image 'nosuchimage' is not in the local store" in result.stderr
    assert b"pybuild import" in result.stderr


def test_failing_run_reports_exit_code_and_output_and_leaves_nothing(tmp_path: Path,
                                                                    busybox_tar: Path) -> None:
    root = tmp_path / "store"
    run_cli("import", str(busybox_tar), "busybox", root=root)
    context = tmp_path / "ctx"
    context.mkdir()
    (context / "Dockerfile").write_text("FROM busybox\nRUN echo about to fail && exit 7\n")
    before = Path("/proc/self/mountinfo").read_text()
    result = run_cli(str(context), root=root, check=False)
    assert result.returncode == 1
    assert b"Dockerfile:2" in result.stderr and b"exit code: 7" in result.stderr
    assert b"about to fail" in result.stderr
    assert Path("/proc/self/mountinfo").read_text() == before
    assert os.listdir(root / "tmp") == []

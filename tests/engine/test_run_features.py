"""RUN heredocs and RUN --mount (cache, secret, bind, tmpfs) through the real CLI."""

from __future__ import annotations

import json
import tarfile
from pathlib import Path

import pytest
from helpers import run_cli

pytestmark = [pytest.mark.root, pytest.mark.overlay]

DOCKERFILE = """\
# Long lines are the point: each RUN shows one mount type.
FROM busybox AS base
RUN mkdir /from-base && echo in-base > /from-base/f
FROM busybox
ARG EXPECT
RUN --mount=type=cache,target=/var/cache/x sh -c 'echo run >> /var/cache/x/log; echo cache-count=$(wc -l < /var/cache/x/log)'
RUN --mount=type=secret,id=tok sh -c 'test "$(cat /run/secrets/tok)" = "$EXPECT" && echo secret-ok'
RUN --mount=type=secret,id=tok,env=TOKEN sh -c 'test "$TOKEN" = "$EXPECT" && echo env-ok'
RUN --mount=type=bind,source=bindme.txt,target=/mnt/b.txt cat /mnt/b.txt
RUN --mount=type=bind,from=base,source=/from-base,target=/fb cat /fb/f
RUN --mount=type=tmpfs,target=/scratch sh -c 'echo x > /scratch/y && grep -c " /scratch " /proc/mounts'
RUN <<EOF
echo heredoc-one
echo heredoc-two > /h.txt
EOF
RUN <<EOF
#!/bin/sh
echo shebang $0
EOF
RUN cat <<A > /a.txt
inside
A
"""  # noqa: E501
SECRET = "the-secret-value-31337"


def _saved(root: Path, tmp: Path) -> tuple[list[str], bytes]:
    """Names in the image's own layers, and every blob's bytes."""
    archive = tmp / "image.tar"
    run_cli("save", "-o", str(archive), "mounts", root=root)
    names = []
    with tarfile.open(archive) as outer:
        manifest = json.load(outer.extractfile("manifest.json"))[0]  # type: ignore[arg-type]
        for name in manifest["Layers"][1:]:
            with tarfile.open(fileobj=outer.extractfile(name)) as layer:
                names += layer.getnames()
        blobs = b"".join(outer.extractfile(m).read()  # type: ignore[union-attr]
                         for m in outer.getmembers() if m.isfile())
    return names, blobs


def test_heredocs_and_mounts(tmp_path: Path, busybox_tar: Path) -> None:
    root = tmp_path / "store"
    run_cli("import", str(busybox_tar), "busybox", root=root)
    context = tmp_path / "ctx"
    context.mkdir()
    (context / "Dockerfile").write_text(DOCKERFILE)
    (context / "bindme.txt").write_text("bound-data\n")
    secret = tmp_path / "secret"
    secret.write_text(SECRET)
    args = ["-t", "mounts", "--progress", "plain", "--build-arg", "EXPECT=the-secret-value-"
            "31337", "--secret", f"id=tok,src={secret}", str(context)]
    output = run_cli(*args, root=root).stderr.decode()
    for expected in ("cache-count=1", "secret-ok", "env-ok", "bound-data", "in-base", "heredoc-one",
                     "shebang /dev/pipes/EOF"):
        assert expected in output, expected
    names, _ = _saved(root, tmp_path)
    assert sorted(names) == ["a.txt", "h.txt"]  # no mount point, secret or cache content
    # The cache mount persists across builds.
    output = run_cli("--no-cache", *args, root=root).stderr.decode()
    assert "cache-count=2" in output


def test_secret_never_reaches_the_image(tmp_path: Path, busybox_tar: Path) -> None:
    root = tmp_path / "store"
    run_cli("import", str(busybox_tar), "busybox", root=root)
    context = tmp_path / "ctx"
    context.mkdir()
    (context / "Dockerfile").write_text(
        "FROM busybox\nRUN --mount=type=secret,id=tok cat /run/secrets/tok > /dev/null "
        "&& touch /done\n")
    secret = tmp_path / "secret"
    secret.write_text(SECRET)
    run_cli("-t", "mounts", "--secret", f"id=tok,src={secret}", str(context), root=root)
    names, blobs = _saved(root, tmp_path)
    assert names == ["done"]
    assert SECRET.encode() not in blobs


def test_missing_required_secret_is_an_error(tmp_path: Path, busybox_tar: Path) -> None:
    root = tmp_path / "store"
    run_cli("import", str(busybox_tar), "busybox", root=root)
    context = tmp_path / "ctx"
    context.mkdir()
    (context / "Dockerfile").write_text(
        "FROM busybox\nRUN --mount=type=secret,id=tok,required=true true\n")
    result = run_cli(str(context), root=root, check=False)
    assert result.returncode == 1
    assert b"secret tok is required" in result.stderr

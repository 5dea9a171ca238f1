"""Round 2, point 14: secret mounts are 0400 root:root by default and honour uid, gid, mode.

BuildKit (moby/buildkit ``client/llb/exec.go``; the Dockerfile's
``RUN --mount=type=secret,id=x,uid=1000,gid=1000,mode=0440``) mounts a copy of the
secret owned by ``uid:gid`` (default 0:0) with ``mode`` (default 0400).  The host
file here is 0644 and owned by 4242:4242, so a bind of it shows up as
``644 4242 4242``: every secret's owner and mode is measured inside a real RUN step.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from security.oracle import build

pytestmark = [
    pytest.mark.root, pytest.mark.overlay,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root: namespaces, overlay"),
]

STAT = "stat -c '%a %u %g'"


@pytest.fixture
def secret(tmp_path: Path) -> Path:
    path = tmp_path / "secret.txt"
    path.write_text("s3cret-value")
    path.chmod(0o644)
    os.chown(path, 4242, 4242)
    return path


@pytest.fixture
def ctx(tmp_path: Path) -> Path:
    path = tmp_path / "ctx"
    path.mkdir()
    return path


def test_round2_secret_mount_owner_and_mode(bstore, ctx, secret, tmp_path):
    out = tmp_path / "out"
    build(bstore, ctx, f"""FROM busybox
RUN --mount=type=secret,id=x {STAT} /run/secrets/x > /default && cat /run/secrets/x > /content
RUN --mount=type=secret,id=x,uid=1000,gid=1001,mode=0440 {STAT} /run/secrets/x > /custom
RUN --mount=type=secret,id=x,target=/etc/tok,uid=7,mode=0604 {STAT} /etc/tok > /target
RUN --mount=type=secret,id=x,mode=4755 {STAT} /run/secrets/x > /setuid
USER 1000
RUN --mount=type=secret,id=x cat /run/secrets/x > /tmp/as-user 2>&1; echo $? > /tmp/denied
RUN --mount=type=secret,id=x,uid=1000 cat /run/secrets/x > /tmp/owned
""", out, "--no-cache", "--secret", f"id=x,src={secret}")
    assert (out / "default").read_text() == "400 0 0\n"
    assert (out / "content").read_text() == "s3cret-value"
    assert (out / "custom").read_text() == "440 1000 1001\n"
    assert (out / "target").read_text() == "604 7 0\n"
    # Only the permission bits, as BuildKit (mode & 0777): no setuid secret.
    assert (out / "setuid").read_text() == "755 0 0\n"
    # A non-root step cannot read a default (root-only) secret, and can read its own.
    assert (out / "tmp" / "denied").read_text() != "0\n"
    assert (out / "tmp" / "owned").read_text() == "s3cret-value"
    # The user's file is untouched and never bound: its owner and mode stay.
    st = os.stat(secret)
    assert (st.st_mode & 0o7777, st.st_uid, st.st_gid) == (0o644, 4242, 4242)


def test_round2_secret_mode_is_in_the_cache_key(bstore, ctx, secret, tmp_path):
    results = []
    for mode in ("0440", "0400"):
        out = tmp_path / f"out{mode}"
        build(bstore, ctx, f"FROM busybox\nRUN --mount=type=secret,id=k,mode={mode} "
              f"{STAT} /run/secrets/k > /mode\n", out, "--secret", f"id=k,src={secret}")
        results.append((out / "mode").read_text())
    assert results == ["440 0 0\n", "400 0 0\n"]

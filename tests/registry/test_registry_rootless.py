"""Pull, push and the registry and local caches, rootless (issue 18 point 5): a user
pushes a rootless build, another rootless store of the user pulls it and builds on it
(its layers extracted through the id map), and both ways of sharing the build cache
reuse the pushed steps.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
from nonroot import User
from registry_server import RegistryServer

pytestmark = [pytest.mark.root, pytest.mark.overlay]


def ok(result: subprocess.CompletedProcess) -> str:
    assert result.returncode == 0, result.stderr.decode(errors="replace")
    assert b"Traceback" not in result.stderr
    return result.stdout.decode() + result.stderr.decode()


def test_push_pull_and_caches_rootless(rootless_user: User, registry: RegistryServer,
                                       busybox_tar: Path) -> None:
    user = rootless_user
    base = user.home / "busybox.tar"
    shutil.copyfile(busybox_tar, base)
    ctx = user.home / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text(
        "FROM busybox\nRUN mkdir /srv && echo hi > /srv/f && chown -R 1000:1000 /srv\n")
    for path in (base, ctx, ctx / "Dockerfile"):
        user.own(path)
    other = ["--root", str(user.home / "other")]
    ref = f"{registry.host}/rootless/app:1"
    cache_ref = f"{registry.host}/rootless/cache:1"
    local_cache = user.home / "cache"

    ok(user.run("import", str(base), "busybox"))
    ok(user.run("save", "-o", str(user.home / "base-image.tar"), "busybox"))
    built = ok(user.run("build", "-q", "-t", ref, "--cache-to",
                        f"type=local,dest={local_cache},mode=max", str(ctx))).split()[0]
    ok(user.run("build", "-q", "-t", ref, "--cache-to", f"type=registry,ref={cache_ref},mode=max",
                str(ctx)))
    ok(user.run("push", ref))

    ok(user.run(*other, "pull", ref))
    assert ok(user.run(*other, "images", "-q", "--no-trunc")).split()[0] == built
    (ctx / "Dockerfile.on").write_text(f"FROM {ref}\nRUN stat -c %u:%g /srv/f > /owner\n")
    user.own(ctx / "Dockerfile.on")
    out = user.home / "out"
    ok(user.run(*other, "build", "-f", str(ctx / "Dockerfile.on"), "-o",
                f"type=tar,dest={out}.tar", str(ctx)))
    listing = subprocess.run(["tar", "-xOf", f"{out}.tar", "--wildcards", "*owner"],
                             capture_output=True, text=True, check=True).stdout
    assert listing == "1000:1000\n"

    for cache in (f"type=local,src={local_cache}", f"type=registry,ref={cache_ref}"):
        fresh = ["--root", str(user.home / f"fresh-{len(cache)}")]
        ok(user.run(*fresh, "load", "-i", str(user.home / "base-image.tar")))
        again = ok(user.run(*fresh, "build", "--progress", "plain", "--cache-from", cache,
                            "-t", "app", str(ctx)))
        assert "CACHED" in again, again

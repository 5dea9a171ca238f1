"""Catalogue 1.K: cache poisoning, one test per row, through real builds.

A cache hit must come only from pybuild's own records, keyed by an unambiguous
serialisation of the parsed step and its real inputs; untrusted image metadata
never supplies a key.  Hits and misses are read from ``--progress plain``
("#N CACHED").
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import tarfile
from pathlib import Path

import pytest
from helpers import run_cli
from security.oracle import TarMaker, build, docker_archive, one_line_error

pytestmark = [
    pytest.mark.root, pytest.mark.overlay,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root: namespaces, overlay"),
]


def _steps(result) -> dict[str, bool]:
    """Step title → whether it was a cache hit, from a plain progress log."""
    titles: dict[str, str] = {}
    cached: dict[str, bool] = {}
    for line in result.stderr.decode().splitlines():
        match = re.match(r"#(\d+) \[[^\]]*\] (.*)", line)
        if match:
            titles[match[1]] = match[2]
            cached[match[2]] = False
        match = re.match(r"#(\d+) CACHED$", line)
        if match:
            cached[titles[match[1]]] = True
    return cached


def _run_cached(root: Path, context: Path, dockerfile: str, *args: str) -> list[bool]:
    """Build; whether each RUN/COPY/ADD/WORKDIR step was a cache hit, in order."""
    result = build(root, context, dockerfile, None, *args)
    return [hit for title, hit in _steps(result).items()
            if title.startswith(("RUN", "COPY", "ADD", "WORKDIR"))]


def _archive(layers: list[bytes], tag: str, history: list[dict]) -> bytes:
    """A docker-archive like ``docker_archive``, with the history given."""
    diff_ids = ["sha256:" + hashlib.sha256(layer).hexdigest() for layer in layers]
    config = json.dumps({"architecture": "amd64", "os": "linux", "config": {},
                         "rootfs": {"type": "layers", "diff_ids": diff_ids},
                         "history": history}).encode()
    config_name = hashlib.sha256(config).hexdigest() + ".json"
    names = [f"{d.removeprefix('sha256:')}/layer.tar" for d in diff_ids]
    manifest = json.dumps([{"Config": config_name, "RepoTags": [tag], "Layers": names}])
    out = TarMaker(tarfile.USTAR_FORMAT)
    for name, data in [(config_name, config), *zip(names, layers, strict=True),
                       ("manifest.json", manifest.encode())]:
        out.add(name, content=data)
    return out.data()


def test_K01_image_history_never_makes_a_cache_hit(tmp_path, busybox_tar, sandbox):
    # An image whose history claims the exact step, with a poisoned /f.
    root = tmp_path / "store"
    run_cli("import", str(busybox_tar), "busybox", root=root)
    layer = TarMaker().add("f", content=b"poisoned\n").data()
    (tmp_path / "evil.tar").write_bytes(_archive(
        [busybox_tar.read_bytes(), layer], "busybox-cache:latest",
        [{"created_by": "pybuild import"},
         {"created_by": "RUN /bin/sh -c echo hi > /f # buildkit"}]))
    run_cli("load", "-i", str(tmp_path / "evil.tar"), root=root)
    out = tmp_path / "out"
    result = build(root, sandbox.dest, "FROM busybox\nRUN echo hi > /f\n", out)
    assert _steps(result) and not any(_steps(result).values())
    assert (out / "f").read_text() == "hi\n"


def test_K02_archive_ids_are_not_identities(tmp_path, busybox_tar, sandbox):
    root = tmp_path / "store"
    # 1. Layer bytes that differ from the diff_id their config claims: refused.
    real = busybox_tar.read_bytes()
    evil_layer = TarMaker().add("bin/sh", content=b"#!evil\n", mode=0o755).data()
    archive = docker_archive([evil_layer], "evil:latest")
    good_id = "sha256:" + hashlib.sha256(real).hexdigest()
    bad_id = "sha256:" + hashlib.sha256(evil_layer).hexdigest()
    (tmp_path / "a.tar").write_bytes(archive.replace(bad_id.encode(), good_id.encode()))
    result = run_cli("load", "-i", str(tmp_path / "a.tar"), root=root, check=False)
    assert result.returncode != 0 and b"Traceback" not in result.stderr
    # 2. The real busybox imported afterwards is the real one, not the claim.
    run_cli("import", str(busybox_tar), "busybox", root=root)
    out = tmp_path / "out"
    build(root, sandbox.dest, "FROM busybox\nRUN head -c2 /bin/sh > /magic\n", out)
    assert (out / "magic").read_bytes() == b"\x7fE"
    # 3. A config member named after another image's ID: the ID is the local hash.
    archive = docker_archive([real], "named:latest")
    with tarfile.open(fileobj=io.BytesIO(archive)) as tf:
        manifest = json.load(tf.extractfile("manifest.json"))  # type: ignore[arg-type]
    config_name = manifest[0]["Config"]
    fake = "0" * 64 + ".json"
    (tmp_path / "b.tar").write_bytes(archive.replace(config_name.encode(), fake.encode()))
    result = run_cli("load", "-i", str(tmp_path / "b.tar"), root=root, check=False)
    if result.returncode == 0:
        image_id = run_cli("inspect", "named:latest", root=root).stdout
        assert b"0" * 64 not in image_id
    else:
        assert b"Traceback" not in result.stderr


@pytest.mark.parametrize("change", [
    ("COPY f /f", "COPY --chown=1:1 f /f"),
    ("COPY f /f", "COPY --chmod=600 f /f"),
    ("COPY f /f", "COPY --link f /f"),
    ("COPY d /d", "COPY --exclude=x d /d"),
    ('RUN echo a "b c" > /o', "RUN echo a b c > /o"),
    ('RUN echo a "b c" > /o', 'RUN ["sh", "-c", "echo a \\"b c\\" > /o"]'),
    ("RUN echo x > /o", 'SHELL ["/bin/sh", "-e", "-c"]\nRUN echo x > /o'),
])
def test_K03_every_instruction_change_busts_the_key(bstore, sandbox, change):
    (sandbox.dest / "f").write_text("f")
    (sandbox.dest / "d").mkdir(exist_ok=True)
    (sandbox.dest / "d" / "x").write_text("x")
    (sandbox.dest / "d" / "y").write_text("y")
    first, second = change
    # A unique first step keeps this test's entries apart from the module's others.
    head = f"FROM busybox\nRUN echo {sandbox.host_dir.name} > /id\n"
    assert _run_cached(bstore, sandbox.dest, head + first + "\n")[-1] is False
    assert _run_cached(bstore, sandbox.dest, head + first + "\n")[-1] is True
    assert _run_cached(bstore, sandbox.dest, head + second + "\n")[-1] is False


def test_K03_metadata_and_platform_are_never_taken_from_a_cached_image(bstore, sandbox,
                                                                       tmp_path):
    # HEALTHCHECK/ONBUILD/SHELL are replayed into the config on every build; the
    # platform is part of every step's key.
    base = f"FROM busybox\nRUN echo {sandbox.host_dir.name} > /id\n"
    for extra, key in (("HEALTHCHECK CMD true", "Healthcheck"), ("ONBUILD RUN true", "OnBuild"),
                       ('SHELL ["/bin/ash", "-c"]', "Shell")):
        build(bstore, sandbox.dest, base, None, "-t", "k03a")
        build(bstore, sandbox.dest, base + extra + "\n", None, "-t", "k03b")
        config_a = json.loads(run_cli("inspect", "k03a", root=bstore).stdout)
        config_b = json.loads(run_cli("inspect", "k03b", root=bstore).stdout)
        text_a, text_b = json.dumps(config_a), json.dumps(config_b)
        assert key not in text_a and key in text_b
    # The key holds the stage's platform: the last stage is the target's (a RUN there
    # would need arm64 emulation, issue 19, so it copies from a BUILDPLATFORM stage).
    df = (f"FROM --platform=$BUILDPLATFORM busybox\nRUN echo {sandbox.host_dir.name} > /id\n"
          "RUN echo p > /p\nFROM scratch\nCOPY --from=0 /p /p\n")
    assert _run_cached(bstore, sandbox.dest, df, "--platform", "linux/amd64")[-1] is False
    assert _run_cached(bstore, sandbox.dest, df, "--platform", "linux/arm64")[-1] is False


def test_K04_content_not_mtime(bstore, sandbox, tmp_path):
    ctx = sandbox.dest
    (ctx / "same").write_text("aaaa")
    (ctx / "mode").write_text("m")
    (ctx / "target1").write_text("1")
    (ctx / "target2").write_text("2")
    os.symlink("target1", ctx / "link")
    df = (f"FROM busybox\nRUN echo {sandbox.host_dir.name} > /id\n"
          "COPY . /c\nRUN cat /c/same > /seen\n")
    assert _run_cached(bstore, ctx, df)[1:] == [False, False]
    assert _run_cached(bstore, ctx, df)[1:] == [True, True]
    # Same size, same mtime, same inode: only ctime and the bytes changed.
    st = os.stat(ctx / "same")
    with open(ctx / "same", "r+") as f:
        f.write("bbbb")
    os.utime(ctx / "same", ns=(st.st_atime_ns, st.st_mtime_ns))
    assert os.stat(ctx / "same").st_mtime_ns == st.st_mtime_ns
    out = tmp_path / "out"
    result = build(bstore, ctx, df, out)
    assert [hit for title, hit in _steps(result).items() if title.startswith("COPY")] == [False]
    assert (out / "seen").read_text() == "bbbb"
    for change in (lambda: os.chmod(ctx / "mode", 0o600),
                   lambda: (os.unlink(ctx / "link"), os.symlink("target2", ctx / "link")),
                   lambda: os.link(ctx / "target1", ctx / "hardlink")):
        change()
        assert _run_cached(bstore, ctx, df)[1] is False
    # A wildcard-matched link that is broken inside the context (its target is a
    # host file): resolved in the context only, so it is "not found" (as in
    # BuildKit) or copied as a link, never read from the host.
    os.symlink(f"{sandbox.host_dir}/hostfile", ctx / "broken.txt")
    (ctx / "ok.txt").write_text("ok")
    result = build(bstore, ctx, "FROM busybox\nCOPY *.txt /w/\n", out, check=False)
    if result.returncode:
        assert "broken.txt" in one_line_error(result)
    else:
        assert os.path.islink(out / "w" / "broken.txt")


def test_K05_secret_value_never_in_the_key_or_store(bstore, sandbox, tmp_path):
    # BuildKit's documented behaviour: a changed secret alone does not bust the
    # step (docker/buildx#551); pybuild matches it and keeps the value out of the
    # key, the inputs, the history and every file of the store.
    secret = tmp_path / "secret"
    df = (f"FROM busybox\nRUN echo {sandbox.host_dir.name} > /id\n"
          "RUN --mount=type=secret,id=tok wc -c /run/secrets/tok > /len\n")
    for value, hit in (("first-secret-0xDEAD", False), ("other-secret-0xBEEF", True)):
        secret.write_text(value)
        assert _run_cached(bstore, sandbox.dest, df, "--secret", f"id=tok,src={secret}")[-1] \
            is hit
    for path in bstore.rglob("*"):
        if path.is_file() and not path.is_symlink():
            data = path.read_bytes()
            assert b"first-secret-0xDEAD" not in data and b"other-secret-0xBEEF" not in data, \
                path


def test_K06_only_used_args_are_in_the_key(bstore, sandbox):
    df = (f"FROM busybox\nARG USED\nRUN echo {sandbox.host_dir.name} $USED > /id\n")
    assert _run_cached(bstore, sandbox.dest, df, "--build-arg", "USED=1",
                       "--build-arg", "UNUSED=1") == [False]
    assert _run_cached(bstore, sandbox.dest, df, "--build-arg", "USED=1",
                       "--build-arg", "UNUSED=2") == [True]
    assert _run_cached(bstore, sandbox.dest, df, "--build-arg", "USED=2") == [False]
    # The warning that ARG values are recorded (BuildKit's SecretsUsedInArgOrEnv),
    # from `pybuild check` (builds print it too: test_round2_buildargs).
    (sandbox.dest / "Dockerfile").write_text("FROM busybox\nARG API_TOKEN\nRUN true\n")
    result = run_cli("check", str(sandbox.dest / "Dockerfile"), root=bstore, check=False)
    assert "SecretsUsedInArgOrEnv" in (result.stdout + result.stderr).decode()


def test_K07_store_is_out_of_reach_and_verified(bstore, sandbox, tmp_path):
    out = tmp_path / "out"
    build(bstore, sandbox.dest, f"FROM busybox\nRUN ls {bstore} > /ls 2>&1; "
          f"touch {bstore}/blobs/x 2>/dev/null; ls /proc/1/root{bstore} >> /ls 2>&1; true\n",
          out, "--no-cache")
    assert "No such file" in (out / "ls").read_text()
    assert not (bstore / "blobs" / "x").exists()
    for blob in (bstore / "blobs" / "sha256").iterdir():
        assert blob.stat().st_mode & 0o777 == 0o400, blob  # write-once, owner's only
    # A blob changed on disk is caught when it is used (export), with its digest.
    result = build(bstore, sandbox.dest, "FROM busybox\nRUN echo k07 > /k07\n", None,
                   "-t", "k07")
    digest = re.search(r"writing image sha256:([0-9a-f]{64})", result.stderr.decode())[1]
    run_cli("save", "-o", str(tmp_path / "ok.tar"), "k07", root=bstore)
    blob = bstore / "blobs" / "sha256" / digest  # the config: the image ID is its digest
    data = bytearray(blob.read_bytes())
    os.chmod(blob, 0o644)
    blob.write_bytes(bytes(data).replace(b"k07", b"K07"))
    result = run_cli("save", "-o", str(tmp_path / "bad.tar"), "k07", root=bstore, check=False)
    assert digest[:12] in one_line_error(result)
    blob.write_bytes(bytes(data))
    os.chmod(blob, 0o400)


def test_K08_cache_mount_content_never_feeds_keys(bstore, sandbox, tmp_path):
    df = (f"FROM busybox\nRUN --mount=type=cache,id=k08,target=/c "
          f"sh -c 'cat /c/planted 2>/dev/null; echo {sandbox.host_dir.name} > /id'\n")
    assert _run_cached(bstore, sandbox.dest, df) == [False]
    # Project B plants content in the shared cache: A's step key does not change,
    # and the layer never includes the cache's content.
    build(bstore, sandbox.dest, "FROM busybox\nRUN --mount=type=cache,id=k08,target=/c "
          "sh -c 'echo planted > /c/planted'\n", None, "--no-cache")
    assert _run_cached(bstore, sandbox.dest, df) == [True]
    out = tmp_path / "out"
    build(bstore, sandbox.dest, df, out, "--no-cache")
    assert not (out / "c" / "planted").exists()
    # The id is hashed into the store, never a path of its own.
    names = [p.name for p in (bstore / "cache-mounts").iterdir() if p.suffix != ".lock"]
    assert names and all(re.fullmatch(r"[0-9a-f]{32}", n) for n in names)


def test_K09_retagged_base_busts_the_cache(tmp_path, busybox_tar, sandbox):
    root = tmp_path / "store"
    run_cli("import", str(busybox_tar), "base", root=root)
    df = "FROM base\nRUN cat /etc/hostname > /h\n"
    assert _run_cached(root, sandbox.dest, df) == [False]
    assert _run_cached(root, sandbox.dest, df) == [True]
    # Same tag, other image (the upstream retag): the key follows the image ID.
    build(root, sandbox.dest, "FROM base\nRUN echo retagged > /etc/hostname\n", None,
          "-t", "base")
    out = tmp_path / "out"
    result = build(root, sandbox.dest, df, out)
    assert not any(hit for title, hit in _steps(result).items() if title.startswith("RUN"))
    assert (out / "h").read_text() == "retagged\n"

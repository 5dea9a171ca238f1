"""Round 2, points 7 and 12: what exports write on the host.

7. Everything below an output directory (``--cache-to type=local``,
   ``-o type=oci|docker,tar=false``, ``-o type=local``) is written beneath it:
   a symlink planted in the dest (by someone else, or by an earlier export
   of a hostile image) is a one-line error, never followed; a hardlink of a
   host file is replaced, never written through.
12. ``-o type=local`` skips device nodes and drops setuid/setgid bits and file
   capabilities unless ``preserve=true`` (BuildKit keeps them for root: a
   deliberate deviation).

Real builds with the real CLI on the ``bstore`` busybox store.
"""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest
from helpers import run_cli
from security.oracle import TarMaker, build, docker_archive, one_line_error

pytestmark = [
    pytest.mark.root,
    pytest.mark.overlay,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root: builds, mknod, setuid"),
]

DOCKERFILE = "FROM busybox\nRUN echo exported > /greeting\n"
EXPORTS = {
    "cache-to": lambda dest: ["--cache-to", f"type=local,dest={dest}"],
    "oci-dir": lambda dest: ["-o", f"type=oci,tar=false,dest={dest}"],
    "docker-dir": lambda dest: ["-o", f"type=docker,tar=false,dest={dest}"],
}
CAP = b"\x01\x00\x00\x02\x00\x20\x00\x00" + b"\x00" * 12  # cap_net_raw+ep (v2)


def _host(tmp_path: Path) -> Path:
    """A host dir outside every dest, with one file whose bytes must not change."""
    host = tmp_path / "host"
    host.mkdir()
    (host / "file").write_bytes(b"host")
    return host


def _untouched(host: Path) -> None:
    assert sorted(os.listdir(host)) == ["file"], os.listdir(host)
    assert (host / "file").read_bytes() == b"host"


def _context(tmp_path: Path) -> Path:
    ctx = tmp_path / "ctx"
    ctx.mkdir(exist_ok=True)
    return ctx


# -- point 7: layout writers ------------------------------------------------------


@pytest.mark.parametrize("kind", sorted(EXPORTS))
def test_P7_symlinked_blob_dir_in_the_dest_is_refused(bstore, tmp_path, kind):
    host = _host(tmp_path)
    dest = tmp_path / "dest"
    (dest / "blobs").mkdir(parents=True)
    (dest / "blobs" / "sha256").symlink_to(host)
    result = build(bstore, _context(tmp_path), DOCKERFILE, None, *EXPORTS[kind](dest),
                   check=False)
    _untouched(host)
    line = one_line_error(result)
    assert "blobs/sha256 is a symlink" in line and str(dest) in line, line
    assert os.readlink(dest / "blobs" / "sha256") == str(host)


@pytest.mark.parametrize("name", ["index.json", "oci-layout"])
@pytest.mark.parametrize("kind", sorted(EXPORTS))
def test_P7_symlinked_layout_file_is_refused(bstore, tmp_path, kind, name):
    host = _host(tmp_path)
    dest = tmp_path / "dest"
    dest.mkdir()
    (dest / name).symlink_to(host / "file")
    result = build(bstore, _context(tmp_path), DOCKERFILE, None, *EXPORTS[kind](dest),
                   check=False)
    _untouched(host)
    line = one_line_error(result)
    assert f"{name} is a symlink" in line, line
    # Nothing half-written is left beside the refused name either.
    assert not [n for n in os.listdir(dest) if ".pybuild-" in n]


@pytest.mark.parametrize("kind", sorted(EXPORTS))
def test_P7_hardlinked_layout_file_is_replaced_not_written_through(bstore, tmp_path, kind):
    host = _host(tmp_path)
    dest = tmp_path / "dest"
    dest.mkdir()
    os.link(host / "file", dest / "index.json")  # same filesystem: tmp_path
    build(bstore, _context(tmp_path), DOCKERFILE, None, *EXPORTS[kind](dest))
    _untouched(host)
    assert (dest / "index.json").stat().st_ino != (host / "file").stat().st_ino
    assert json.loads((dest / "index.json").read_bytes())["schemaVersion"] == 2


def test_P7_exports_into_an_earlier_export_still_work(bstore, tmp_path):
    # The negative control: a dest holding a good earlier export is reused.
    for kind in sorted(EXPORTS):
        dest = tmp_path / kind
        for _ in range(2):
            build(bstore, _context(tmp_path), DOCKERFILE, None, *EXPORTS[kind](dest))
        index = json.loads((dest / "index.json").read_bytes())
        digest = index["manifests"][0]["digest"].split(":", 1)[1]
        assert (dest / "blobs" / "sha256" / digest).is_file()
    fresh = tmp_path / "fresh-store"
    run_cli("load", "-i", str(tmp_path / "oci-dir"), root=fresh)


# -- point 7: -o type=local -----------------------------------------------------------


def test_P7_local_export_never_goes_through_an_earlier_exports_link(bstore, tmp_path):
    # An earlier export of a hostile image left etc2 -> <host dir>; exporting an
    # image whose etc2 is a directory must not write into the host dir.
    host = _host(tmp_path)
    dest = tmp_path / "rootfs"
    build(bstore, _context(tmp_path), f"FROM busybox\nRUN ln -s {host} /etc2\n", dest)
    assert os.readlink(dest / "etc2") == str(host)
    result = build(bstore, _context(tmp_path),
                   "FROM busybox\nRUN mkdir /etc2 && echo pwned > /etc2/file\n", dest,
                   check=False)
    _untouched(host)
    line = one_line_error(result)
    assert "etc2 is a symlink" in line, line


def test_P7_local_export_writes_image_links_as_links(bstore, tmp_path):
    # The image's own symlinks (absolute, to host paths) are recreated, never
    # resolved on the host; exporting twice into the same dest replaces them.
    host = _host(tmp_path)
    dest = tmp_path / "rootfs"
    dockerfile = (f"FROM busybox\nRUN ln -s {host}/file /abs && ln -s ../../{host} /rel "
                  "&& echo hi > /f && ln /f /hard\n")
    for _ in range(2):
        build(bstore, _context(tmp_path), dockerfile, dest)
    _untouched(host)
    assert os.readlink(dest / "abs") == f"{host}/file"
    assert (dest / "f").stat().st_ino == (dest / "hard").stat().st_ino
    assert (dest / "bin" / "busybox").is_file()


# -- point 12: devices and setuid -----------------------------------------------------

SPECIAL = ("FROM busybox\nRUN mknod /mem c 1 1 && chmod 666 /mem && mknod /blk b 7 0 "
           "&& echo x > /suid && chmod 4755 /suid && echo y > /sgid && chmod 2755 /sgid "
           "&& mkfifo /fifo && mkdir /sdir && chmod 2775 /sdir\n")


def test_P12_local_export_skips_devices_and_clears_setuid(bstore, tmp_path):
    dest = tmp_path / "rootfs"
    result = build(bstore, _context(tmp_path), SPECIAL, dest)
    assert not (dest / "mem").exists() and not os.path.lexists(dest / "blk")
    assert stat.S_IMODE((dest / "suid").stat().st_mode) == 0o755
    assert stat.S_IMODE((dest / "sgid").stat().st_mode) == 0o755
    assert stat.S_ISFIFO((dest / "fifo").lstat().st_mode)  # FIFOs are harmless: kept
    assert stat.S_IMODE((dest / "sdir").stat().st_mode) == 0o2775  # dirs keep setgid
    err = result.stderr.decode()
    assert ("pybuild: -o type=local: skipped 2 device nodes, cleared setuid/setgid/file "
            "capabilities on 2 files (preserve=true keeps them)") in err, err


def test_P12_preserve_true_keeps_them(bstore, tmp_path):
    dest = tmp_path / "rootfs"
    result = build(bstore, _context(tmp_path), SPECIAL, None,
                   "-o", f"type=local,dest={dest},preserve=true")
    mem = (dest / "mem").lstat()
    assert stat.S_ISCHR(mem.st_mode) and mem.st_rdev == os.makedev(1, 1)
    assert stat.S_IMODE(mem.st_mode) == 0o666
    assert stat.S_ISBLK((dest / "blk").lstat().st_mode)
    assert stat.S_IMODE((dest / "suid").stat().st_mode) == 0o4755
    assert stat.S_IMODE((dest / "sgid").stat().st_mode) == 0o2755
    assert b"preserve=true keeps them" not in result.stderr


def test_P12_hostile_loaded_image_devices_setuid_and_capabilities(bstore, tmp_path):
    layer = (TarMaker()
             .add("dev/", "dir")
             .add("dev/kmem", "chr", mode=0o666, major=1, minor=2)
             .add("dev/sda", "blk", mode=0o666, major=8, minor=0)
             .add("bin/", "dir")
             .add("bin/rootsh", content=b"#!/bin/sh\n", mode=0o6755)
             .add("bin/rootsh2", "link", target="bin/rootsh")
             .add("bin/ping", content=b"ping", mode=0o755,
                  pax={"SCHILY.xattr.security.capability":
                       CAP.decode("utf-8", "surrogateescape")})
             .data())
    archive = tmp_path / "evil.tar"
    archive.write_bytes(docker_archive([layer], "evil-devices:latest"))
    run_cli("load", "-i", str(archive), root=bstore)
    dest = tmp_path / "rootfs"
    result = build(bstore, _context(tmp_path), "FROM evil-devices\nLABEL x=1\n", dest)
    assert os.listdir(dest / "dev") == []
    for name in ("rootsh", "rootsh2"):
        assert stat.S_IMODE((dest / "bin" / name).stat().st_mode) == 0o755
    assert (dest / "bin" / "rootsh").stat().st_ino == (dest / "bin" / "rootsh2").stat().st_ino
    assert "security.capability" not in os.listxattr(dest / "bin" / "ping")
    assert b"skipped 2 device nodes, cleared setuid/setgid/file capabilities on 2 files" \
        in result.stderr, result.stderr


def test_P12_preserve_is_validated(bstore, tmp_path):
    for spec in ("type=local,dest=x,preserve=yes", "type=oci,dest=x,preserve=true"):
        result = build(bstore, _context(tmp_path), DOCKERFILE, None, "-o", spec, check=False)
        assert result.returncode == 2 and "preserve" in one_line_error(result)


# -- the module itself, both resolution paths -------------------------------------


@pytest.mark.parametrize("openat2", [True, False])
def test_P7_safeout_walk_and_openat2_agree(tmp_path, monkeypatch, openat2):
    from builder.layers import safeout

    monkeypatch.setattr(safeout, "use_openat2", openat2)
    host = _host(tmp_path)
    dest = tmp_path / "dest"
    (dest / "a").mkdir(parents=True)
    (dest / "a" / "link").symlink_to(host)
    (dest / "file").write_bytes(b"x")
    with safeout.OutputDir(dest, "test") as out:
        for rel in ("a/link/new/x", "a/link/x", "file/x"):
            with pytest.raises(safeout.UnsafeOutput, match=r"is a symlink|is not a directory"):
                out.write_bytes(rel, b"pwned")
        out.write_bytes("a/b/c/ok", b"ok")
        with pytest.raises(safeout.UnsafeOutput, match="a/link is a symlink"):
            out.has_blob("a/link", "sha256:" + "0" * 64, 1)
    _untouched(host)
    assert (dest / "a" / "b" / "c" / "ok").read_bytes() == b"ok"

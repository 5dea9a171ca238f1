"""``RUN --mount=type=bind`` of a single file (issue 14, point 8).

BuildKit binds one file as readily as a directory: runc makes the mount point
a file when the source is one (``libcontainer/rootfs_linux.go``
``createMountpoint``), the mount point it had to make never reaches the layer
(``executor/stubs.go``), the bind is read-only unless ``rw`` (whose writes go to
a throw-away snapshot, ``frontend/dockerfile/docs/reference.md`` "RUN
--mount=type=bind"), a ``from=`` source is resolved inside that stage's or
image's root (``executor/oci/spec_linux.go`` ``sub``: ``fs.RootPath``), a
destination inside the step's root (runc's securejoin), and a file of the
build context arrives as the context transfer delivers it: owned by 0:0
(``client/solve.go`` ``resetUIDAndGID``), mode and content kept, and absent
when ``.dockerignore`` excludes it ("not found").  The expected values here
were also checked against ``docker build`` (BuildKit v0.8.4) on this machine.

The two attacks of the brief run for real under the security oracle's
``Sandbox``: a ``source=`` that is a symlink to ``/etc/shadow`` inside a stage
or a loaded image, and a ``target=`` that is a symlink in the rootfs pointing
at a host path (absolute, and escaping with ``..``).
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
from helpers import run_cli
from security.oracle import Sandbox, TarMaker, build, docker_archive, one_line_error

pytestmark = [
    pytest.mark.root, pytest.mark.overlay, pytest.mark.slow,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root: namespaces, overlay, chown"),
]

STAGE = ("FROM busybox AS s\n"
         "RUN echo stagefile > /sf && chmod 751 /sf && chown 12:34 /sf && ln -s /sf /sflink\n")
STAT = "stat -c '%a %u %g %s' {0} > /out/{1}.stat; cat {0} > /out/{1}.cat"


@pytest.fixture
def context(tmp_path: Path) -> Path:
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "f.txt").write_text("hello\n")
    os.chown(ctx / "f.txt", 1234, 567)
    os.chmod(ctx / "f.txt", 0o640)
    (ctx / "ign.txt").write_text("TOPSECRET\n")
    (ctx / ".dockerignore").write_text("ign.txt\nignlink\n")
    os.symlink("f.txt", ctx / "flink")
    return ctx


def _seen(out: Path, name: str) -> tuple[str, str]:
    return ((out / "out" / f"{name}.stat").read_text().strip(),
            (out / "out" / f"{name}.cat").read_text())


@pytest.mark.parametrize("driver", ["overlay", "fuse-overlayfs", "vfs"])
def test_a_file_from_a_stage(bstore: Path, context: Path, tmp_path: Path, driver: str):
    out = tmp_path / "out"
    build(bstore, context, STAGE + "FROM busybox\nRUN mkdir /out\n"
          "RUN --mount=type=bind,from=s,source=/sf,target=/new/dir/f " + STAT.format(
              "/new/dir/f", "new") + "\n"
          "RUN --mount=type=bind,from=s,source=/sflink,target=/etc/passwd "
          + STAT.format("/etc/passwd", "existing") + "\n", out, "--no-cache", driver=driver)
    # The stage's file as it is in the stage: content, mode, owner; a link followed.
    assert _seen(out, "new") == ("751 12 34 10", "stagefile\n")
    assert _seen(out, "existing") == ("751 12 34 10", "stagefile\n")
    # The mount points never reach a layer: /new was made for the mount only, and
    # the image's /etc/passwd is its own again.
    assert not (out / "new").exists()
    assert (out / "etc" / "passwd").read_text().startswith("root:x:0:0:")


def test_a_file_from_an_image(bstore: Path, context: Path, tmp_path: Path):
    build(bstore, context, "FROM busybox\nRUN echo imagefile > /img && chmod 604 /img "
          "&& chown 7:8 /img\n", None, "-t", "d-bindfile-img")
    out = tmp_path / "out"
    build(bstore, context, "FROM busybox\nRUN mkdir /out\n"
          "RUN --mount=type=bind,from=d-bindfile-img,source=img,target=/usr/x "
          + STAT.format("/usr/x", "img") + "\n", out, "--no-cache")
    assert _seen(out, "img") == ("604 7 8 10", "imagefile\n")
    assert not (out / "usr" / "x").exists()


@pytest.mark.parametrize("driver", ["overlay", "fuse-overlayfs", "vfs"])
def test_a_file_from_the_context(bstore: Path, context: Path, tmp_path: Path, driver: str):
    out = tmp_path / "out"
    build(bstore, context, "FROM busybox\nRUN mkdir /out\n"
          "RUN --mount=type=bind,source=f.txt,target=/x " + STAT.format("/x", "x") + "\n"
          "RUN --mount=type=bind,source=flink,target=/etc/group "
          + STAT.format("/etc/group", "group") + "\n", out, "--no-cache", driver=driver)
    # Owned by 0:0 whoever owns it on the host, as BuildKit's transfer sends it.
    assert _seen(out, "x") == ("640 0 0 6", "hello\n")
    assert _seen(out, "group") == ("640 0 0 6", "hello\n")
    assert not (out / "x").exists()
    assert (out / "etc" / "group").read_text().startswith("root:x:0:")


def test_read_only_by_default_and_rw_writes_are_discarded(bstore: Path, context: Path,
                                                          tmp_path: Path):
    write = "sh -c 'echo more >> {0} 2>/dev/null; echo $? > /out/{1}.rc; cat {0} > /out/{1}.cat'"
    out = tmp_path / "out"
    build(bstore, context, STAGE + "FROM busybox\nRUN mkdir /out\n"
          "RUN --mount=type=bind,source=f.txt,target=/x " + write.format("/x", "ctx-ro") + "\n"
          "RUN --mount=type=bind,from=s,source=/sf,target=/x " + write.format("/x", "st-ro")
          + "\n"
          "RUN --mount=type=bind,source=f.txt,target=/x,rw " + write.format("/x", "ctx-rw")
          + "\n"
          "RUN --mount=type=bind,from=s,source=/sf,target=/x,rw " + write.format("/x", "st-rw")
          + "\n"
          # The next step sees the sources as they were.
          "RUN --mount=type=bind,source=f.txt,target=/a --mount=type=bind,from=s,source=/sf,"
          "target=/b cat /a /b > /out/after\n", out, "--no-cache")
    seen = out / "out"
    assert (seen / "ctx-ro.rc").read_text().strip() != "0"
    assert (seen / "st-ro.rc").read_text().strip() != "0"
    assert (seen / "ctx-ro.cat").read_text() == "hello\n"
    assert (seen / "ctx-rw.rc").read_text().strip() == "0"
    assert (seen / "ctx-rw.cat").read_text() == "hello\nmore\n"
    assert (seen / "st-rw.cat").read_text() == "stagefile\nmore\n"
    assert (seen / "after").read_text() == "hello\nstagefile\n"
    assert (context / "f.txt").read_text() == "hello\n"
    assert not (out / "x").exists()


def test_a_changed_file_busts_the_cache(bstore: Path, context: Path, tmp_path: Path):
    dockerfile = "FROM busybox\nRUN --mount=type=bind,source=f.txt,target=/x cat /x > /seen\n"
    build(bstore, context, dockerfile, tmp_path / "o1")
    (context / "f.txt").write_text("changed\n")
    build(bstore, context, dockerfile, tmp_path / "o2")
    assert (tmp_path / "o2" / "seen").read_text() == "changed\n"


@pytest.mark.parametrize("source", ["ign.txt", "ignlink"])
def test_an_ignored_file_is_not_found(bstore: Path, context: Path, source: str):
    os.symlink("ign.txt", context / "ignlink")
    result = build(bstore, context, f"FROM busybox\nRUN --mount=type=bind,source={source},"
                   "target=/x cat /x\n", None, "--no-cache", check=False)
    assert "not found in the build context" in one_line_error(result)
    assert b"TOPSECRET" not in result.stdout + result.stderr


@pytest.mark.parametrize(("mount", "message"), [
    ("source=f.txt,target=/etc", "/etc is a directory in the image"),
    ("from=s,source=/,target=/etc/passwd", "/etc/passwd is not a directory in the image"),
    ("from=s,source=/nothing,target=/x", '"/nothing" not found'),
])
def test_a_kind_mismatch_or_missing_source_is_a_one_line_error(bstore: Path, context: Path,
                                                               mount: str, message: str):
    result = build(bstore, context, STAGE + f"FROM busybox\nRUN --mount=type=bind,{mount} "
                   "true\n", None, "--no-cache", check=False)
    assert message in one_line_error(result)


# -- the attacks ------------------------------------------------------------------------
def _load_evil(root: Path, busybox_tar: Path, tag: str, layer: bytes) -> None:
    archive = root.parent / f"{tag}.tar"
    archive.write_bytes(docker_archive([busybox_tar.read_bytes(), layer], f"{tag}:latest"))
    run_cli("load", "-i", str(archive), root=root)


def test_a_source_symlink_to_etc_shadow_stays_in_the_stage(bstore: Path, busybox_tar: Path,
                                                           sandbox: Sandbox, tmp_path: Path):
    host_shadow = Path("/etc/shadow").read_bytes()
    ups = "../" * 12
    # A loaded image: links to /etc/shadow, absolute and escaping with "..", and to
    # the host dir beside the build; its own /etc/shadow says who it is.
    _load_evil(bstore, busybox_tar, "d-evil-src", TarMaker()
               .add("etc/shadow", content=b"image-shadow\n", mode=0o600)
               .add("abs", "sym", target="/etc/shadow")
               .add("rel", "sym", target=f"{ups}etc/shadow")
               .add("hostdir", "sym", target=f"{sandbox.host_dir}/hostfile").data())
    dockerfile = ("FROM busybox AS s\nRUN echo stage-shadow > /etc/shadow && "
                  f"ln -s /etc/shadow /abs && ln -s {ups}etc/shadow /rel\n"
                  "FROM busybox\nRUN mkdir /out\n")
    for name, source in [("s", "s"), ("img", "d-evil-src")]:
        for link in ("abs", "rel"):
            dockerfile += (f"RUN --mount=type=bind,from={source},source=/{link},target=/x "
                           f"cat /x > /out/{name}-{link}\n")
    out = tmp_path / "out"
    build(bstore, sandbox.dest, dockerfile, out, "--no-cache")
    for name, expected in [("s", "stage-shadow\n"), ("img", "image-shadow\n")]:
        for link in ("abs", "rel"):
            seen = (out / "out" / f"{name}-{link}").read_bytes()
            assert seen == expected.encode() and seen != host_shadow
    # A link to a host path the image lacks is not found in the image: never the host's.
    result = build(bstore, sandbox.dest, "FROM busybox\nRUN --mount=type=bind,from=d-evil-src,"
                   "source=/hostdir,target=/x cat /x\n", None, "--no-cache", check=False)
    assert "not found" in one_line_error(result)
    assert b"host" not in result.stdout


def test_a_target_symlink_never_leaves_the_root(bstore: Path, busybox_tar: Path,
                                                sandbox: Sandbox, tmp_path: Path):
    host_file = sandbox.host_dir / "hostfile"
    ups = "../" * 12
    _load_evil(bstore, busybox_tar, "d-evil-tgt", TarMaker()
               .add("abs", "sym", target=str(host_file))
               .add("rel", "sym", target=f"{ups}{str(host_file).lstrip('/')}")
               .add("absdir", "sym", target=str(sandbox.host_dir))
               .add("etcgroup", "sym", target=f"{ups}etc/group").data())
    (sandbox.dest / "f.txt").write_text("from-context\n")
    out = tmp_path / "out"
    build(bstore, sandbox.dest, "FROM d-evil-tgt\nRUN mkdir /out\n"
          # Absolute and escaping links to a host file: the mount lands where the link
          # leads inside the root (made there for the mount), writes stay in the copy.
          "RUN --mount=type=bind,source=f.txt,target=/abs,rw sh -c 'cat /abs > /out/abs; "
          f"echo pwned > /abs; cat {host_file} > /out/abs-inside'\n"
          "RUN --mount=type=bind,source=f.txt,target=/rel,rw sh -c 'cat /rel > /out/rel; "
          "echo pwned > /rel'\n"
          # A directory mount through a link to a host dir: a cache dir, written to.
          "RUN --mount=type=cache,id=d-evil,target=/absdir/sub sh -c 'touch /absdir/sub/pwned;"
          f" ls {sandbox.host_dir} > /out/dir'\n"
          # A link to a file the image has: the bind covers that file, in the root.
          "RUN --mount=type=bind,source=f.txt,target=/etcgroup cat /etc/group > /out/group\n",
          out, "--no-cache")
    assert (out / "out" / "abs").read_text() == "from-context\n"
    # The write went to the copy bound at the in-root path the link leads to.
    assert (out / "out" / "abs-inside").read_text() == "pwned\n"
    assert (out / "out" / "rel").read_text() == "from-context\n"
    assert (out / "out" / "dir").read_text().split() == ["sub"]
    assert (out / "out" / "group").read_text() == "from-context\n"
    assert host_file.read_text() == "host"
    # The mount points made inside the root are not in the image either.
    assert not (out / str(sandbox.host_dir).lstrip("/")).exists()
    assert (out / "etc" / "group").read_text().startswith("root:x:0:")
    assert subprocess.run(["findmnt", "-rn", str(host_file)], capture_output=True).stdout == b""


def test_mount_point_parents_keep_the_images_owner_mode_and_time(bstore: Path, context: Path,
                                                                 tmp_path: Path):
    # A mount point made below an image directory must not show that directory as the
    # mount point's stub parent (root, 0755, now): runc makes it in the rootfs itself,
    # and a step that writes there would commit the stub's owner and mode.
    out = tmp_path / "out"
    build(bstore, context, "FROM busybox\nRUN mkdir -p /home/u && chown 1000:1001 /home/u "
          "&& chmod 700 /home/u && touch -d '2001-02-03 04:05:06' /home/u && mkdir /out "
          "&& stat -c '%a %u %g %Y' /home/u > /out/before\n"
          "RUN --mount=type=bind,source=f.txt,target=/home/u/.cfg/f "
          "stat -c '%a %u %g %Y' /home/u > /out/during\n"
          "RUN --mount=type=tmpfs,target=/home/u/cache touch /home/u/new\n", out, "--no-cache")
    before = (out / "out" / "before").read_text().split()
    assert before[:3] == ["700", "1000", "1001"]
    assert (out / "out" / "during").read_text().split() == before
    assert (out / "home" / "u").stat().st_uid == 1000
    assert oct((out / "home" / "u").stat().st_mode & 0o777) == "0o700"
    assert not (out / "home" / "u" / ".cfg").exists()
    assert not (out / "home" / "u" / "cache").exists()

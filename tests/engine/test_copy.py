"""COPY/ADD semantics of builder.engine.copy, on plain directories (no overlay needed).

The image root and the context are temp dirs; copy_into runs in-process.  Owner
changes need root, so those tests carry the marker.
"""

from __future__ import annotations

import contextlib
import email.utils
import functools
import gzip
import http.server
import io
import os
import stat
import tarfile
import threading
from pathlib import Path

import pytest

from builder.context.ignore import PatternMatcher
from builder.context.view import ContextFilter
from builder.engine.copy import copy_into
from builder.engine.copy_plan import CopyRequest, clean_source, parse_chmod, select_sources
from builder.errors import BuildError, LayerError


@pytest.fixture
def roots(tmp_path: Path) -> tuple[Path, Path]:
    image, context = tmp_path / "image", tmp_path / "context"
    image.mkdir()
    context.mkdir()
    (image / "etc").mkdir()
    (image / "etc" / "passwd").write_text("root:x:0:0::/root:/bin/sh\napp:x:1000:1001::/:/bin/sh\n")
    (image / "etc" / "group").write_text("root:x:0:\nstaff:x:50:\n")
    return image, context


def copy(image: Path, context: Path, *sources: str, dest: str, **kw) -> None:
    copy_into(str(image), str(context), CopyRequest(sources=list(sources), dest=dest,
                                                    workdir=kw.pop("workdir", "/"), **kw))


def test_file_to_slash_dest_and_rename(roots):
    image, context = roots
    (context / "a.txt").write_text("a")
    copy(image, context, "a.txt", dest="/d/")
    copy(image, context, "a.txt", dest="/file")
    assert (image / "d" / "a.txt").read_text() == "a"
    assert (image / "file").read_text() == "a"
    assert stat.S_IMODE((image / "d").stat().st_mode) == 0o755


def test_directory_contents_not_the_directory(roots):
    image, context = roots
    (context / "dir" / "sub").mkdir(parents=True)
    (context / "dir" / "sub" / "f").write_text("f")
    copy(image, context, "dir", dest="/out")
    assert (image / "out" / "sub" / "f").exists()
    assert not (image / "out" / "dir").exists()


def test_wildcards_follow_go_filepath_match(roots):
    _, context = roots
    for name in ("a.txt", "b.txt", "c.md", "[x].txt"):
        (context / name).write_text(name)
    request = CopyRequest(sources=["[^a].txt", "\\[x\\].txt"], dest="/w/", workdir="/")
    # Go's [^...] negates (Python's fnmatch would read ^ as a literal); \ escapes.
    assert select_sources(str(context), request) == ["b.txt", "[x].txt"]


def test_relative_dest_uses_workdir(roots):
    image, context = roots
    (context / "a.txt").write_text("a")
    copy(image, context, "a.txt", dest="rel/", workdir="/app")
    assert (image / "app" / "rel" / "a.txt").exists()


def test_dest_through_symlinks_stays_in_root(roots):
    image, context = roots
    (context / "a.txt").write_text("a")
    os.symlink("/../../../real", image / "escape")
    os.symlink("/nonexist", image / "dangling")
    copy(image, context, "a.txt", dest="/escape/")
    copy(image, context, "a.txt", dest="/dangling/sub/")
    assert (image / "real" / "a.txt").exists()
    assert (image / "nonexist" / "sub" / "a.txt").exists()
    assert os.path.islink(image / "dangling")


def test_sources_cannot_leave_the_context(roots, tmp_path):
    image, context = roots
    (tmp_path / "secret").write_text("host secret")
    (context / "secret").write_text("context file")
    os.symlink(str(tmp_path / "secret"), context / "abs-link")   # C02: absolute link
    os.symlink("../../secret", context / "rel-link")              # C04: climbing link
    assert clean_source("../../secret") == "secret"               # C01
    copy(image, context, "../secret", "rel-link", dest="/out/")
    for name in ("secret", "rel-link"):
        assert (image / "out" / name).read_text() == "context file"
    # abs-link resolves inside the context, where tmp_path/secret does not exist.
    with pytest.raises(BuildError):
        copy(image, context, "abs-link", dest="/x")


def test_whiteout_named_file_refused(roots):
    image, context = roots
    (context / "d").mkdir()
    (context / "d" / ".wh.etc").write_text("")
    with pytest.raises(BuildError, match=r"\.wh\."):
        copy(image, context, "d", dest="/d/")


def test_fifo_is_recreated_not_opened(roots):
    image, context = roots
    (context / "d").mkdir()
    os.mkfifo(context / "d" / "pipe")   # C11: opening it to read would block forever
    copy(image, context, "d", dest="/d/")
    assert stat.S_ISFIFO(os.lstat(image / "d" / "pipe").st_mode)


def test_hardlinks_and_mtimes_kept(roots):
    image, context = roots
    (context / "d").mkdir()
    (context / "d" / "a").write_text("x")
    os.link(context / "d" / "a", context / "d" / "b")
    os.utime(context / "d" / "a", (1_000_000, 1_000_000))
    os.utime(context / "d", (2_000_000, 2_000_000))
    copy(image, context, "d", dest="/d/")
    a, b = os.stat(image / "d" / "a"), os.stat(image / "d" / "b")
    assert a.st_ino == b.st_ino
    assert a.st_mtime == 1_000_000
    copy(image, context, "d", dest="/e/", parents=False)
    assert os.stat(image / "e" / "a").st_mtime == 1_000_000


@pytest.mark.root
def test_chown_names_from_the_image_and_new_dirs(roots):
    image, context = roots
    (context / "a.txt").write_text("a")
    copy(image, context, "a.txt", dest="/new/deep/", chown="app:staff")
    for path in ("new", "new/deep", "new/deep/a.txt"):
        st = os.stat(image / path)
        assert (st.st_uid, st.st_gid) == (1000, 50), path
    copy(image, context, "a.txt", dest="/u", chown="app")
    assert os.stat(image / "u").st_gid == 1001   # the user's primary group


def test_chmod(roots):
    image, context = roots
    (context / "d").mkdir()
    (context / "d" / "f").write_text("f")
    copy(image, context, "d", dest="/d/", chmod="0751")
    assert stat.S_IMODE(os.stat(image / "d" / "f").st_mode) == 0o751
    with pytest.raises(BuildError):
        parse_chmod("u+x")
    with pytest.raises(BuildError):
        parse_chmod("17777")


def test_exclude_patterns_relative_to_each_source(roots):
    image, context = roots
    (context / "dir" / "sub").mkdir(parents=True)
    for name in ("keep.txt", "x.log", "sub/y.log", "sub/skipme", "sub/take"):
        (context / "dir" / name).write_text(name)
    (context / "top.log").write_text("t")
    copy(image, context, "dir", "*.log", dest="/ex/", exclude=["*.log", "sub/skip*"])
    got = sorted(str(p.relative_to(image / "ex")) for p in (image / "ex").rglob("*"))
    # '*.log' matches at the top of each copied dir only, as in .dockerignore.
    assert got == ["keep.txt", "sub", "sub/take", "sub/y.log"]


def test_dockerignore_still_applies(roots):
    image, context = roots
    (context / "dir").mkdir()
    (context / "dir" / "a").write_text("a")
    (context / "dir" / "b").write_text("b")
    copy(image, context, "dir", dest="/o/",
         ignore=ContextFilter(str(context), PatternMatcher(["dir/b"])))
    assert sorted(os.listdir(image / "o")) == ["a"]


def test_parents_keeps_context_paths(roots):
    image, context = roots
    (context / "a" / "b").mkdir(parents=True)
    (context / "a" / "b" / "1.txt").write_text("1")
    (context / "a" / "c").mkdir()
    (context / "a" / "c" / "f").write_text("f")
    copy(image, context, "a/b/*.txt", "a/c", dest="/p/", parents=True)
    assert (image / "p" / "a" / "b" / "1.txt").exists()
    assert (image / "p" / "a" / "c" / "f").exists()
    copy(image, context, "a/./b/1.txt", dest="/q/", parents=True)
    assert (image / "q" / "b" / "1.txt").exists()


def test_link_is_a_plain_copy(roots):
    image, context = roots
    (context / "a.txt").write_text("a")
    copy(image, context, "a.txt", dest="/l/", link=True)
    assert (image / "l" / "a.txt").read_text() == "a"


def _tar(members: dict[str, bytes], owner: int = 7) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as archive:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size, info.uid, info.gid, info.mode, info.mtime = len(data), owner, owner, 0o640, 5
            archive.addfile(info, io.BytesIO(data))
    return out.getvalue()


@pytest.mark.root
@pytest.mark.parametrize("compress", ["none", "gzip", "bzip2", "xz", "zstd"])
def test_add_extracts_archives_by_content(roots, compress):
    import bz2
    import lzma

    import zstandard

    image, context = roots
    raw = _tar({"top/f": b"data"})
    data = {"none": raw, "gzip": gzip.compress(raw), "bzip2": bz2.compress(raw),
            "xz": lzma.compress(raw), "zstd": zstandard.ZstdCompressor().compress(raw)}[compress]
    (context / "archive.bin").write_bytes(data)     # the name says nothing
    copy(image, context, "archive.bin", dest="/x/", add=True)
    st = os.stat(image / "x" / "top" / "f")
    assert (image / "x" / "top" / "f").read_bytes() == b"data"
    assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode), st.st_mtime) == (7, 7, 0o640, 5)
    copy(image, context, "archive.bin", dest="/y/", add=True, chown="1:2")
    assert os.stat(image / "y" / "top" / "f").st_uid == 1
    copy(image, context, "archive.bin", dest="/z/")     # COPY never extracts
    assert (image / "z" / "archive.bin").read_bytes() == data


def test_add_non_tar_compressed_file_is_copied(roots):
    image, context = roots
    (context / "n.tar.gz").write_bytes(gzip.compress(b"not a tar"))
    copy(image, context, "n.tar.gz", dest="/r/", add=True)
    assert (image / "r" / "n.tar.gz").exists()


def test_add_archive_cannot_escape(roots, tmp_path):
    image, context = roots
    (context / "evil.tar").write_bytes(_tar({"../../escaped": b"x"}))
    # Refusing (a LayerError names the hostile entry) is fine; writing outside is not.
    with contextlib.suppress(BuildError, LayerError):
        copy(image, context, "evil.tar", dest="/x/", add=True)
    assert not (tmp_path / "escaped").exists()
    assert not (image.parent / "escaped").exists()


@pytest.fixture
def http_dir(tmp_path: Path):
    served = tmp_path / "served"
    served.mkdir()
    (served / "remote.txt").write_text("remote")
    os.utime(served / "remote.txt", (1_600_000_000, 1_600_000_000))
    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args) -> None:
            pass

    quiet = functools.partial(Quiet, directory=str(served))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), quiet)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_add_url(roots, http_dir):
    image, context = roots
    url = f"{http_dir}/remote.txt"
    copy(image, context, url, dest="/u/", add=True)
    copy(image, context, url, dest="/u/named", add=True)
    for path in ("u/remote.txt", "u/named"):
        st = os.stat(image / path)
        assert (image / path).read_text() == "remote"
        assert stat.S_IMODE(st.st_mode) == 0o600
        assert st.st_mtime == email.utils.parsedate_to_datetime(
            email.utils.formatdate(1_600_000_000, usegmt=True)).timestamp()


def test_missing_source(roots):
    image, context = roots
    with pytest.raises(BuildError, match="not found"):
        copy(image, context, "nope", dest="/x")


@pytest.mark.parametrize("add", [False, True])
def test_a_wildcard_matching_nothing_copies_nothing(roots, add):
    """BuildKit's Dockerfile frontend copies with AllowEmptyWildcard for COPY and ADD
    (moby/buildkit frontend/dockerfile/dockerfile2llb/convert.go, dispatchCopy); the
    missing plain source beside it is still an error."""
    image, context = roots
    (context / "a.txt").write_text("a")
    before = sorted(p.name for p in image.iterdir())
    copy(image, context, "*.nothing", "a.txt", dest="/d/", add=add)
    assert (image / "d" / "a.txt").read_text() == "a"
    copy(image, context, "nothing*/*.py", dest="/e/", add=add)
    assert sorted(p.name for p in image.iterdir()) == sorted([*before, "d"])
    with pytest.raises(BuildError, match="not found"):
        copy(image, context, "*.nothing", "nope", dest="/x/", add=add)


def test_directory_copy_through_image_symlink_stays_in_root(roots, tmp_path):
    image, context = roots
    host_dir = tmp_path / "hostdir"
    host_dir.mkdir()
    (image / "o").mkdir()
    os.symlink(str(host_dir), image / "o" / "d")     # absolute: a host path if followed
    (context / "dir" / "d").mkdir(parents=True)
    (context / "dir" / "d" / "f").write_text("f")
    copy(image, context, "dir", dest="/o/")
    assert list(host_dir.iterdir()) == []
    assert (image / str(host_dir).lstrip("/") / "f").read_text() == "f"


def test_socket_in_context_becomes_empty_file(roots):
    import socket

    image, context = roots
    (context / "d").mkdir()
    (context / "d" / "f").write_text("f")
    sock = socket.socket(socket.AF_UNIX)
    try:
        sock.bind(str(context / "d" / "s"))
        copy(image, context, "d", dest="/d/")
    finally:
        sock.close()
    assert sorted(os.listdir(image / "d")) == ["f", "s"]
    assert stat.S_ISREG(os.lstat(image / "d" / "s").st_mode)
    assert os.path.getsize(image / "d" / "s") == 0


@pytest.mark.root
def test_device_in_context_refused(roots):
    image, context = roots
    (context / "d").mkdir()
    os.mknod(context / "d" / "null", stat.S_IFCHR | 0o600, os.makedev(1, 3))
    with pytest.raises(BuildError, match="unsupported file type"):
        copy(image, context, "d", dest="/d/")


@pytest.mark.root
@pytest.mark.parametrize("chown, chmod", [(None, None), ("app:staff", None), (None, "0640"),
                                          ("1000:1001", "4755")])
def test_new_files_get_their_owner_and_mode_whatever_the_directory_gives(
        roots: tuple[Path, Path], chown: str | None, chmod: str | None) -> None:
    """Files in directories the copy makes are created with their final mode and chowned
    only when the kernel's default owner differs: a set-gid directory in the image
    (group 50) passes its group to new dirs and files, so they must be chowned to the
    copy's owner, and set-id bits still go through chown, then chmod.  (``sub`` is made
    inside the set-gid /srv, so it inherits the bit.)"""
    image, context = roots
    (image / "srv").mkdir()
    os.chown(image / "srv", 0, 50)
    os.chmod(image / "srv", 0o2775)
    (context / "tree" / "sub").mkdir(parents=True)
    for name, mode in (("plain", 0o644), ("run", 0o4755), ("sub/ro", 0o444)):
        (context / "tree" / name).write_text(name)
        os.chmod(context / "tree" / name, mode)
    umask = os.umask(0o027)
    try:
        copy(image, context, "tree", dest="/srv/", chown=chown, chmod=chmod)
        assert os.umask(0o027) == 0o027   # the copy gave the umask back
    finally:
        os.umask(umask)
    owner = {None: (0, 0), "app:staff": (1000, 50), "1000:1001": (1000, 1001)}[chown]
    for name, mode in (("plain", 0o644), ("run", 0o4755), ("sub/ro", 0o444)):
        st = (image / "srv" / name).stat()
        assert (st.st_uid, st.st_gid) == owner, name
        assert stat.S_IMODE(st.st_mode) == (mode if chmod is None else int(chmod, 8)), name
    assert (image / "srv" / "sub").stat().st_gid == owner[1]


def test_copy_dot_from_a_context_given_as_a_symlink(roots):
    """``pybuild build link`` where ``link -> context``: ``COPY .`` copies the context,
    as ``docker build link`` does (the root was opened with O_NOFOLLOW: "changed while
    being copied (Not a directory)").  Links below the root are still never followed."""
    image, context = roots
    (context / "d").mkdir()
    (context / "d" / "f").write_text("f")
    link = context.parent / "link"
    link.symlink_to(context)
    copy(image, link, ".", dest="/c/")
    assert (image / "c" / "d" / "f").read_text() == "f"

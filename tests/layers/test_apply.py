"""Applying OCI layer tars: overlay mode, merged mode, metadata, failure contract.

Hostile input is in test_hostile_tars.py; this file checks faithful results.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import stat
import subprocess
import tarfile
from pathlib import Path

import pytest

from builder.errors import LayerError
from builder.layers import apply_layer_tar, open_decompressed, write_layer_tar

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root: mknod, chown, trusted.* xattrs"),
]


@pytest.fixture
def dest(tmp_path: Path) -> Path:
    d = tmp_path / "dest"
    d.mkdir(mode=0o700)
    return d


def apply(data: bytes, dest: Path, **kw):
    return apply_layer_tar(io.BytesIO(data), dest, layer="sha256:t", **kw)


def export(layer: Path, **kw) -> bytes:
    out = io.BytesIO()
    write_layer_tar(layer, out, **kw)
    return out.getvalue()


def test_overlay_mode_format(dest, tar):
    data = (tar().add("etc/", "dir").add("etc/.wh.gone").add("etc/keep", content=b"k")
            .add("opq/", "dir").add("opq/.wh..wh..opq").add("opq/x", content=b"x")
            .add("implied/.wh..wh..opq").add(".wh.top").data())
    stats = apply(data, dest, mode="overlay")
    gone = os.lstat(dest / "etc/gone")
    assert stat.S_ISCHR(gone.st_mode) and gone.st_rdev == 0
    assert os.getxattr(dest / "opq", "trusted.overlay.opaque") == b"y"
    assert os.getxattr(dest / "implied", "trusted.overlay.opaque") == b"y"
    assert stat.S_ISCHR(os.lstat(dest / "top").st_mode)
    assert stat.S_IMODE(dest.stat().st_mode) == 0o755
    assert (stats.whiteouts, stats.opaques, stats.files, stats.dirs) == (2, 2, 2, 2)


def test_overlay_mode_rootless_opaque_xattr(dest, tar):
    apply(tar().add("d/.wh..wh..opq").data(), dest, mode="overlay", rootless=True)
    assert os.getxattr(dest / "d", "user.overlay.opaque") == b"y"
    assert "trusted.overlay.opaque" not in os.listxattr(dest / "d")


def test_overlay_mode_dir_over_nondir_is_opaque(dest, tar):
    data = (tar().add(".wh.a").add("a/", "dir").add("a/new", content=b"n")
            .add("f", content=b"f").add("f/child", content=b"c").data())
    apply(data, dest, mode="overlay")
    assert os.getxattr(dest / "a", "trusted.overlay.opaque") == b"y"
    assert os.getxattr(dest / "f", "trusted.overlay.opaque") == b"y"
    assert (dest / "f" / "child").read_bytes() == b"c"


def test_merged_mode_whiteouts_and_opaque(dest, tar):
    apply(tar().add("a/x", content=b"x").add("a/y", content=b"y").add("b/z", content=b"z")
          .add("c", content=b"c").data(), dest, mode="merged")
    apply(tar().add("a/", "dir").add("a/.wh..wh..opq").add("a/new", content=b"n")
          .add(".wh.c").add("b/.wh.z").add(".wh.never").data(), dest, mode="merged")
    assert sorted(os.listdir(dest)) == ["a", "b"]
    assert sorted(os.listdir(dest / "a")) == ["new"]
    assert os.listdir(dest / "b") == []
    assert "trusted.overlay.opaque" not in os.listxattr(dest / "a")


def test_dir_merge_takes_the_entrys_metadata(dest, tar):
    apply(tar().add("d/", "dir", mode=0o700, pax={"SCHILY.xattr.user.old": "1"})
          .add("d/f", content=b"f").data(), dest, mode="merged")
    apply(tar().add("d/", "dir", mode=0o755, uid=7, pax={"SCHILY.xattr.user.new": "2"}).data(),
          dest, mode="merged")
    st = (dest / "d").stat()
    assert (stat.S_IMODE(st.st_mode), st.st_uid) == (0o755, 7)
    assert os.listxattr(dest / "d") == ["user.new"]
    assert (dest / "d" / "f").read_bytes() == b"f"


def test_metadata_is_applied(dest, tar):
    data = (tar().add("f", content=b"f", mode=0o4750, uid=12, gid=34,
                      pax={"mtime": "1600000000.123456789"})
            .add("l", "sym", target="/nowhere", uid=5, gid=6, mtime=1_500_000_000)
            .add("d/", "dir", mode=0o1777, mtime=1_400_000_000)
            .add("d/child", content=b"c", mtime=1_700_000_000)
            .add("p", "fifo", mode=0o640, uid=3).data())
    apply(data, dest, mode="overlay")
    st = os.lstat(dest / "f")
    assert (stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid) == (0o4750, 12, 34)
    assert st.st_mtime_ns == 1_600_000_000_123_456_789
    lst = os.lstat(dest / "l")
    assert (lst.st_uid, lst.st_gid, lst.st_mtime_ns) == (5, 6, 1_500_000_000 * 10**9)
    dst = os.lstat(dest / "d")
    assert stat.S_IMODE(dst.st_mode) == 0o1777
    assert dst.st_mtime_ns == 1_400_000_000 * 10**9  # set after its child was created
    pst = os.lstat(dest / "p")
    assert stat.S_ISFIFO(pst.st_mode) and stat.S_IMODE(pst.st_mode) == 0o640
    assert pst.st_uid == 3


def test_hardlinks_within_the_layer(dest, tar):
    apply(tar().add("a", content=b"data").add("b", "link", target="a")
          .add("c/d", "link", target="./a").data(), dest, mode="overlay")
    inos = {os.lstat(dest / p).st_ino for p in ("a", "b", "c/d")}
    assert len(inos) == 1 and os.lstat(dest / "a").st_nlink == 3


def test_write_apply_write_is_identity(tmp_path, dest):
    layer = tmp_path / "layer"
    (layer / "usr" / "bin").mkdir(parents=True)
    (layer / "usr" / "bin" / "tool").write_bytes(os.urandom(200_000))
    os.chmod(layer / "usr" / "bin" / "tool", 0o4755)
    os.link(layer / "usr" / "bin" / "tool", layer / "usr" / "bin" / "alias")
    os.symlink("/usr/bin/tool", layer / "t")
    os.mknod(layer / "gone", stat.S_IFCHR, 0)
    os.mknod(layer / "null", stat.S_IFCHR | 0o666, os.makedev(1, 3))
    (layer / "o").mkdir()
    os.setxattr(layer / "o", "trusted.overlay.opaque", b"y")
    os.setxattr(layer / "usr" / "bin" / "tool", "security.capability",
                b"\x01\x00\x00\x02" + bytes(16))
    os.chown(layer / "t", 100, 100, follow_symlinks=False)
    first = export(layer)
    apply(first, dest, mode="overlay")
    assert export(dest) == first


def test_gnu_tar_output_applies(tmp_path, dest, manifest):
    tree = tmp_path / "tree"
    (tree / "a" / "b").mkdir(parents=True)
    (tree / "a" / "b" / "f").write_text("gnu")
    os.symlink("b/f", tree / "a" / "l")
    os.link(tree / "a" / "b" / "f", tree / "hard")
    (tree / "x").write_bytes(b"\0" * 70000)
    os.chmod(tree / "x", 0o2711)
    os.setxattr(tree / "x", "user.k", b"v")
    data = subprocess.run(["tar", "--xattrs", "--xattrs-include=user.*", "-C", str(tree),
                           "-cf", "-", "."], capture_output=True, check=True).stdout
    apply(data, dest, mode="merged")
    assert manifest(str(dest)) == manifest(str(tree))


def test_compressed_input_and_src_read_to_end(tmp_path, dest, tar):
    raw = tar().add("f", content=b"x" * 5000).data() + bytes(8192)  # record padding
    seen = hashlib.sha256()

    class Hashing(io.RawIOBase):
        def __init__(self, inner):
            self.inner = inner

        def readable(self):
            return True

        def readinto(self, buf):
            data = self.inner.read(len(buf))
            seen.update(data)
            buf[:len(data)] = data
            return len(data)

    stream = open_decompressed(io.BytesIO(gzip.compress(raw, mtime=0)))
    apply_layer_tar(io.BufferedReader(Hashing(stream)), dest)
    assert seen.hexdigest() == hashlib.sha256(raw).hexdigest()
    assert (dest / "f").read_bytes() == b"x" * 5000


def test_truncated_gzip_is_a_layer_error(dest, tar):
    blob = gzip.compress(tar().add("f", content=os.urandom(100_000)).data())
    with pytest.raises(LayerError, match="sha256:t"):
        apply_layer_tar(open_decompressed(io.BytesIO(blob[: len(blob) // 2])), dest,
                        layer="sha256:t")
    assert not dest.exists()


def test_failure_removes_dest_with_readonly_dirs(dest, tar):
    data = (tar().add("ro/", "dir", mode=0o500).add("ro/f", content=b"f", mode=0o400)
            .add("deep/" * 50 + "f", content=b"x").add("bad", "link", target="missing").data())
    with pytest.raises(LayerError, match="entry 'bad'"):
        apply(data, dest)
    assert not dest.exists()


def test_error_names_layer_and_entry(dest, tar):
    with pytest.raises(LayerError) as info:
        apply(tar().add("ok", content=b"1").add("x/../y", content=b"2").data(), dest)
    assert str(info.value).startswith("layer sha256:t, entry 'x/../y': ")


def test_invalid_mode_argument(dest):
    with pytest.raises(ValueError):
        apply_layer_tar(io.BytesIO(b""), dest, mode="squash")  # type: ignore[arg-type]


def test_global_pax_header_is_tolerated(dest):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT,
                      pax_headers={"comment": "global"}) as tf:
        info = tarfile.TarInfo("g")
        info.size = 1
        tf.addfile(info, io.BytesIO(b"g"))
    apply(buf.getvalue(), dest)
    assert (dest / "g").read_bytes() == b"g"

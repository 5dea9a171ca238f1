"""diff_trees: the vfs driver's (lower, merged) -> layer dir in overlay format."""

from __future__ import annotations

import io
import os
import shutil
import stat
import subprocess
from pathlib import Path

import pytest

from builder.layers import apply_layer_tar, diff_trees, write_layer_tar

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root: mknod, chown, trusted.* xattrs"),
]


def cp_a(src: Path, dst: Path) -> None:
    dst.mkdir(exist_ok=True)
    subprocess.run(["cp", "-dR", "--preserve=mode,ownership,timestamps,links,xattr",
                    f"{src}/.", str(dst)], check=True)


def is_whiteout(path: Path) -> bool:
    st = os.lstat(path)
    return stat.S_ISCHR(st.st_mode) and st.st_rdev == 0


@pytest.fixture
def trees(tmp_path: Path):
    lower = tmp_path / "lower"
    (lower / "etc").mkdir(parents=True)
    (lower / "etc" / "passwd").write_text("root:x:0:0\n")
    (lower / "etc" / "hosts").write_text("127.0.0.1 localhost\n")
    (lower / "usr" / "bin").mkdir(parents=True)
    (lower / "usr" / "bin" / "perl").write_text("perl")
    os.link(lower / "usr" / "bin" / "perl", lower / "usr" / "bin" / "perl5")
    (lower / "usr" / "bin" / "tool").write_text("tool")
    (lower / "var" / "cache").mkdir(parents=True)
    (lower / "var" / "cache" / "a").write_text("a")
    (lower / "was-file").write_text("f")
    (lower / "was-dir").mkdir()
    (lower / "was-dir" / "child").write_text("c")
    os.symlink("etc/passwd", lower / "link")
    merged = tmp_path / "merged"
    cp_a(lower, merged)
    out = tmp_path / "out"
    out.mkdir()
    return lower, merged, out


def test_unchanged_tree_gives_an_empty_layer(trees):
    lower, merged, out = trees
    diff_trees(lower, merged, out)
    assert os.listdir(out) == []


def test_changes_in_overlay_format(trees):
    lower, merged, out = trees
    (merged / "etc" / "passwd").write_text("root:x:0:0\napp:x:1000:1000\n")
    os.chmod(merged / "etc" / "hosts", 0o600)
    (merged / "var" / "cache" / "a").unlink()
    (merged / "new").mkdir()
    (merged / "new" / "file").write_text("n")
    (merged / "was-file").unlink()
    (merged / "was-file").mkdir()
    shutil.rmtree(merged / "was-dir")
    (merged / "was-dir").write_text("now a file")
    os.unlink(merged / "link")
    os.symlink("etc/hosts", merged / "link")
    os.link(merged / "usr" / "bin" / "tool", merged / "usr" / "bin" / "tool2")
    os.setxattr(merged / "usr" / "bin" / "perl", "security.capability",
                b"\x01\x00\x00\x02" + bytes(16))
    diff_trees(lower, merged, out)

    assert (out / "etc" / "passwd").read_text().endswith("app:x:1000:1000\n")
    assert stat.S_IMODE(os.lstat(out / "etc" / "hosts").st_mode) == 0o600
    assert is_whiteout(out / "var" / "cache" / "a")
    assert (out / "new" / "file").read_text() == "n"
    assert os.getxattr(out / "was-file", "trusted.overlay.opaque") == b"y"
    assert (out / "was-dir").read_text() == "now a file"
    assert os.readlink(out / "link") == "etc/hosts"
    tool, tool2 = os.lstat(out / "usr/bin/tool"), os.lstat(out / "usr/bin/tool2")
    assert tool.st_ino == tool2.st_ino
    # perl and perl5 are one inode: both carry the new capability.
    assert os.lstat(out / "usr/bin/perl").st_ino == os.lstat(out / "usr/bin/perl5").st_ino
    # Unchanged entries are not copied; parents keep the merged tree's metadata.
    assert not (out / "etc" / "passwd-").exists() and not (out / "usr/bin/lib").exists()
    assert sorted(os.listdir(out)) == ["etc", "link", "new", "usr", "var", "was-dir",
                                       "was-file"]
    assert os.lstat(out / "var").st_mtime_ns == os.lstat(merged / "var").st_mtime_ns


def test_unchanged_hardlink_group_is_not_a_change(trees):
    lower, merged, out = trees
    (merged / "etc" / "new").write_text("x")
    diff_trees(lower, merged, out)
    assert not (out / "usr").exists()


def test_diff_then_tar_reproduces_the_merged_tree(trees, tmp_path, manifest):
    lower, merged, out = trees
    (merged / "etc" / "passwd").write_text("changed")
    shutil.rmtree(merged / "var")
    (merged / "var").mkdir()
    (merged / "var" / "fresh").write_text("f")
    os.mkfifo(merged / "fifo")
    os.mknod(merged / "null", stat.S_IFCHR | 0o666, os.makedev(1, 3))
    os.chown(merged / "etc", 0, 42)
    diff_trees(lower, merged, out)
    data = io.BytesIO()
    write_layer_tar(out, data, lowers=[lower])
    target = tmp_path / "target"
    cp_a(lower, target)
    apply_layer_tar(io.BytesIO(data.getvalue()), target, mode="merged")
    assert manifest(str(target)) == manifest(str(merged))

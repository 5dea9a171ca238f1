"""Property test: a real overlay upper dir, exported and re-applied, is the merged view.

For random lower trees and random sequences of filesystem operations run on
a real ``mount -t overlay`` (index=off, redirect_dir=off, metacopy=off; in a
forked child after ``unshare(CLONE_NEWNS)``, so no mount reaches the host):

1. ``write_layer_tar(upper)`` applied with ``mode="merged"`` onto a copy of
   the lower gives the merged view (type, mode, owner, content, link target,
   device, allowlisted xattrs, mtime seconds, hardlink groups);
2. the same with ``lowers=[lower]`` (the pruned change set);
3. the vfs path, ``diff_trees(lower, copy of merged)`` then
   ``write_layer_tar(..., lowers=[lower])``, gives the very same tar bytes;
4. the tar applied with ``mode="overlay"`` into a fresh layer dir and mounted
   over the lower shows the merged view again.
"""

from __future__ import annotations

import io
import os
import pickle
import random
import shutil
import signal
import subprocess
import tempfile
import traceback
from pathlib import Path

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from builder import syscalls
from builder.layers import apply_layer_tar, diff_trees, write_layer_tar


def _have_overlay() -> bool:
    try:
        with open("/proc/filesystems") as f:
            return any(line.split()[-1] == "overlay" for line in f if line.strip())
    except OSError:
        return False


pytestmark = [
    pytest.mark.root,
    pytest.mark.overlay,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root to mount overlayfs"),
    pytest.mark.skipif(not _have_overlay(), reason="kernel has no overlay filesystem"),
]

OPTIONS = "index=off,redirect_dir=off,metacopy=off"
NAMES = ["a", "b", "c", "x"]
LOWER_PATHS = ["a", "b", "c", "a/a", "a/b", "a/x", "b/a", "b/b", "a/a/a", "a/a/b", "a/b/c"]
MODES = [0o644, 0o600, 0o755, 0o4755, 0o2750, 0o1777, 0o700, 0o444]
OWNERS = [0, 1000, 65534]
OPS = ["create", "overwrite", "append", "chmod", "chown", "rename", "unlink", "rmtree",
       "recreate", "hardlink", "symlink", "mkfifo", "copyup", "xattr", "mvback", "mkdir",
       "touch", "sneaky"]

lower_entries = st.lists(
    st.tuples(st.sampled_from(LOWER_PATHS), st.sampled_from(["file", "dir", "sym", "fifo", "chr"]),
              st.sampled_from(MODES), st.sampled_from(OWNERS), st.integers(0, 3000),
              st.booleans()),
    max_size=14)
op_lists = st.lists(
    st.tuples(st.sampled_from(OPS), st.integers(0, 999), st.integers(0, 999),
              st.integers(0, 5000)),
    min_size=1, max_size=12)


def _content(seed: int) -> bytes:
    return random.Random(seed).randbytes(seed % 3001)


def build_lower(root: Path, entries: list) -> None:
    for i, (rel, kind, mode, owner, seed, xattr) in enumerate(entries):
        path = root / rel
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            if os.path.lexists(path):
                continue
            if kind == "file":
                path.write_bytes(_content(seed))
            elif kind == "dir":
                path.mkdir()
            elif kind == "sym":
                os.symlink(["../a", "/etc/passwd", "b", "a/b"][seed % 4], path)
            elif kind == "fifo":
                os.mkfifo(path)
            else:
                os.mknod(path, 0o600 | 0o020000, os.makedev(1, 3 + seed % 5))
        except OSError:  # a parent is a file, or a symlink loop: skip the entry
            continue
        os.chown(path, owner, owner, follow_symlinks=False)
        if kind != "sym":
            os.chmod(path, mode)
            if xattr and kind in ("file", "dir"):
                os.setxattr(path, "user.lower", b"%d" % i)
        ns = 1_500_000_000_000_000_000 + seed * 1_000_003
        os.utime(path, ns=(ns, ns), follow_symlinks=False)


def _walk(root: str) -> list[str]:
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in sorted([*dirnames, *filenames]):
            out.append(os.path.relpath(os.path.join(dirpath, name), root))
    return out


def _pick(items: list[str], index: int) -> str | None:
    return items[index % len(items)] if items else None


def run_ops(root: str, ops: list) -> None:
    """Apply the operations to the mounted merged view; a refused op is skipped."""
    for op, i, j, seed in ops:
        paths = _walk(root)
        full = {p: os.path.join(root, p) for p in paths}
        files = [p for p in paths if os.path.isfile(full[p]) and not os.path.islink(full[p])]
        dirs = [""] + [p for p in paths if os.path.isdir(full[p]) and not os.path.islink(full[p])]
        new = os.path.join(root, _pick(dirs, i) or "", NAMES[j % len(NAMES)])
        try:
            if op == "create":
                if os.path.lexists(new):
                    continue  # never open an existing FIFO (or what a link points to)
                Path(new).write_bytes(_content(seed))
            elif op == "overwrite" and files:
                Path(full[_pick(files, i)]).write_bytes(_content(seed))
            elif op == "append" and files:
                with open(full[_pick(files, i)], "ab") as f:
                    f.write(_content(seed)[:100] or b"+")
            elif op == "chmod" and paths:
                target = full[_pick(paths, i)]
                if not os.path.islink(target):
                    os.chmod(target, MODES[seed % len(MODES)])
            elif op == "chown" and paths:
                owner = OWNERS[seed % len(OWNERS)]
                os.chown(full[_pick(paths, i)], owner, owner, follow_symlinks=False)
            elif op == "rename" and paths:
                src = full[_pick(paths, i)]
                if not (new + "/").startswith(src + "/"):
                    try:
                        os.rename(src, new)
                    except OSError as err:
                        if err.errno != 18:  # EXDEV: a merged dir; do what mv does
                            raise
                        subprocess.run(["mv", "-T", src, new], check=False,
                                       capture_output=True)
            elif op == "unlink" and paths:
                target = full[_pick(paths, i)]
                if not os.path.isdir(target) or os.path.islink(target):
                    os.unlink(target)
            elif op == "rmtree" and len(dirs) > 1:
                shutil.rmtree(full[_pick(dirs[1:], i)])
            elif op == "recreate" and len(dirs) > 1:
                target = full[_pick(dirs[1:], i)]
                shutil.rmtree(target)
                os.mkdir(target)
                if seed % 2:
                    Path(target, NAMES[seed % len(NAMES)]).write_bytes(_content(seed))
            elif op == "hardlink" and files:
                os.link(full[_pick(files, i)], new)
            elif op == "symlink":
                os.symlink(["../x", "/etc/passwd", _pick(paths, seed) or "y"][seed % 3], new)
            elif op == "mkfifo":
                os.mkfifo(new)
            elif op == "copyup" and files:
                with open(full[_pick(files, i)], "ab"):
                    pass  # copied up, nothing changed
            elif op == "xattr" and paths:
                target = full[_pick(paths, i)]
                if not os.path.islink(target) and (os.path.isfile(target)
                                                   or os.path.isdir(target)):
                    os.setxattr(target, "user.op", b"%d" % seed)
            elif op == "mkdir":
                os.mkdir(new, MODES[seed % len(MODES)])
            elif op == "touch" and paths:
                os.utime(full[_pick(paths, i)], follow_symlinks=False)
            elif op == "sneaky" and files:
                # Same size, new bytes, old mtime: only a content compare sees it.
                target = full[_pick(files, i)]
                before = os.stat(target)
                with open(target, "r+b") as f:
                    data = f.read()
                    f.seek(0)
                    f.write(bytes(b ^ 0xFF for b in data))
                os.utime(target, ns=(before.st_atime_ns, before.st_mtime_ns))
            elif op == "mvback" and files:
                target = full[_pick(files, i)]
                os.rename(target, target + ".tmp")
                os.rename(target + ".tmp", target)
        except OSError:
            continue


def cp_a(src: str, dst: str) -> None:
    subprocess.run(["cp", "-dR", "--preserve=mode,ownership,timestamps,links,xattr",
                    src + "/.", dst], check=True)


def in_child(func, *args) -> None:
    """Run ``func`` in a forked child with a private mount namespace."""
    fd, path = tempfile.mkstemp()
    os.close(fd)
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            signal.alarm(120)  # a hung operation fails the example instead of the run
            syscalls.unshare(syscalls.CLONE_NEWNS)
            syscalls.mount(None, "/", None, syscalls.MS_REC | syscalls.MS_PRIVATE)
            func(*args)
            code = 0
        except BaseException:
            Path(path).write_text(traceback.format_exc())
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    message = Path(path).read_text()
    os.unlink(path)
    assert os.waitstatus_to_exitcode(status) == 0, message


def _step(work: Path, ops: list, manifest) -> None:
    merged = work / "merged"
    syscalls.mount("overlay", str(merged), "overlay", 0,
                   f"lowerdir={work / 'lower'},upperdir={work / 'upper'},"
                   f"workdir={work / 'work'},{OPTIONS}")
    run_ops(str(merged), ops)
    (work / "expected.pickle").write_bytes(pickle.dumps(manifest(str(merged))))
    cp_a(str(merged), str(work / "merged_copy"))


def _view(work: Path, layer: Path, manifest) -> None:
    view = work / "view"
    syscalls.mount("overlay", str(view), "overlay", syscalls.MS_RDONLY,
                   f"lowerdir={layer}:{work / 'lower'}")
    (work / "view.pickle").write_bytes(pickle.dumps(manifest(str(view))))


def _tar(layer: Path, lowers=()) -> bytes:
    out = io.BytesIO()
    write_layer_tar(layer, out, lowers=lowers)
    return out.getvalue()


def _apply_copy(work: Path, name: str, data: bytes, manifest) -> dict:
    target = work / name
    target.mkdir()
    cp_a(str(work / "lower"), str(target))
    apply_layer_tar(io.BytesIO(data), target, layer=name, mode="merged")
    return manifest(str(target))


@settings(max_examples=100, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(lower=lower_entries, ops=op_lists)
# rm -rf a; mkdir a; mkdir a/a: the new a/a must hide lower a/a/a too.
@example(lower=[("a/a/a", "file", 0o644, 0, 5, False)],
         ops=[("recreate", 0, 0, 0), ("mkdir", 1, 0, 0)])
# mv a b; mv b a and a no-op copy-up: nothing to export with lowers.
@example(lower=[("a", "file", 0o644, 1000, 7, True)],
         ops=[("mvback", 0, 0, 0), ("copyup", 0, 0, 0)])
# Same size, new content, old mtime.
@example(lower=[("a", "file", 0o644, 0, 9, False)], ops=[("sneaky", 0, 0, 0)])
# A file replaced by a directory.
@example(lower=[("a", "file", 0o644, 0, 9, False)],
         ops=[("unlink", 0, 0, 0), ("mkdir", 0, 0, 0)])
def test_overlay_upper_roundtrip(manifest, lower, ops):
    with tempfile.TemporaryDirectory(prefix="pybuild-ovl-") as tmp:
        work = Path(tmp)
        for name in ("lower", "upper", "work", "merged", "merged_copy", "diff", "layer", "view"):
            (work / name).mkdir()
        build_lower(work / "lower", lower)
        in_child(_step, work, ops, manifest)
        expected = pickle.loads((work / "expected.pickle").read_bytes())

        full = _tar(work / "upper")
        assert _apply_copy(work, "applied_full", full, manifest) == expected
        pruned = _tar(work / "upper", lowers=[work / "lower"])
        assert _apply_copy(work, "applied_pruned", pruned, manifest) == expected

        diff_trees(work / "lower", work / "merged_copy", work / "diff")
        assert _tar(work / "diff", lowers=[work / "lower"]) == pruned

        apply_layer_tar(io.BytesIO(full), work / "layer", mode="overlay")
        in_child(_view, work, work / "layer", manifest)
        assert pickle.loads((work / "view.pickle").read_bytes()) == expected

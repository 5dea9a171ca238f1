"""The vfs snapshot driver: a full copy of the parent's tree, committed by a tree diff.

For machines where overlay cannot be mounted (no kernel support, or a store on
a filesystem overlay refuses as upper).  A snapshot's work dir holds::

    base/   the parent chain's merged tree, made by applying each layer in order
    tree/   a copy of base/; the step writes here (bind-mounted at the target)
    diff/   made at commit: diff_trees(base, tree) in overlay format

so the store only ever receives overlay-format layer dirs, committed through
the same ``Store.commit_layer`` path as the overlay driver's upper dirs, and
both drivers give the same layer tar for the same change.

The cost is what Docker's vfs driver pays: every prepare copies the whole
parent tree (twice here, since store layers are change sets, not full trees)
and every commit walks both trees.  That is the point of having overlay.
"""

from __future__ import annotations

import json
import os
import stat
import threading
from pathlib import Path
from typing import TypedDict

from builder import syscalls
from builder.errors import SandboxError
from builder.snapshot.base import Commit, SnapshotBase, commit_upper
from builder.store.store import Store, remove_tree

_STUBS = "vfs-stubs.json"


class _Stub(TypedDict):
    """One mount-point stub made in the tree, as recorded in ``_STUBS``."""

    rel: str              # its path in the tree
    parent_mtime: int     # its parent dir's times before it was made (restored at commit)
    parent_atime: int
    after: int            # the parent's mtime right after (changed since: keep it)


class VfsSnapshot(SnapshotBase):
    """A vfs snapshot: ``base/`` the parent's tree, ``tree/`` the copy a step writes."""

    @property
    def base(self) -> Path:
        return self.work.path / "base"

    @property
    def tree(self) -> Path:
        return self.work.path / "tree"

    def mount(self, target: str, *, readonly: bool = False) -> None:
        """Bind-mount the snapshot's tree at ``target``; only in a private mount namespace."""
        self.check_active("mount")
        if self.extra_lowers:
            self._add_stubs()
        try:
            syscalls.mount(str(self.tree), target, None, syscalls.MS_BIND)
            if readonly:
                syscalls.mount(None, target, None,
                               syscalls.MS_BIND | syscalls.MS_REMOUNT | syscalls.MS_RDONLY)
        except OSError as err:
            raise SandboxError(f"cannot bind-mount vfs snapshot at {target}: "
                               f"{err.strerror}") from None

    def _add_stubs(self) -> None:
        """Lay the extra lowers' entries (mount-point stubs) into the tree.

        An overlay keeps them in a lower layer; here they must be real entries, so
        each one made is recorded in the work dir (the mount runs in a child, the
        commit in the parent) with its parent dir's mtime, and removed at commit.
        """
        path = self.work.path / _STUBS
        made: list[_Stub] = json.loads(path.read_text()) if path.exists() else []
        for lower in self.extra_lowers:
            for dirpath, dirnames, filenames in os.walk(lower):
                rel_dir = os.path.relpath(dirpath, lower)
                for name in sorted([*dirnames, *filenames]):
                    rel = os.path.normpath(os.path.join(rel_dir, name))
                    dest = self.tree / rel
                    if os.path.lexists(dest):
                        continue
                    if not _real_dirs(self.tree, rel):
                        # The sandbox refuses such targets; never follow an image's
                        # symlink (it may be absolute) out of the tree.
                        raise SandboxError(f"mount point /{rel}: a parent is not a "
                                           "directory in the image")
                    parent_st = os.lstat(dest.parent)
                    src_st = os.lstat(os.path.join(dirpath, name))
                    if stat.S_ISDIR(src_st.st_mode):
                        os.mkdir(dest, stat.S_IMODE(src_st.st_mode))
                    elif stat.S_ISREG(src_st.st_mode):
                        os.close(os.open(dest, os.O_CREAT | os.O_EXCL | os.O_WRONLY,
                                         stat.S_IMODE(src_st.st_mode)))
                    else:
                        continue
                    os.chown(dest, src_st.st_uid, src_st.st_gid)
                    os.chmod(dest, stat.S_IMODE(src_st.st_mode))
                    made.append({"rel": rel, "parent_mtime": parent_st.st_mtime_ns,
                                 "parent_atime": parent_st.st_atime_ns,
                                 "after": os.lstat(dest.parent).st_mtime_ns})
        path.write_text(json.dumps(made))

    def _remove_stubs(self) -> None:
        path = self.work.path / _STUBS
        if not path.exists():
            return
        stubs: list[_Stub] = json.loads(path.read_text())
        # Last made first, so a stub dir is emptied of its stub children before it goes.
        for stub in reversed(stubs):
            dest = self.tree / stub["rel"]
            try:
                st = os.lstat(dest)
                parent_st = os.lstat(dest.parent)
                if stat.S_ISDIR(st.st_mode):
                    os.rmdir(dest)
                elif stat.S_ISREG(st.st_mode) and st.st_size == 0:
                    os.unlink(dest)
                else:
                    continue
            except OSError:
                continue  # the step changed it: it is the step's, keep it
            # Making and removing the stub are not the step's changes: undo their
            # effect on the parent's mtime, but keep a change the step made there.
            changed = parent_st.st_mtime_ns != stub["after"]
            mtime = parent_st.st_mtime_ns if changed else stub["parent_mtime"]
            os.utime(dest.parent, ns=(parent_st.st_atime_ns, mtime), follow_symlinks=False)
        path.unlink()

    def commit(self, *, source_date_epoch: int | None = None) -> Commit:
        """Diff the tree against the base into an overlay-format layer dir and store it."""
        from builder.layers.diff import diff_trees

        self.check_active("commit")
        self._remove_stubs()
        self.upper.mkdir()
        diff_trees(self.base, self.tree, self.upper)

        def drop_trees() -> None:
            # Drop the two full trees now rather than under the store lock in commit_layer.
            for tree in (self.base, self.tree):
                if tree.exists():
                    remove_tree(tree)
        return commit_upper(self, source_date_epoch=source_date_epoch, before_store=drop_trees)


class VfsDriver:
    name = "vfs"

    def __init__(self, store: Store) -> None:
        self.store = store

    def prepare(self, parent: str | None) -> VfsSnapshot:
        from builder.layers.diff import diff_trees

        self.store.unpack(parent)
        work = self.store.tmp_dir("snap")
        try:
            snapshot = VfsSnapshot(self.store, parent, work)
            snapshot.base.mkdir(mode=0o755)
            materialize(self.store, parent, snapshot.base)
            # A full copy that keeps owners, modes, xattrs, times and hardlinks.
            empty = work.path / "empty"
            empty.mkdir()
            snapshot.tree.mkdir()
            diff_trees(empty, snapshot.base, snapshot.tree)
            empty.rmdir()
        except BaseException:
            work.release()
            raise
        return snapshot


def materialize(store: Store, top: str | None, dest: Path) -> None:
    """Make ``dest`` (an empty dir) the merged tree of ``top``'s chain, base layer first.

    Each layer is streamed as its tar (against its own lowers, so its whiteouts
    are kept) straight into ``apply_layer_tar(mode="merged")``: one code path
    for whiteouts and opaque dirs, and nothing is written but the tree.
    """
    dirs = list(reversed(store.lower_dirs(top)))      # base first
    for index, layer_dir in enumerate(dirs):
        lowers = list(reversed(dirs[:index]))          # its parents, topmost first
        _apply_layer_dir(layer_dir, lowers, dest)


def _apply_layer_dir(layer_dir: Path, lowers: list[Path], dest: Path) -> None:
    from builder.layers.apply import apply_layer_tar
    from builder.layers.tar_write import write_layer_tar

    read_fd, write_fd = os.pipe()
    failure: list[BaseException] = []

    def produce() -> None:
        try:
            with os.fdopen(write_fd, "wb", buffering=1 << 20) as out:
                write_layer_tar(layer_dir, out, lowers=lowers)
        except BrokenPipeError:
            pass  # the reader failed; its error is the one to report
        except BaseException as err:
            failure.append(err)

    writer = threading.Thread(target=produce, name="vfs-materialize", daemon=True)
    writer.start()
    try:
        with os.fdopen(read_fd, "rb", buffering=1 << 20) as src:
            apply_layer_tar(src, dest, mode="merged")
    finally:
        writer.join()
    if failure:
        raise failure[0]


def _real_dirs(root: Path, rel: str) -> bool:
    """Whether every parent of ``rel`` under ``root`` is a directory, not a symlink."""
    path = root
    for part in Path(rel).parts[:-1]:
        path = path / part
        try:
            if not stat.S_ISDIR(os.lstat(path).st_mode):
                return False
        except FileNotFoundError:
            return False
    return True

"""Where a RUN step's extra mounts go, and how they get there.

Mount destinations are resolved as runc resolves them (securejoin): inside
the step's root with chroot semantics, a symlink on the way or at the end
followed there and never out of it.  The mount points the image lacks are
made in the step's "init" lower layer (``make_stub``), at the resolved path.
In PID 1, every mount is made onto an ``O_PATH`` fd that the kernel resolved
inside the root (``openat2(RESOLVE_IN_ROOT)``), never onto a path string, so
a symlink in the image, or one that an earlier mount of the same step brings
along, cannot move a mount out of the root (runc CVE-2021-30465).  Sources
inside another stage or image (``from=``) are resolved the same way inside
that view (BuildKit resolves them with ``fs.RootPath`` inside the snapshot,
``executor/oci/spec_linux.go`` ``sub``).

A bind may be a single file: the mount point is then a file, and a file from
the build context is bound as BuildKit's context transfer delivers it (owned
by 0:0, ``client/solve.go`` ``resetUIDAndGID``), from a copy when it is not.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
from pathlib import Path
from typing import TYPE_CHECKING

from builder import syscalls
from builder.errors import BuildError
from builder.rootpath import open_below, resolve_components

if TYPE_CHECKING:
    from builder.run.spec import MountSpec

_HOST_FLAGS = syscalls.MS_NODEV | syscalls.MS_NOSUID
_COPY_CHUNK = 1 << 24


def open_in_root(root: str, path: str) -> int:
    """An ``O_PATH`` fd of ``path`` inside ``root``, symlinks (the last one too)
    followed with chroot semantics by the kernel.  FileNotFoundError if missing."""
    root_fd = os.open(root, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        rel = os.fsencode(path.lstrip("/") or ".")
        for _ in range(3):  # EAGAIN: a rename raced a ".." lookup; nothing else runs
            try:
                return syscalls.openat2(root_fd, rel, os.O_PATH | os.O_CLOEXEC,
                                        syscalls.RESOLVE_IN_ROOT
                                        | syscalls.RESOLVE_NO_MAGICLINKS)
            except OSError as err:
                if err.errno in (errno.ENOENT, errno.ENOTDIR):
                    raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT),
                                            path) from None
                if err.errno not in (errno.ENOSYS, errno.EPERM, errno.EAGAIN):
                    raise
        # No openat2 (kernel < 5.6): the same resolution in user space.  Nothing in
        # the step runs yet, so the tree cannot change between the walk and the open.
        parts = resolve_components(root, path)
        if parts is None:
            raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), path)
        return os.open("/".join(parts) or ".", os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC,
                       dir_fd=root_fd)
    finally:
        os.close(root_fd)


def source_is_dir(root: str, path: str) -> bool:
    """Is ``path`` inside ``root`` (see open_in_root) a directory?  BuildError if missing."""
    try:
        fd = open_in_root(root, path)
    except FileNotFoundError:
        raise BuildError(f'--mount from: "/{path.lstrip("/")}" not found') from None
    try:
        return stat.S_ISDIR(os.fstat(fd).st_mode)
    finally:
        os.close(fd)


# -- mount points in the init layer ---------------------------------------------
CopiedDirs = list[tuple[Path, os.stat_result]]


def make_stub(merged: str, init: Path, target: str, is_dir: bool, copied: CopiedDirs) -> None:
    """A mount point for ``target`` in the init layer, unless the image has one.

    ``target`` is resolved in the image at ``merged`` (chroot semantics) and the
    stub made where it leads: a directory, or a file for a file bind.  The
    image's directories above a missing mount point are made in the init layer
    with their mode and owner (their times go in ``copied``, for finish_stubs),
    so the step still sees them as the image has them.
    """
    parts = resolve_components(merged, target, keep_missing=True)
    if parts is None:
        raise BuildError(f"mount target {target}: a parent is not a directory in the image")
    if not parts:
        raise BuildError(f"invalid mount target {target!r}: it is the root directory")
    shown = "/" + "/".join(parts)
    for depth in range(1, len(parts) + 1):
        try:
            st = os.lstat(os.path.join(merged, *parts[:depth]))
        except FileNotFoundError:
            break
        if depth < len(parts):
            continue
        if is_dir and not stat.S_ISDIR(st.st_mode):
            raise BuildError(f"mount target {target}: {shown} is not a directory in the image")
        if not is_dir and stat.S_ISDIR(st.st_mode):
            raise BuildError(f"mount target {target}: {shown} is a directory in the image, "
                             "the source a file")
        return
    missing = depth
    for level in range(1, missing):  # the image's own directories on the way
        stub = init.joinpath(*parts[:level])
        if not os.path.lexists(stub):
            st = os.lstat(os.path.join(merged, *parts[:level]))
            stub.mkdir()
            os.chown(stub, st.st_uid, st.st_gid)
            os.chmod(stub, stat.S_IMODE(st.st_mode))
            copied.append((stub, st))
    for level in range(missing, len(parts) + 1):
        stub = init.joinpath(*parts[:level])
        if os.path.lexists(stub):
            continue
        if level == len(parts) and not is_dir:
            os.close(os.open(stub, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
                             | os.O_CLOEXEC, 0o644))
            os.chmod(stub, 0o644)
        else:
            stub.mkdir()
            os.chmod(stub, 0o755)


def finish_stubs(copied: CopiedDirs) -> None:
    """Give the copied image directories their times back, deepest first (making an
    entry in a directory changes its mtime)."""
    for stub, st in sorted(copied, key=lambda item: -len(item[0].parts)):
        os.utime(stub, ns=(st.st_atime_ns, st.st_mtime_ns))


# -- the mounts, in PID 1 before pivot_root --------------------------------------
def _at(fd: int) -> str:
    return f"/proc/self/fd/{fd}"


def _onto(merged: str, target: str, source: str | None, fstype: str | None, flags: int,
          data: str | None = None) -> None:
    """mount(2) onto ``target`` resolved in the root at ``merged`` (an fd, never a path)."""
    fd = open_in_root(merged, target)
    try:
        syscalls.mount(source, _at(fd), fstype, flags, data)
    finally:
        os.close(fd)


def _bind(merged: str, target: str, source: str, *, readonly: bool, extra: int = 0) -> None:
    """Bind ``source`` (a path or an fd path) at ``target``, then set its flags: a bind
    takes them only from a remount of the new mount, which ``target`` now resolves to."""
    _onto(merged, target, source, None, syscalls.MS_BIND | syscalls.MS_REC)
    _onto(merged, target, None, None, syscalls.MS_BIND | syscalls.MS_REMOUNT | extra
          | (syscalls.MS_RDONLY if readonly else 0))


def mount_extra(merged: str, mount: MountSpec, scratch: Path) -> None:
    """Make one of the step's extra mounts (``RUN --mount``, secrets) in the root at ``merged``."""
    if mount.kind == "tmpfs":
        _onto(merged, mount.target, "tmpfs", "tmpfs", _HOST_FLAGS, mount.options or None)
    elif mount.kind == "secret":
        _mount_secret(merged, mount, scratch)
    elif mount.kind == "view":  # mounted at scratch/view by the setup child
        try:
            source = open_in_root(str(scratch / "view"), mount.source or "/")
        except FileNotFoundError:
            raise BuildError(f'--mount from: "/{mount.source.lstrip("/")}" not found') from None
        try:
            # rw: the view was mounted writable over a throw-away upper dir.
            _bind(merged, mount.target, _at(source), readonly=mount.readonly,
                  extra=syscalls.MS_NODEV)
        finally:
            os.close(source)
    elif mount.kind == "context-file":
        _mount_context_file(merged, mount, scratch)
    elif mount.kind == "context-dir":
        _mount_context_dir(merged, mount, scratch)
    else:
        _mount_host_dir(merged, mount)


def _mount_context_dir(merged: str, mount: MountSpec, scratch: Path) -> None:
    """A directory of the build context at ``mount.target``: read-only, or ``rw`` over
    a throw-away upper dir, with what .dockerignore hides whited out.

    The directory is opened below the context without following any link
    (``_open_beneath``) and mounted through that fd: the step sees the directory its
    key summed, never one a link swapped in since (the context changed under the
    build: a path string would have been followed to the host, C03)."""
    fd = _open_beneath(mount.source, mount.subpath)
    try:
        if not stat.S_ISDIR(os.fstat(fd).st_mode):
            raise BuildError(f"--mount type=bind: /{mount.subpath} in the build context is no "
                             "longer a directory (did the build context change during the "
                             "build?)")
        # The whiteouts are written here, when the step runs: a cache hit costs no walk
        # of the context.
        hidden = mount.hide is not None and mount.hide(str(scratch / "hide"))
        if not hidden and mount.readonly:
            _bind(merged, mount.target, _at(fd), readonly=True, extra=_HOST_FLAGS)
            return
        from builder.run.ctxmount import mount_filtered, mount_overlay

        target = open_in_root(merged, mount.target)
        try:
            if hidden:
                mount_filtered(_at(fd), str(scratch / "hide"), _at(target), scratch,
                               writable=not mount.readonly)
            else:   # rw: writes go to the throw-away upper dir
                mount_overlay([_at(fd)], _at(target), scratch, writable=True,
                              what=f"--mount type=bind,rw at {mount.target}")
        finally:
            os.close(target)
    finally:
        os.close(fd)


def _mount_host_dir(merged: str, mount: MountSpec) -> None:
    # Host directories (cache mounts, context binds) are nodev and nosuid: a RUN
    # must not mknod a disk there, or plant a setuid file on the host.
    if not mount.subpath:
        _bind(merged, mount.target, mount.source, readonly=mount.readonly, extra=_HOST_FLAGS)
        return
    fd = open_subdir(mount.source, mount.subpath)
    try:
        # Mount the directory the fd holds, never a path string another RUN
        # (sharing this cache) could swap for a symlink meanwhile (R06, R07).
        _bind(merged, mount.target, _at(fd), readonly=mount.readonly, extra=_HOST_FLAGS)
    finally:
        os.close(fd)


def _open_beneath(root: str, rel: str) -> int:
    """An O_PATH fd of ``rel`` below ``root``, refusing any symlink on the way.

    ``rel`` was resolved when the step's key was computed; a component that has
    become a link since (the context changed under the build) is an error, so
    the bind shows what was checked, or nothing."""
    try:
        return open_below(root, rel)
    except OSError as err:
        raise BuildError(f"--mount type=bind: /{rel} in the build context: {err.strerror} "
                         "(did the build context change during the build?)") from None


def _mount_context_file(merged: str, mount: MountSpec, scratch: Path) -> None:
    """A single file of the build context at ``mount.target``, as BuildKit's transfer
    delivers it: owned by 0:0, with the file's mode, times and content.

    A root-owned file is bound as it is (read-only); any other, and any ``rw``
    bind, is a copy in the step's scratch dir, which goes with the step, so
    writes never reach the context."""
    fd = _open_beneath(mount.source, mount.subpath)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise BuildError(f"--mount type=bind: /{mount.subpath} in the build context is "
                             "not a regular file or directory")
        if mount.readonly and (st.st_uid, st.st_gid) == (0, 0):
            _bind(merged, mount.target, _at(fd), readonly=True, extra=_HOST_FLAGS)
            return
        scratch.mkdir(parents=True)
        copy = str(scratch / "file")
        _copy_file(_at(fd), copy, st)
    finally:
        os.close(fd)
    _bind(merged, mount.target, copy, readonly=mount.readonly, extra=_HOST_FLAGS)


def _copy_file(source: str, dest: str, st: os.stat_result) -> None:
    src = os.open(source, os.O_RDONLY | os.O_CLOEXEC | os.O_NOCTTY | os.O_NONBLOCK)
    try:
        dst = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                      0o600)
        try:
            try:
                while os.copy_file_range(src, dst, _COPY_CHUNK):
                    pass
            except OSError as err:  # EXDEV/EINVAL on older kernels and some filesystems
                if err.errno not in (errno.EXDEV, errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
                    raise
                while os.sendfile(dst, src, None, _COPY_CHUNK):
                    pass
            os.fchown(dst, 0, 0)
            os.fchmod(dst, stat.S_IMODE(st.st_mode))
            os.utime(dst, ns=(st.st_atime_ns, st.st_mtime_ns))
        finally:
            os.close(dst)
    finally:
        os.close(src)


def _mount_secret(merged: str, mount: MountSpec, scratch: Path) -> None:
    """A copy of the secret file, owned and moded as asked, bound read-only at the target.

    As BuildKit does: the copy is on a tmpfs of this mount namespace only (never
    on disk, gone with the step), 0400 root:root unless the mount's uid, gid and
    mode say otherwise.  A bind of the user's own file would show its host owner
    and mode instead.
    """
    scratch.mkdir(parents=True)
    src = os.open(mount.source, os.O_RDONLY | os.O_CLOEXEC | os.O_NOCTTY)
    try:
        size = os.fstat(src).st_size
        syscalls.mount("tmpfs", str(scratch), "tmpfs", syscalls.MS_NODEV | syscalls.MS_NOSUID
                       | syscalls.MS_NOEXEC, f"mode=0700,size={size + 65536}")
        copy = str(scratch / "secret")
        dst = os.open(copy, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                      0o600)
        try:
            while os.sendfile(dst, src, None, 1 << 20):
                pass
            os.fchown(dst, mount.uid, mount.gid)
            os.fchmod(dst, mount.mode & 0o777)  # BuildKit keeps the permission bits only
        finally:
            os.close(dst)
    finally:
        os.close(src)
    _bind(merged, mount.target, copy, readonly=True, extra=_HOST_FLAGS | syscalls.MS_NOEXEC)


def open_subdir(root: str, subpath: str) -> int:
    """An O_PATH fd of directory ``subpath`` below ``root``, made if missing.

    Component by component from ``root``'s fd with O_NOFOLLOW: a symlink
    anywhere (planted by an earlier or concurrent RUN) is refused rather than
    followed, and ``..`` is refused (CVE-2024-23651, CVE-2024-9675).
    """
    parts = [p for p in subpath.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise BuildError(f"cache mount source {subpath!r}: '..' is not allowed")
    fd = os.open(root, os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        for part in parts:
            with contextlib.suppress(FileExistsError):
                os.mkdir(part, 0o755, dir_fd=fd)
            try:
                child = os.open(part, os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC,
                                dir_fd=fd)
            except OSError:
                raise BuildError(f"cache mount source {subpath!r}: {part} is not a directory "
                                 "in the cache (a symbolic link is never followed)") from None
            os.close(fd)
            fd = child
    except BaseException:
        os.close(fd)
        raise
    return fd

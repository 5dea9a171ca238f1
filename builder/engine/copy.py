"""COPY and ADD, the copier: write the selected sources into a mounted snapshot.

The request and its source selection are ``copy_plan.py``.

Sources are resolved inside their root (the build context, or another stage's
or image's filesystem) with chroot semantics: ``..`` stops at the root and an
absolute symlink restarts there, so nothing outside the root is ever read.
Only a named source is followed if it is a symlink; links inside copied
directories are copied as links (BuildKit's rules).  The destination is
resolved inside the image the same way, dangling links included: BuildKit
creates the missing target rather than replacing the link.

ADD extracts local tar archives (found by content, not name) and fetches
http(s) URLs.  ``--link`` changes how BuildKit stores the layer, not what is in
it, so here it is a plain copy.
"""

from __future__ import annotations

import hashlib
import io
import os
import posixpath
import shutil
import stat
import tarfile
import tempfile
from collections.abc import Callable
from typing import Any, BinaryIO, cast

from builder import userns
from builder.context.checksum import EntryDigest, kind_of
from builder.engine.copy_files import Metadata, copy_at, copy_bytes, open_source
from builder.engine.copy_plan import (
    CopyRequest,
    clean_source,
    has_magic,
    is_url,
    parse_chmod,
    select_sources,
)
from builder.errors import BuildError, PybuildError, SandboxError
from builder.rootpath import resolve_components, resolve_in_root

_CHUNK = 1 << 20


def _parents_base(source: str) -> str:
    """The part of a --parents source that is not kept: BuildKit keeps the path from
    the context root, or from a ``/./`` pivot when the source has one."""
    if "/./" in source:
        return clean_source(source.split("/./", 1)[0])
    return "."


def copy_into(merged: str, source_root: str, request: CopyRequest) -> None:
    """Copy the request's sources from ``source_root`` into the root at ``merged``.

    Runs in a child process with the destination snapshot mounted at ``merged``.
    """
    # Every mode is set explicitly; with no umask a file can be created with its final
    # mode (copy_files.Metadata.made_as).
    umask = os.umask(0)
    try:
        _copy_into(merged, source_root, request)
    except (FileNotFoundError, NotADirectoryError) as err:
        # A source that vanishes mid-copy (the context changed during the build,
        # C03) is a one-line error, not a traceback.
        where = os.fsdecode(err.filename or "")
        if not where.startswith(source_root.rstrip("/") + "/"):
            raise
        raise BuildError(f'"/{os.path.relpath(where, source_root)}": changed while being '
                         f"copied ({err.strerror})") from None
    finally:
        os.umask(umask)


def _copy_into(merged: str, source_root: str, request: CopyRequest) -> None:
    uid = gid = 0
    owner_fixed = bool(request.chown)
    if request.chown:
        from builder.run.users import resolve_user  # the child, on a miss only

        ident = resolve_user(merged, request.chown)
        uid, gid = ident.uid, ident.gid
        if (why := userns.unmapped(uid, gid)) is not None:
            raise BuildError(f"--chown={request.chown}: {why}")
    mode = parse_chmod(request.chmod)
    dest = request.dest
    if not dest.startswith("/"):
        dest = posixpath.join(request.workdir or "/", dest)
    dest_is_dir = dest.endswith("/") or len(request.sources) + len(request.heredocs) > 1
    selected = request.selected
    if selected is None:
        selected = select_sources(source_root, request)
    if len(selected) > 1:
        dest_is_dir = True
    keep_owner = request.preserve_owner and not owner_fixed
    copier = _Copier(merged, uid, gid, mode, request.leaves_out, keep_owner)
    copier.owner_fixed = owner_fixed
    copier.source_root = source_root
    if request.expected_content is not None:
        copier.copied = EntryDigest()
    copied_sources = set(request.kept_sources(selected))
    for rel in selected:
        if request.add and rel in request.git_trees:
            _copy_checkout(copier, request, request.git_trees[rel], dest)
            continue
        if request.add and is_url(rel):
            from builder.engine.add_url import add_url

            add_url(copier, rel, dest, dest_is_dir, request.checksum)
            continue
        if rel not in copied_sources:
            continue
        _copy_source(copier, request, merged, source_root, rel, dest, dest_is_dir)
    _check_copied(copier, request)
    for name, content in request.heredocs:
        into_dir = dest_is_dir or os.path.isdir(resolve_in_root(merged, dest) or "/nonexistent")
        path = posixpath.join(dest, name) if into_dir or dest.endswith("/") else dest
        parent = copier.make_dirs(posixpath.dirname(path) or "/")
        copier.write_file(os.path.join(parent, posixpath.basename(path)), content.encode())


def _copy_source(copier: _Copier, request: CopyRequest, merged: str, source_root: str,
                 rel: str, dest: str, dest_is_dir: bool) -> None:
    """Copy one selected source of the context (or --from root) to ``dest``."""
    host = resolve_in_root(source_root, rel)
    if host is None:
        raise BuildError(f'"/{rel}": not found')
    if request.excluded(rel):
        raise BuildError(f'"/{rel}": not found (excluded by .dockerignore)')
    target_dest = dest
    if request.parents:
        source = next((s for s in request.sources if has_magic(s) or
                       clean_source(s) == rel), rel)
        kept = posixpath.relpath(rel, _parents_base(source))
        target_dest = posixpath.join(dest, kept)
        if not os.path.isdir(host):
            target_dest = posixpath.dirname(target_dest) + "/"
    _check_name(rel)
    st = os.stat(host)
    if stat.S_ISDIR(st.st_mode):
        copier.record(rel, st, "")
        target = copier.make_dirs(target_dest)
        copier.copy_tree(host, rel, target, origin=rel)
        if request.parents:
            copier.finish(target, st)
    elif request.add and _try_extract(copier, host, rel, target_dest):
        return
    else:
        into_dir = dest_is_dir or request.parents or target_dest.endswith("/") or \
            os.path.isdir(resolve_in_root(merged, target_dest) or "/nonexistent")
        name = posixpath.join(target_dest, posixpath.basename(rel)) if into_dir \
            else target_dest
        parent = copier.make_dirs(posixpath.dirname(name.rstrip("/")) or "/")
        copier.copy_file(host, os.path.join(parent, posixpath.basename(name.rstrip("/"))),
                         rel)


def _check_copied(copier: _Copier, request: CopyRequest) -> None:
    """Fail when what was copied is not what the cache key was computed from."""
    if copier.copied is None or copier.copied.digest() == request.expected_content:
        return
    # The context changed between the checksum and the copy (catalogue K: check then
    # use).  Committing would store a layer under a key that names other content.
    raise BuildError("the build context changed while it was being copied: the copied "
                     "files differ from the ones this step's cache key was computed from "
                     "(nothing was committed; build again once the context is stable)")


def _check_name(rel: str) -> None:
    # A layer entry named .wh.* would turn into a deletion when the layer is read (C10).
    if posixpath.basename(rel).startswith(".wh."):
        raise BuildError(f'"/{rel}": a file named .wh.* cannot be copied into an image')


def resolve_for_create(root: str, path: str) -> list[str]:
    """``path`` inside ``root`` as components with every existing symlink resolved
    (chroot semantics), dangling ones included; missing components are kept."""
    try:
        parts = resolve_components(root, path, keep_missing=True)
    except SandboxError as err:
        raise BuildError(str(err)) from None
    if parts is None:
        raise BuildError(f"cannot create {path}: a component is not a directory")
    return parts


def make_dirs(root: str, path: str, uid: int, gid: int) -> str:
    """Create ``path`` and its missing parents inside ``root`` (mode 0755, owned by
    uid:gid, as BuildKit's mkdir -p with the copy's owner), following symlinks with
    chroot semantics, dangling ones too; return the host path."""
    parts = resolve_for_create(root, path)
    host = root
    for part in parts:
        host = os.path.join(host, part)
        try:
            st = os.lstat(host)
        except FileNotFoundError:
            os.mkdir(host, 0o755)
            os.chmod(host, 0o755)
            os.lchown(host, uid, gid)
            continue
        if not stat.S_ISDIR(st.st_mode):
            raise BuildError(f"cannot create {path}: /{'/'.join(parts)} is not a directory")
    return host


class _Copier:
    def __init__(self, root: str, uid: int, gid: int, mode: int | None,
                 leaves_out: Callable[[str, str, bool], bool], keep_owner: bool = False):
        self.root, self.uid, self.gid, self.mode = root, uid, gid, mode
        self.leaves_out = leaves_out   # (source rel, entry rel, is_dir): not copied
        self.keep_owner = keep_owner
        self.owner_fixed = False    # --chown given: it wins over archive owners too
        self.source_root: str | None = None   # set: every source open is checked in it
        # Set: every copied entry is recorded as the content checksum records it, with
        # the digest of the bytes actually written (see _check_copied).
        self.copied: EntryDigest | None = None
        # Source inode -> (first copy, its content digest), so hardlinked sources stay
        # hardlinked (BuildKit).
        self.links: dict[tuple[int, int], tuple[str, str]] = {}

    def record(self, rel: str, st: os.stat_result, content: str) -> None:
        if self.copied is not None:
            self.copied.add(rel, kind_of(st.st_mode), stat.S_IMODE(st.st_mode), content)

    def make_dirs(self, path: str) -> str:
        return make_dirs(self.root, path, self.uid, self.gid)

    def finish(self, path: str, st: os.stat_result) -> None:
        if self.keep_owner:
            os.lchown(path, st.st_uid, st.st_gid)
        else:
            os.lchown(path, self.uid, self.gid)
        if not stat.S_ISLNK(st.st_mode):
            os.chmod(path, self.mode if self.mode is not None else stat.S_IMODE(st.st_mode))
        os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns), follow_symlinks=False)

    def _replace(self, path: str) -> None:
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            return
        if stat.S_ISDIR(st.st_mode):
            shutil.rmtree(path)
        else:
            os.unlink(path)

    def copy_file(self, source: str, target: str, rel: str = "") -> None:
        st = os.lstat(source)
        self._replace(target)
        key = (st.st_dev, st.st_ino)
        if st.st_nlink > 1 and not stat.S_ISDIR(st.st_mode) and key in self.links:
            first, content = self.links[key]
            os.link(first, target)
            self.record(rel, st, content)
            return
        content = ""
        if stat.S_ISLNK(st.st_mode):
            content = os.readlink(source)
            os.symlink(content, target)
        elif stat.S_ISREG(st.st_mode):
            # The mode given to the copy is that of the inode whose bytes were copied.
            content, st = self._copy_regular(source, target)
        elif stat.S_ISFIFO(st.st_mode):
            os.mkfifo(target)   # made anew: a FIFO in the source is never opened (C11)
        elif stat.S_ISSOCK(st.st_mode):
            # BuildKit turns a socket into an empty regular file (testCopySocket).
            os.close(os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
                             | os.O_CLOEXEC, 0o600))
        elif (stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode)) and self.keep_owner:
            # Only from an image or stage; a device node in the context is refused (C11).
            os.mknod(target, stat.S_IFMT(st.st_mode) | 0o600, st.st_rdev)
        else:
            raise BuildError(f"cannot copy {source}: unsupported file type")
        self.finish(target, st)
        self.record(rel, st, content)
        if st.st_nlink > 1:
            self.links[key] = (target, content)

    def _copy_regular(self, source: str, target: str) -> tuple[str, os.stat_result]:
        """Copy a regular file's bytes; its content digest (hashed while copying, never
        re-read) and the stat of the opened file."""
        # O_NONBLOCK: if the entry was swapped for a FIFO since lstat, open must not hang;
        # fstat then refuses it (C11).
        src_fd = open_source(source, self.source_root, os.O_RDONLY | os.O_NONBLOCK)
        try:
            st = os.fstat(src_fd)
            if not stat.S_ISREG(st.st_mode):
                raise BuildError(f"cannot copy {source}: it changed while being copied")
            dst_fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
                             | os.O_CLOEXEC, 0o600)
            try:
                digest = copy_bytes(src_fd, dst_fd, st.st_size)
            finally:
                os.close(dst_fd)
        finally:
            os.close(src_fd)
        return digest, st

    def write_file(self, target: str, data: bytes, mode: int = 0o644,
                   mtime: float | None = None) -> None:
        self._replace(target)
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, mode)
        try:
            os.write(fd, data)
        finally:
            os.close(fd)
        os.chmod(target, self.mode if self.mode is not None else mode)
        os.lchown(target, self.uid, self.gid)
        if mtime is not None:
            os.utime(target, (mtime, mtime), follow_symlinks=False)

    def copy_tree(self, source: str, rel: str, target: str, origin: str = ".",
                  fresh: bool = False) -> None:
        """Copy the contents of directory ``source`` into existing directory ``target``,
        in the checksum's order (pre-order, by name); ``origin`` is the copied source's
        own relative path, for --exclude; ``fresh``: this copy made ``target`` (empty),
        so a regular file is copied relative to the two directories (``copy_at``)."""
        # Listed through a checked fd (C03); the fd stays open while entries are used.
        dir_fd = open_source(source, self.source_root, os.O_RDONLY | os.O_DIRECTORY)
        target_fd = os.open(target, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW
                            | os.O_CLOEXEC) if fresh else None
        try:
            made_as = None
            if target_fd is not None:  # what a new file here is owned by (a set-gid dir)
                made = os.fstat(target_fd)
                made_as = (os.geteuid(), made.st_gid if made.st_mode & stat.S_ISGID
                           else os.getegid())
            with os.scandir(dir_fd) as listing:
                entries = sorted(listing, key=lambda e: e.name)
            self._copy_entries(source, rel, target, origin, entries, (dir_fd, target_fd),
                               made_as)
        finally:
            os.close(dir_fd)
            if target_fd is not None:
                os.close(target_fd)

    def _copy_at(self, fds: tuple[int, int], entry: os.DirEntry[str], rel: str,
                 destination: str, made_as: tuple[int, int] | None) -> None:
        """A regular file into a directory this copy made (nothing to replace)."""
        owner = None if self.keep_owner else self.uid
        group = None if self.keep_owner else self.gid
        content, st = copy_at(*fds, entry.name, Metadata(owner, group, self.mode, made_as),
                              entry.path)
        key = (st.st_dev, st.st_ino)
        if st.st_nlink > 1 and key in self.links:  # the copy is made again as a link
            os.unlink(destination)
            first, content = self.links[key]
            os.link(first, destination)
        elif st.st_nlink > 1:
            self.links[key] = (destination, content)
        self.record(rel, st, content)

    def _copy_entries(self, source: str, rel: str, target: str, origin: str,
                      entries: list[os.DirEntry[str]],
                      fds: tuple[int, int | None], made_as: tuple[int, int] | None) -> None:
        source_fd, target_fd = fds
        for entry in entries:
            entry_path = os.path.join(source, entry.name)
            entry_rel = posixpath.normpath(posixpath.join(rel, entry.name))
            is_dir = entry.is_dir(follow_symlinks=False)
            if self.leaves_out(origin, entry_rel, is_dir):
                continue
            _check_name(entry_rel)
            destination = os.path.join(target, entry.name)
            if is_dir:
                try:
                    existing = os.lstat(destination).st_mode
                except FileNotFoundError:
                    existing = None
                if existing is not None and stat.S_ISLNK(existing):
                    # An image symlink in the way is followed inside the root, never on
                    # the host: an absolute target would otherwise name a host path.
                    destination = make_dirs(self.root, os.path.relpath(destination, self.root),
                                            self.uid, self.gid)
                elif existing is not None and not stat.S_ISDIR(existing):
                    self._replace(destination)
                    existing = None
                if existing is None:
                    os.mkdir(destination, 0o700)
                dir_stat = entry.stat(follow_symlinks=False)
                self.record(entry_rel, dir_stat, "")
                self.copy_tree(entry_path, entry_rel, destination, origin,
                               fresh=existing is None)
                self.finish(destination, dir_stat)
            elif target_fd is not None and entry.is_file(follow_symlinks=False):
                self._copy_at((source_fd, target_fd), entry, entry_rel, destination, made_as)
            else:
                self.copy_file(entry_path, destination, entry_rel)


# -- ADD: archives, URLs and git checkouts ------------------------------------------

def _is_tar(host: str, root: str | None = None) -> bool:
    """BuildKit's test: decompress by magic bytes, then look for a tar header."""
    from builder.layers.compress import open_decompressed

    try:
        with os.fdopen(open_source(host, root, os.O_RDONLY | os.O_NONBLOCK), "rb") as raw, \
                open_decompressed(raw) as src:
            block = src.read(512)
    except Exception:
        return False
    if len(block) < 512:
        return False
    try:
        tarfile.TarInfo.frombuf(block, "utf-8", "surrogateescape")
    except tarfile.HeaderError:
        return False
    return True


class _HashingReader(io.RawIOBase):
    """Hashes every byte read through it: ADD records the digest of the archive it
    really extracted (see _check_copied)."""

    def __init__(self, fd: int):
        self.fd = fd
        self.hasher = hashlib.sha256()

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        count = os.readv(self.fd, [buffer])
        self.hasher.update(memoryview(buffer)[:count])
        return count

    def drain(self) -> str:
        """Read what the extraction left (padding, trailing bytes); the whole digest."""
        while chunk := os.read(self.fd, _CHUNK):
            self.hasher.update(chunk)
        return "sha256:" + self.hasher.hexdigest()


def _try_extract(copier: _Copier, host: str, rel: str, dest: str) -> bool:
    """Extract the archive at ``host`` into directory ``dest``; False if not a tar.

    apply_layer_tar removes its destination on error, so it unpacks into a scratch
    dir first and the result is then copied in (entries keep the archive's owners,
    as BuildKit's unpack does, unless --chown says otherwise)."""
    from builder.layers.apply import apply_layer_tar
    from builder.layers.compress import open_decompressed

    st = os.stat(host)
    if not stat.S_ISREG(st.st_mode) or not _is_tar(host, copier.source_root):
        return False
    target = copier.make_dirs(dest)
    scratch = tempfile.mkdtemp(prefix="pybuild-add-")
    try:
        unpacked = os.path.join(scratch, "x")
        os.mkdir(unpacked)
        fd = open_source(host, copier.source_root, os.O_RDONLY | os.O_NONBLOCK)
        try:
            opened = os.fstat(fd)
            if not stat.S_ISREG(opened.st_mode):
                raise BuildError(f"ADD {posixpath.basename(host)}: changed while being read")
            raw = _HashingReader(fd)
            with open_decompressed(cast(BinaryIO, raw)) as src:
                try:
                    apply_layer_tar(src, unpacked, mode="merged")
                except PybuildError as err:  # a hostile or broken tar: its own class
                    err.within(f"ADD {posixpath.basename(host)}: cannot extract")
                    raise
                except Exception as err:
                    raise BuildError(f"ADD {posixpath.basename(host)}: cannot extract: "
                                     f"{err}") from err
            copier.record(rel, opened, raw.drain())
        finally:
            os.close(fd)
        archive_copier = _Copier(copier.root, copier.uid, copier.gid, copier.mode,
                                 lambda source, rel, is_dir: False,
                                 keep_owner=not copier.owner_fixed)
        archive_copier.copy_tree(unpacked, ".", target)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return True


def _copy_checkout(copier: _Copier, request: CopyRequest, tree: str, dest: str) -> None:
    """A git checkout: its contents go into ``dest`` (BuildKit copies the checkout's
    root), through a copier that opens nothing outside ``tree`` and copies links as
    links; --exclude applies, .dockerignore does not (it is the context's)."""
    matcher = request.exclude_matcher

    def leaves_out(origin: str, rel: str, is_dir: bool) -> bool:
        return matcher is not None and matcher.matches(rel) and not (
            is_dir and matcher.may_reinclude_under(rel))
    checkout_copier = _Copier(copier.root, copier.uid, copier.gid, copier.mode, leaves_out)
    checkout_copier.source_root = tree
    checkout_copier.copy_tree(tree, ".", copier.make_dirs(dest))

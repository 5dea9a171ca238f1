"""COPY and ADD: select sources, then write them into a mounted snapshot.

Sources are resolved inside their root (the build context, or another stage's
or image's filesystem) with chroot semantics: ``..`` stops at the root and an
absolute symlink restarts there, so nothing outside the root is ever read.
Only a named source is followed if it is a symlink; links inside copied
directories are copied as links (BuildKit's rules).  The destination is
resolved inside the image the same way.
"""

from __future__ import annotations

import fnmatch
import os
import posixpath
import shutil
import stat
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from builder.errors import BuildError
from builder.run.sandbox import resolve_in_root, resolve_user

_CHUNK = 1 << 20


@dataclass
class CopyRequest:
    sources: list[str]
    dest: str
    workdir: str
    chown: str = ""
    chmod: str = ""
    ignore: Any = None        # a context.ignore.PatternMatcher for .dockerignore, or None
    heredocs: list[tuple[str, str]] = field(default_factory=list)  # (name, content)
    selected: list[str] | None = None   # sources after globbing, when chosen in advance

    def excluded(self, rel: str) -> bool:
        return self.ignore is not None and rel != "." and \
            self.ignore.matches_or_parent_matches(rel)

    def skipped(self, rel: str, is_dir: bool) -> bool:
        """Leave out an ignored entry, unless it is a dir that may hold re-included ones."""
        if not self.excluded(rel):
            return False
        return not (is_dir and self.ignore.may_reinclude_under(rel))


def clean_source(path: str) -> str:
    """A source path relative to its root; ``..`` cannot climb above it."""
    return posixpath.normpath("/" + path).lstrip("/") or "."


def _has_magic(path: str) -> bool:
    return any(c in path for c in "*?[")


def expand_sources(root: str, pattern: str, excluded: Callable[[str], bool]) -> list[str]:
    """Context-relative paths matching ``pattern`` (a plain path or a glob)."""
    cleaned = clean_source(pattern)
    if not _has_magic(cleaned):
        return [cleaned]
    matches = ["."]
    for part in cleaned.split("/"):
        found = []
        for base in matches:
            host = resolve_in_root(root, base)
            if host is None or not os.path.isdir(host):
                continue
            names = sorted(os.listdir(host))
            selected = fnmatch.filter(names, part) if _has_magic(part) else (
                [part] if part in names else [])
            found += [posixpath.normpath(posixpath.join(base, n)) for n in selected]
        matches = found
    return [m for m in matches if not excluded(m)]


def select_sources(root: str, request: CopyRequest) -> list[str]:
    """The request's sources after globbing, each checked to exist inside ``root``."""
    selected: list[str] = []
    for source in request.sources:
        matches = expand_sources(root, source, request.excluded)
        if not matches or (not _has_magic(source)
                           and resolve_in_root(root, matches[0]) is None):
            raise BuildError(f'"/{clean_source(source)}": not found')
        selected += matches
    return selected


def parse_chmod(value: str) -> int | None:
    if not value:
        return None
    try:
        mode = int(value, 8)
    except ValueError:
        mode = -1
    if not 0 <= mode <= 0o7777:
        raise BuildError(f"invalid chmod parameter: '{value}'. it should be octal string "
                         "and between 0 and 07777")
    return mode


def copy_into(merged: str, source_root: str, request: CopyRequest) -> None:
    """Copy the request's sources from ``source_root`` into the root at ``merged``.

    Runs in a child process with the destination snapshot mounted at ``merged``.
    """
    uid = gid = 0
    if request.chown:
        ident = resolve_user(merged, request.chown)
        uid, gid = ident.uid, ident.gid
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
    copier = _Copier(merged, uid, gid, mode, request.skipped)
    for rel in selected:
        host = resolve_in_root(source_root, rel)
        if host is None:
            raise BuildError(f'"/{rel}": not found')
        if request.excluded(rel):
            raise BuildError(f'"/{rel}": not found (excluded by .dockerignore)')
        st = os.stat(host)
        if stat.S_ISDIR(st.st_mode):
            target = copier.make_dirs(dest)
            copier.copy_tree(host, rel, target)
        else:
            existing = resolve_in_root(merged, dest)
            into_dir = dest_is_dir or (existing is not None and os.path.isdir(existing))
            name = posixpath.join(dest, posixpath.basename(rel)) if into_dir else dest
            parent = copier.make_dirs(posixpath.dirname(name.rstrip("/")) or "/")
            copier.copy_file(host, os.path.join(parent, posixpath.basename(name.rstrip("/"))))
    for name, content in request.heredocs:
        into_dir = dest_is_dir or (resolve_in_root(merged, dest) or "").endswith("/")
        path = posixpath.join(dest, name) if into_dir or dest.endswith("/") else dest
        parent = copier.make_dirs(posixpath.dirname(path) or "/")
        copier.write_file(os.path.join(parent, posixpath.basename(path)), content.encode())


def make_dirs(root: str, path: str, uid: int, gid: int) -> str:
    """Create ``path`` and its missing parents inside ``root`` (mode 0755, owned by
    uid:gid), following symlinks with chroot semantics; return the host path."""
    current = "/"
    for part in [p for p in path.split("/") if p]:
        candidate = posixpath.join(current, part)
        host = resolve_in_root(root, candidate)
        if host is None:
            parent = resolve_in_root(root, current)
            if parent is None:
                raise BuildError(f"cannot create {path}: {current} vanished")
            host = os.path.join(parent, part)
            os.mkdir(host, 0o755)
            os.chmod(host, 0o755)
            os.lchown(host, uid, gid)
        elif not os.path.isdir(host):
            raise BuildError(f"cannot create {path}: {candidate} is not a directory")
        current = candidate
    result = resolve_in_root(root, current)
    if result is None:
        raise BuildError(f"cannot create {path}")
    return result


class _Copier:
    def __init__(self, root: str, uid: int, gid: int, mode: int | None,
                 skipped: Callable[[str, bool], bool]):
        self.root, self.uid, self.gid, self.mode = root, uid, gid, mode
        self.skipped = skipped

    def make_dirs(self, path: str) -> str:
        return make_dirs(self.root, path, self.uid, self.gid)

    def _finish(self, path: str, st: os.stat_result) -> None:
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

    def copy_file(self, source: str, target: str) -> None:
        st = os.lstat(source)
        self._replace(target)
        if stat.S_ISLNK(st.st_mode):
            os.symlink(os.readlink(source), target)
        elif stat.S_ISREG(st.st_mode):
            src_fd = os.open(source, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
            try:
                dst_fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
                                 | os.O_CLOEXEC, 0o600)
                try:
                    while chunk := os.read(src_fd, _CHUNK):
                        os.write(dst_fd, chunk)
                finally:
                    os.close(dst_fd)
            finally:
                os.close(src_fd)
        elif stat.S_ISFIFO(st.st_mode):
            os.mkfifo(target)
        else:
            raise BuildError(f"cannot copy {source}: unsupported file type")
        self._finish(target, st)

    def write_file(self, target: str, data: bytes) -> None:
        self._replace(target)
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
        try:
            os.write(fd, data)
        finally:
            os.close(fd)
        os.chmod(target, self.mode if self.mode is not None else 0o644)
        os.lchown(target, self.uid, self.gid)

    def copy_tree(self, source: str, rel: str, target: str) -> None:
        """Copy the contents of directory ``source`` into existing directory ``target``."""
        for entry in sorted(os.scandir(source), key=lambda e: e.name):
            entry_rel = posixpath.normpath(posixpath.join(rel, entry.name))
            if self.skipped(entry_rel, entry.is_dir(follow_symlinks=False)):
                continue
            destination = os.path.join(target, entry.name)
            if entry.is_dir(follow_symlinks=False):
                existing = os.path.lexists(destination)
                if existing and not os.path.isdir(destination):
                    self._replace(destination)
                    existing = False
                if not existing:
                    os.mkdir(destination, 0o700)
                self.copy_tree(entry.path, entry_rel, destination)
                self._finish(destination, entry.stat(follow_symlinks=False))
            else:
                self.copy_file(entry.path, destination)

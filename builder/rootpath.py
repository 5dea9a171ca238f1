"""Resolve a path inside a root directory with chroot semantics: the one walker.

Every place that follows a path inside an image, a stage or the build context
walks it here (catalogue section 0.2, T04-T08, T16, C02, C05, C06):

* ``..`` at the root stays at the root;
* an absolute symlink target restarts at the root;
* more than ``MAX_SYMLINKS`` (40, the kernel's limit) links in one lookup is
  ELOOP (``TooManyLinks``), so a loop or a very long chain ends, never hangs;
* a component that is not a directory, with more to follow, stops the walk
  (ENOTDIR): ``file/../secret`` never steps back out of a file.

What a "directory entry" is comes from a ``Tree``: ``HostTree`` lstats joined
host paths (a mounted snapshot, a stage's root, the context); the context's
filtered view (``builder.context.view``) plugs in its ``.dockerignore``-aware
lstat; ``builder.layers.safepath`` walks with ``O_PATH`` fds and creates what
is missing.  The walk itself (the order of those rules) exists only here.  It
takes ``str`` or ``bytes`` paths (extraction names are bytes end to end), and
keeps its per-component work small: the fd walk runs once per tar entry whose
path openat2 cannot take (past PATH_MAX, parents to create).

Nothing is cached between walks: a later write may change any component (T13).
"""

from __future__ import annotations

import enum
import errno
import os
import stat
from typing import AnyStr, Generic, Protocol

import msgspec

from builder.errors import SandboxError

__all__ = ["MAX_SYMLINKS", "HostTree", "Kind", "Resolved", "TooManyLinks", "Tree",
           "kind_of", "split", "walk"]

MAX_SYMLINKS = 40


class Kind(enum.Enum):
    """What a ``Tree`` found under one name."""

    MISSING = "missing"   # no such entry
    DIR = "dir"
    LINK = "link"
    OTHER = "other"       # a file, device, FIFO or socket
    BLOCKED = "blocked"   # the lookup itself failed with ENOTDIR (a racing change)
    HIDDEN = "hidden"     # present, but not part of the view (a filtered context)


# Enum members as plain names: ``Kind.DIR`` costs a class lookup (~120 ns on 3.11),
# and the walk asks once per component.
_MISSING, _DIR, _LINK, _OTHER = Kind.MISSING, Kind.DIR, Kind.LINK, Kind.OTHER


_NAME_MAX = 255   # bytes in one name (Linux, every filesystem pybuild runs on)


class TooManyLinks(OSError):
    """ELOOP: more than MAX_SYMLINKS links followed in one walk."""

    def __init__(self, path: str | bytes) -> None:
        super().__init__(errno.ELOOP, os.strerror(errno.ELOOP), path)


class Tree(Protocol[AnyStr]):
    """A directory tree the walk moves through, named in ``str`` or ``bytes`` (the
    walk uses the type of the path it is given).  ``parents`` is always the
    walk's resolved position (names below the root, all directories, or missing
    names kept with ``keep_missing``), so a stateless tree needs nothing else; a
    tree that holds a position of its own (an fd) moves in ``lookup`` and with
    ``leave`` and ``restart``."""

    def lookup(self, parents: list[AnyStr], name: AnyStr, via_link: bool) -> Kind:
        """The kind of entry ``name`` at ``parents``; ``via_link`` when the name
        came from a symlink's target rather than from the path walked.  A
        directory is always entered: a tree with a position moves into it here."""
        ...

    def readlink(self, parents: list[AnyStr], name: AnyStr) -> AnyStr:
        """The target of the symlink ``name`` at ``parents`` (just looked up)."""
        ...

    def enter(self, parents: list[AnyStr], name: AnyStr) -> None:
        """The walk takes ``name`` that is not a directory: a kept missing name, or
        the last component (a file, or a link not followed)."""
        ...

    def leave(self, parents: list[AnyStr]) -> None:
        """The walk moved up (``..``) and is now at ``parents``."""
        ...

    def restart(self) -> None:
        """The walk is back at the root (an absolute symlink target)."""
        ...


class Resolved(msgspec.Struct, Generic[AnyStr], frozen=True):
    """The walk's answer: the components below the root, or None (missing, or a
    non-directory on the way); ``hidden`` when it stopped at an entry the tree
    hides."""

    parts: list[AnyStr] | None
    hidden: bool = False


def split(path: AnyStr) -> list[AnyStr]:
    """The components of ``path``, without empty and ``.`` ones."""
    if isinstance(path, str):
        return [part for part in path.split("/") if part not in ("", ".")]
    return [part for part in path.split(b"/") if part not in (b"", b".")]


def kind_of(mode: int) -> Kind:
    if stat.S_ISDIR(mode):
        return _DIR
    return _LINK if stat.S_ISLNK(mode) else _OTHER


def walk(tree: Tree[AnyStr], path: AnyStr, *, follow_last: bool = True,
         keep_missing: bool = False, want_dir: bool = False) -> Resolved[AnyStr]:
    """Resolve ``path`` in ``tree`` with chroot semantics (see the module doc).

    ``follow_last``: a symlink as the last component is followed (else it is the
    answer).  ``keep_missing``: a missing component is kept as named, so the
    answer is where a path about to be created goes, through dangling links
    too.  ``want_dir``: the last component must be a directory as well.
    Raises TooManyLinks after MAX_SYMLINKS links.
    """
    up = ".." if isinstance(path, str) else b".."
    # A stack, last component first: a link's target is pushed in front of the rest.
    todo = [(name, False) for name in reversed(split(path))]
    resolved: list[AnyStr] = []
    hops = 0
    while todo:
        name, via_link = todo.pop()
        if name == up:
            if resolved:
                resolved.pop()
                tree.leave(resolved)
            continue
        kind = tree.lookup(resolved, name, via_link)
        if kind is _DIR:   # the common case first (the tree has moved into it)
            resolved.append(name)
            continue
        last = not todo
        if kind is _LINK and (follow_last or not last):
            target = tree.readlink(resolved, name)
            hops += 1
            if hops > MAX_SYMLINKS:
                raise TooManyLinks(path)
            if target[:1] in ("/", b"/"):
                resolved.clear()
                tree.restart()
            todo.extend((part, True) for part in reversed(split(target)))
            continue
        if ((kind is _MISSING and keep_missing)
                or (last and not want_dir and (kind is _OTHER or kind is _LINK))):
            tree.enter(resolved, name)
            resolved.append(name)
            continue
        return Resolved(None, hidden=kind is Kind.HIDDEN)
    return Resolved(resolved)


class HostTree:
    """A tree of host paths below ``root``, looked up with lstat on the joined
    path.  Only for trees nothing changes while they are walked (a mounted
    snapshot, a stage's root); the context is checked again when it is read."""

    def __init__(self, root: str) -> None:
        self.root = root

    def lookup(self, parents: list[str], name: str, via_link: bool) -> Kind:
        path = os.path.join(self.root, *parents, name)
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            return _MISSING
        except NotADirectoryError:
            return Kind.BLOCKED
        except OSError as err:
            # A link's target may name a component longer than any name can be: as no
            # entry has that name, it is missing.
            if err.errno == errno.ENAMETOOLONG and len(os.fsencode(name)) > _NAME_MAX:
                return _MISSING
            # The parents were directories when resolved: one is now a link that loops
            # (the tree changed mid-walk), which the walk's callers report as a loop.
            if err.errno == errno.ELOOP:
                raise TooManyLinks(path) from None
            raise
        return kind_of(st.st_mode)

    def readlink(self, parents: list[str], name: str) -> str:
        path = os.path.join(self.root, *parents, name)
        try:
            return os.readlink(path)
        except OSError as err:
            if err.errno != errno.EINVAL:
                raise
            # lstat saw a link a moment ago, so the tree changed in between (a context
            # edited during the build, C03): for this walk, the link it saw is gone.
            raise FileNotFoundError(errno.ENOENT, "no longer a symbolic link", path) from None

    def enter(self, parents: list[str], name: str) -> None:
        return None

    def leave(self, parents: list[str]) -> None:
        return None

    def restart(self) -> None:
        return None


# -- on the host: a directory as the root --------------------------------------------
def resolve_components(root: str, path: str, *, keep_missing: bool = False) -> list[str] | None:
    """``path`` inside ``root`` as components, symlinks followed as if chrooted
    (``walk``): the result never leaves ``root``.  A missing component
    gives None, or with ``keep_missing`` is kept as is (a path about to be created,
    through dangling links too); a non-directory on the way gives None."""
    try:
        return walk(HostTree(root), path, keep_missing=keep_missing).parts
    except TooManyLinks:
        raise SandboxError(f"too many levels of symbolic links in {path}") from None


def open_below(root: str, rel: str) -> int:
    """An O_PATH fd of ``rel`` below ``root``, reached through no symbolic link.

    Each component is opened from its parent's fd with O_NOFOLLOW, so one that is a
    link (or has become one since ``rel`` was resolved: a context changed during the
    build) fails with ELOOP or ENOTDIR, and ``..`` is refused (EXDEV).  ``root`` itself
    may be reached through links: it is the caller's choice.  OSError names the path.
    """
    path = os.path.join(root, rel)
    parts = [part for part in rel.split("/") if part not in ("", ".")]
    if ".." in parts:
        raise OSError(errno.EXDEV, "leaves its directory", path)
    fd = os.open(root, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        for index, part in enumerate(parts):
            last = index == len(parts) - 1
            flags = os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC | (0 if last else os.O_DIRECTORY)
            child = os.open(part, flags, dir_fd=fd)
            os.close(fd)
            fd = child
        if stat.S_ISLNK(os.fstat(fd).st_mode):
            raise OSError(errno.ELOOP, os.strerror(errno.ELOOP), path)
    except OSError as err:
        os.close(fd)
        raise OSError(err.errno, err.strerror, path) from None
    return fd


def lexical_in_root(root: str, rel: str) -> str:
    """``rel`` (clean, relative, "." for the root) joined to ``root`` without resolving
    anything: what ``resolve_in_root`` returns when no link lies on the way."""
    return root if rel == "." else os.path.join(root, rel)


def resolve_in_root(root: str, path: str) -> str | None:
    """The host path of ``path`` inside ``root`` (see resolve_components); None if missing."""
    parts = resolve_components(root, path)
    return None if parts is None else os.path.join(root, *parts)

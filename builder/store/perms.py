"""Only the store's owner may reach anything in it (docs/security.md, "S: the store").

The store holds what other users must not see or touch: build args (in the
database and in image configs), private layers, cache-mount contents (setuid
files a step left there included).  The defence is the root directory: 0700,
owned by the user running pybuild, so every other user stops there whatever
the modes below it.  Modes below it are tightened too (directories 0700, files
0600, blobs 0400), except where the mode is content: a layer's ``diff/`` tree
keeps the image's modes, and a cache mount's own directory keeps the uid and
mode its ``--mount`` asked for (both sit in a 0700 directory of their own).

Creation never depends on the umask: directories are made 0700 and files 0600
(a umask can only take bits away), then checked.  SQLite gives ``-wal`` and
``-shm`` the database file's mode, so the database is made 0600 before SQLite
opens it.

Opening a store fixes the root and its top-level entries (one ``scandir``);
``pybuild doctor`` also checks one level further down (blobs, layer dirs,
downloads, cache-mount locks) and fixes that with ``--repair``.

A private root is worth nothing if another user can swap it, or a directory on
the way to it, for one of their own: so, as OpenSSH's StrictModes, every open
first checks the path (``check_path``, one lstat per component):

* as typed (made absolute, not resolved): a symlink on the way, the root
  included, must be owned by root or by the user running pybuild;
* every directory on the way, as typed and (when a symlink was met) on the
  resolved path, must be owned by root or that user, and if group or other
  users may write it, it must be sticky: in a sticky directory only an entry's
  owner and the directory's owner may rename or remove it, and both are
  trusted here (the next entry is checked in turn), so a root-owned 1777
  ``/tmp`` may hold a store, but nobody's ``/tmp/shared`` may not;
* the root itself must be a directory owned by that user, and every top-level
  entry (and ``blobs/sha256``) must be owned by it too: an entry another user
  made while the root was open to them (a ``layers`` they keep a shell in) is
  refused, reported by ``pybuild doctor`` and removed by ``--repair``.
"""

from __future__ import annotations

import contextlib
import os
import stat
from pathlib import Path

import msgspec

from builder.errors import StoreError

DIR_MODE = 0o700
FILE_MODE = 0o600
BLOB_MODE = 0o400   # write-once (catalogue K07): not even the owner opens a blob to write
_OTHERS = 0o077     # group and other bits: none may be set on anything the store owns
# Made by every open (ingest/ and cache-mounts/ by their first user).
LAYOUT = ("blobs", "blobs/sha256", "layers", "l", "tmp")
# An empty file: this store's layers were made in a user namespace (builder.userns).
ROOTLESS_MARKER = "rootless"


class Finding(msgspec.Struct, frozen=True):
    """An entry other users could reach; ``want`` is the mode that fixes it."""
    path: Path
    mode: int
    want: int

    @property
    def message(self) -> str:
        return (f"mode {self.mode:04o} lets other users in (wanted {self.want:04o}: "
                "the store is its owner's only)")


def private_dir(path: Path) -> None:
    """``path`` as a directory only its owner can enter, made now if missing."""
    with contextlib.suppress(FileExistsError):
        os.mkdir(path, DIR_MODE)
    if stat.S_IMODE(os.stat(path).st_mode) != DIR_MODE:
        os.chmod(path, DIR_MODE)


def private_file(path: Path) -> None:
    """Create ``path`` empty and 0600 unless it exists; tighten it if it does."""
    with contextlib.suppress(FileExistsError):
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC,
                         FILE_MODE))
    mode = stat.S_IMODE(os.stat(path).st_mode)
    if mode & _OTHERS:
        os.chmod(path, mode & ~_OTHERS & 0o7777)


def _make_root(root: Path) -> None:
    """The root, 0700; missing parents 0755 (not 0777 under umask 000: a parent that
    anyone may write lets anyone swap the store for their own)."""
    missing = []
    parent = root.parent
    while not parent.exists():
        missing.append(parent)
        parent = parent.parent
    for directory in reversed(missing):
        with contextlib.suppress(FileExistsError):
            os.mkdir(directory, 0o755)
            os.chmod(directory, 0o755)
    with contextlib.suppress(FileExistsError):
        os.mkdir(root, DIR_MODE)


def owner_problem(info: os.stat_result) -> str | None:
    """Why a root with this stat cannot be used, if it cannot: another user who owns it
    could change anything in it, so nothing read from it could be trusted."""
    if not stat.S_ISDIR(info.st_mode):
        return "is not a directory"
    if info.st_uid != os.geteuid():
        return (f"is owned by uid {info.st_uid}, not by uid {os.geteuid()} that runs pybuild: "
                "that user could change what builds read; chown it (if you trust its "
                "content) or use another --root")
    return None


def _trusted(uid: int) -> bool:
    return uid == 0 or uid == os.geteuid()


def _dir_problem(info: os.stat_result) -> str | None:
    """Why a directory on the way to the root lets another user swap what is below it."""
    if not stat.S_ISDIR(info.st_mode):
        return "is not a directory"
    if not _trusted(info.st_uid):
        return (f"is owned by uid {info.st_uid}: that user could swap the store for "
                "another; use a --root whose every parent is root's or yours")
    mode = stat.S_IMODE(info.st_mode)
    if mode & 0o022 and not mode & stat.S_ISVTX:
        return (f"has mode {mode:04o}: other users may write it and it is not sticky, so "
                "they could swap the store for another; use another --root")
    return None


# Roots whose path this process checked before it entered its user namespace
# (``vouch``): inside, root's and every other user's directories look alike (uid
# 65534), so only the root itself is checked there.
_VOUCHED: set[str] = set()


def vouch(root: Path) -> None:
    """Check ``root``'s path now, as the user who runs pybuild (making the root if it
    is missing), and trust its parents from here on: called before rootless mode's
    user namespace hides who owns them."""
    try:
        try:
            check_owner(root)
        except FileNotFoundError:
            _make_root(root)
            check_owner(root)
    except OSError as err:  # a parent this user may not enter or write
        raise StoreError(f"store {root}: cannot set it up: {err.strerror} "
                         f"({err.filename})") from None
    _VOUCHED.update((os.path.abspath(root), os.path.realpath(root)))


def _walk(path: str) -> tuple[os.stat_result, bool, tuple[str, str] | None]:
    """lstat every component of absolute, normalised ``path``: the root's stat (a
    symlink followed), whether a symlink was met, and the first (path, why) problem.
    FileNotFoundError past the last component that exists (all of them checked)."""
    prefix, linked = "/", False
    info = os.lstat(prefix)
    vouched = path in _VOUCHED
    for part in filter(None, path.split("/")):
        if not vouched and (problem := _dir_problem(info)) is not None:
            return info, linked, (prefix, problem)
        prefix = os.path.join(prefix, part)
        info = os.lstat(prefix)
        if stat.S_ISLNK(info.st_mode):
            if not vouched and not _trusted(info.st_uid):
                return info, True, (prefix, f"is a symlink owned by uid {info.st_uid}: that "
                                    "user could point it anywhere; use the real path")
            linked = True
            info = os.stat(prefix)  # the directory the next lookup happens in
    if (problem := owner_problem(info)) is not None:
        return info, linked, (path, problem)
    return info, linked, None


def path_problem(root: Path) -> tuple[os.stat_result, tuple[Path, str] | None]:
    """The root's stat and the first thing on its path that another user could
    change (module docstring), as (path, why); FileNotFoundError if it is missing."""
    info, linked, problem = _walk(os.path.abspath(root))
    if problem is None and linked:
        # The directories a symlink led to: walked again on the resolved path.
        info, relinked, problem = _walk(os.path.realpath(root))
        if problem is None and relinked:
            problem = (str(root), "changed while it was checked")
    return info, None if problem is None else (Path(problem[0]), problem[1])


def check_owner(root: Path) -> os.stat_result:
    """The root's stat, or a StoreError if its path is unsafe (``path_problem``)."""
    info, problem = path_problem(root)
    if problem is not None:
        path, why = problem
        raise StoreError(f"store {root} {why}" if path == root else
                         f"store {root}: {path} {why}")
    return info


class Foreign(msgspec.Struct, frozen=True):
    """A top-level entry another user owns: made while the root was open to them."""
    path: Path
    uid: int

    @property
    def message(self) -> str:
        return (f"is owned by uid {self.uid}, not by uid {os.geteuid()} that owns the store: "
                "that user could change what builds read")


def open_root(root: Path) -> None:
    """What every open does: check the path, make the layout, fix the root and its
    top-level entries.

    About 20 system calls on a store that is already right (an lstat per component
    of the path, one scandir with its lstats, no mkdir): the cached rebuild pays next
    to nothing."""
    try:
        try:
            info = check_owner(root)
        except FileNotFoundError:
            _make_root(root)
            info = check_owner(root)
        if stat.S_IMODE(info.st_mode) != DIR_MODE:
            os.chmod(root, DIR_MODE)  # first: no other user may add an entry after the scan
        present: set[str] = set()
        foreign: list[Foreign] = []
        found = scan_top(root, fix=False, names=present, foreign=foreign)
        if foreign:
            raise StoreError(f"store {root}: {foreign[0].path} {foreign[0].message}; "
                             "run 'pybuild doctor --repair' to remove it")
        _check_mode(root, present)
        fix_modes(found)
        for name in LAYOUT:
            top, _, below = name.partition("/")
            if top not in present or (below and not os.path.isdir(root / name)):
                private_dir(root / name)
    except OSError as err:  # a parent we may not write, a read-only file system
        raise StoreError(f"store {root}: cannot set it up: {err.strerror} "
                         f"({err.filename})") from None


def _check_mode(root: Path, present: set[str]) -> None:
    """A store holds layers of one mode only: rootless layers' files are owned by the
    user's subordinate ids on the host, which a root build would copy into its
    layers as they are; a root store's owners mean nothing in a user namespace."""
    from builder.userns import rootless

    marked = ROOTLESS_MARKER in present
    if rootless() == marked:
        return
    if marked:
        raise StoreError(f"store {root} was made by pybuild in rootless mode: its files are "
                         "owned by a user's subordinate ids, which a build as root would "
                         "copy into its layers; give root its own store (the default, "
                         "/var/lib/pybuild)")
    layers = root / "layers"
    if "layers" in present and os.path.isdir(layers) and any(os.scandir(layers)):
        raise StoreError(f"store {root} was made by pybuild as root: its layers' owners "
                         "are the host's ids, which a rootless build cannot keep; use "
                         "another --root (the default for a user is "
                         "~/.local/share/pybuild)")
    # A new store (or one that only ever held blobs and names) becomes rootless.
    private_file(root / ROOTLESS_MARKER)


def scan_top(root: Path, *, fix: bool, names: set[str] | None = None,
             foreign: list[Foreign] | None = None) -> list[Finding]:
    """The root and its direct entries (not following links), and blobs/sha256:
    directories must be 0700, files must have no group or other bits.  ``names``
    collects the entries' names, ``foreign`` those another user owns (their modes
    are left alone: they are not the store's)."""
    found: list[Finding] = []
    owner = os.geteuid()
    with contextlib.suppress(FileNotFoundError):
        mode = stat.S_IMODE(os.stat(root).st_mode)
        if mode != DIR_MODE:
            found.append(Finding(root, mode, DIR_MODE))
        with os.scandir(root) as entries:
            for entry in entries:
                if names is not None:
                    names.add(entry.name)
                _check_entry(entry, owner, found, foreign)
    with contextlib.suppress(FileNotFoundError, NotADirectoryError), \
            os.scandir(root / "blobs") as entries:
        for entry in entries:
            if entry.name == "sha256":
                _check_entry(entry, owner, found, foreign)
    if fix:
        fix_modes(found)
    return found


def _check_entry(entry: os.DirEntry[str], owner: int, found: list[Finding],
                 foreign: list[Foreign] | None) -> None:
    uid = entry.stat(follow_symlinks=False).st_uid
    if uid != owner:
        if foreign is not None:
            foreign.append(Foreign(Path(entry.path), uid))
    elif (f := _finding(entry)) is not None:
        found.append(f)


def fix_modes(found: list[Finding]) -> None:
    for finding in found:
        with contextlib.suppress(FileNotFoundError):
            os.chmod(finding.path, finding.want)


def _finding(entry: os.DirEntry[str], file_mode: int = FILE_MODE) -> Finding | None:
    info = entry.stat(follow_symlinks=False)
    mode = stat.S_IMODE(info.st_mode)
    if stat.S_ISDIR(info.st_mode):
        return None if mode == DIR_MODE else Finding(Path(entry.path), mode, DIR_MODE)
    if stat.S_ISLNK(info.st_mode) or not mode & _OTHERS:
        return None
    return Finding(Path(entry.path), mode, file_mode)


def scan_deep(root: Path, *, fix: bool) -> list[Finding]:
    """One level below the top (``doctor``): blob files (0400), layer dirs (0700: the
    image's own root dir is below them, untouched), interrupted downloads and
    cache-mount lock files (0600).  Cache-mount dirs keep their mount's mode, and
    tmp/ holds only live work (every open sweeps the rest)."""
    found: list[Finding] = []
    for sub, file_mode, dirs_too in (("blobs/sha256", BLOB_MODE, True),
                                     ("blobs", FILE_MODE, False),
                                     ("layers", FILE_MODE, True),
                                     ("ingest", FILE_MODE, True),
                                     ("cache-mounts", FILE_MODE, False)):
        with contextlib.suppress(FileNotFoundError, NotADirectoryError), \
                os.scandir(root / sub) as entries:
            for entry in entries:
                if entry.is_dir(follow_symlinks=False) and not dirs_too:
                    continue
                with contextlib.suppress(FileNotFoundError):
                    if (f := _finding(entry, file_mode)) is not None:
                        found.append(f)
    if fix:
        for finding in found:
            with contextlib.suppress(FileNotFoundError):
                os.chmod(finding.path, finding.want)
    return found

"""COPY and ADD: write the selected sources into a mounted snapshot.

The request and its source selection are ``copy_plan.py``; writing entries is the
copier's (``copier.py``).

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

import errno
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
from builder.engine.copier import Copier, check_name
from builder.engine.copy_files import open_source
from builder.engine.copy_plan import (
    CopyRequest,
    clean_source,
    has_magic,
    is_url,
    parse_chmod,
    select_sources,
)
from builder.engine.copy_records import ContentRecords
from builder.errors import BuildError, PybuildError
from builder.rootpath import resolve_in_root

# What a source that changed under the copy raises: gone, a non-directory on its path,
# a component swapped for a looping link or for one whose target no path can hold, a
# link read after it became something else.
_CHANGED = frozenset({errno.ENOENT, errno.ENOTDIR, errno.ELOOP, errno.ENAMETOOLONG,
                      errno.EINVAL})

_CHUNK = 1 << 20


def _parents_base(source: str) -> str:
    """The part of a --parents source that is not kept: BuildKit keeps the path from
    the context root, or from a ``/./`` pivot when the source has one."""
    if "/./" in source:
        return clean_source(source.split("/./", 1)[0])
    return "."


def copy_into(merged: str, source_root: str, request: CopyRequest,
              offline_upper: Callable[[], str | None] | None = None) -> None:
    """Copy the request's sources from ``source_root`` into the root at ``merged``.

    Runs in a child process with the destination snapshot mounted at ``merged``.
    ``offline_upper`` unmounts it and gives its upper dir (None: the mount stays): the
    contents of the directories a one-source copy makes are written there
    (``Copier.defer_fresh``).
    """
    # Every mode is set explicitly; with no umask a file can be created with its final
    # mode (copy_files.Metadata.made_as).
    umask = os.umask(0)
    try:
        _copy_into(merged, source_root, request, offline_upper)
    except OSError as err:
        # A source that vanishes mid-copy, or whose path now meets a link that loops
        # (the context changed during the build, C03), is a one-line error, not a
        # traceback.
        where = os.fsdecode(err.filename or "")
        if err.errno not in _CHANGED or not where.startswith(source_root.rstrip("/") + "/"):
            raise
        raise BuildError(f'"/{os.path.relpath(where, source_root)}": changed while being '
                         f"copied ({err.strerror})") from None
    finally:
        os.umask(umask)


def _copy_into(merged: str, source_root: str, request: CopyRequest,
               offline_upper: Callable[[], str | None] | None) -> None:
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
    copier = Copier(merged, uid, gid, mode, request.leaves_out, keep_owner)
    copier.owner_fixed = owner_fixed
    copier.source_root = source_root
    if request.expected_content is not None:
        copier.records = ContentRecords()
    # One source and nothing after it: no later write can land in a deferred directory
    # but through a link, which the copier catches.
    copier.defer_fresh = offline_upper is not None and len(selected) == 1 \
        and not request.heredocs
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
    if copier.deferred and offline_upper is not None:
        copier.write_deferred(offline_upper())
    _check_copied(copier, request)
    for name, content in request.heredocs:
        into_dir = dest_is_dir or os.path.isdir(resolve_in_root(merged, dest) or "/nonexistent")
        path = posixpath.join(dest, name) if into_dir or dest.endswith("/") else dest
        parent = copier.make_dirs(posixpath.dirname(path) or "/")
        copier.write_file(os.path.join(parent, posixpath.basename(path)), content.encode())


def _copy_source(copier: Copier, request: CopyRequest, merged: str, source_root: str,
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
    check_name(rel)
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


def _check_copied(copier: Copier, request: CopyRequest) -> None:
    """Fail when what was copied is not what the cache key was computed from."""
    if copier.records is None or copier.records.digest() == request.expected_content:
        return
    # The context changed between the checksum and the copy (catalogue K: check then
    # use).  Committing would store a layer under a key that names other content.
    raise BuildError("the build context changed while it was being copied: the copied "
                     "files differ from the ones this step's cache key was computed from "
                     "(nothing was committed; build again once the context is stable)")


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


def _try_extract(copier: Copier, host: str, rel: str, dest: str) -> bool:
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
        archive_copier = Copier(copier.root, copier.uid, copier.gid, copier.mode,
                                 lambda source, rel, is_dir: False,
                                 keep_owner=not copier.owner_fixed)
        archive_copier.copy_tree(unpacked, ".", target)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return True


def _copy_checkout(copier: Copier, request: CopyRequest, tree: str, dest: str) -> None:
    """A git checkout: its contents go into ``dest`` (BuildKit copies the checkout's
    root), through a copier that opens nothing outside ``tree`` and copies links as
    links; --exclude applies, .dockerignore does not (it is the context's)."""
    matcher = request.exclude_matcher

    def leaves_out(origin: str, rel: str, is_dir: bool) -> bool:
        return matcher is not None and matcher.matches(rel) and not (
            is_dir and matcher.may_reinclude_under(rel))
    checkout_copier = Copier(copier.root, copier.uid, copier.gid, copier.mode, leaves_out)
    checkout_copier.source_root = tree
    checkout_copier.copy_tree(tree, ".", copier.make_dirs(dest))
